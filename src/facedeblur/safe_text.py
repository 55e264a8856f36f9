"""File names as text that can always be written: logs, JSON, HTML, error notes.

On Linux a file name is bytes; Python hands names that are not UTF-8 over as str with lone surrogates
(PEP 383 'surrogateescape': b'caf\\xe9.mp4' -> 'caf\\udce9.mp4'). Such a str opens the right file, but
cannot be encoded as UTF-8, so printing it, logging it or writing it into JSON raises UnicodeEncodeError.
`display_name` turns it into readable, escaped text (`caf\\xe9.mp4`) and also escapes control characters
(CR, ESC...) so that a hostile name cannot rewrite a terminal or forge a log line. It is for showing a
name; the path itself (str or os.fsencode bytes) is what is stored and opened.
"""
from __future__ import annotations

from typing import Any

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def display_name(value: object) -> str:
    """Printable, UTF-8-encodable text for a name: undecodable bytes as \\xNN, control characters escaped."""
    text = str(value)
    if text.isprintable():
        try:
            text.encode("utf-8")
            return text
        except UnicodeEncodeError:
            pass
    out = []
    for char in text:
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:          # an undecodable byte, smuggled by surrogateescape
            out.append(f"\\x{code - 0xDC00:02x}")
        elif 0xD800 <= code <= 0xDFFF:        # any other lone surrogate
            out.append(f"\\u{code:04x}")
        elif char in _NAMED:
            out.append(_NAMED[char])
        elif not char.isprintable() and char != " ":
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


def encodable(text: str) -> str:
    """`text` unchanged when it is valid UTF-8 text, else with its undecodable parts escaped (messages)."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace") \
            if not _has_other_surrogates(text) else display_name(text)


def _has_other_surrogates(text: str) -> bool:
    return any(0xD800 <= ord(c) <= 0xDFFF and not 0xDC80 <= ord(c) <= 0xDCFF for c in text)


def json_safe(value: Any) -> Any:
    """A JSON-able structure with every string made UTF-8-encodable (see `encodable`)."""
    if isinstance(value, str):
        return encodable(value)
    if isinstance(value, dict):
        return {json_safe(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value
