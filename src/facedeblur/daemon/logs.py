"""Structured logs for journald: one logfmt line per event on stdout (`key=value`, values quoted as needed)."""
from __future__ import annotations

import logging
import sys
import time

from ..safe_text import display_name


class LogfmtFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z"
        line = f"ts={stamp} level={record.levelname.lower()} {record.getMessage()}"
        if record.exc_info:
            line += " traceback=" + repr(self.formatException(record.exc_info))
        # One event, one line, whatever the message held: no raw newline, CR or ESC, and a name that is not
        # UTF-8 shown escaped (b'caf\xe9' as caf\xe9) instead of failing the write to stdout.
        return display_name(line)


def setup_daemon_logging(verbose: bool = False) -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(LogfmtFormatter())
    logger = logging.getLogger("facedeblur")
    logger.handlers[:] = [handler]
    logger.propagate = False   # the CLI's stderr handler would print everything twice
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)


def logfmt_value(value: object) -> str:
    """A logfmt value: quoted with escapes when it has spaces, quotes or control characters."""
    text = str(value)
    if text and all(c.isprintable() and c not in ' "=' for c in text):
        return display_name(text)   # printable may still hold undecodable bytes (surrogates)
    return '"' + display_name(text.replace("\\", "\\\\").replace('"', '\\"')) + '"'
