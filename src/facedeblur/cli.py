"""The `facedeblur` command. Each subcommand lives in the module of its stage; this file only wires them.

Registering modules keep heavy imports (onnxruntime, PyAV, torch) inside their run functions, so
`facedeblur --help` and each subcommand start quickly.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from . import __version__
from .errors import FacedeblurError
from .safe_text import display_name

# (subcommand module, help) — each module has `register(subparsers)` that adds its parser(s).
SUBCOMMAND_MODULES = (
    "facedeblur.restore_command",
    "facedeblur.demo_command",
    "facedeblur.footage.process_command",
    "facedeblur.daemon.commands",
    "facedeblur.daemon.celery_worker",
    "facedeblur.review.command",
    "facedeblur.search.command",
    "facedeblur.evaluation.command",
    "facedeblur.trainer.command",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facedeblur", description="Restore faces in bad footage, faithfully.")
    parser.add_argument("--version", action="version", version=f"facedeblur {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_name in SUBCOMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    try:
        status = int(args.handler(args) or 0)
        sys.stdout.flush()   # here, not at exit, so a closed pipe is caught below
        return status
    except BrokenPipeError:
        return _reader_went_away()
    except FacedeblurError as exc:
        # One line whatever a file name in it holds (CR, ESC, bytes that are not UTF-8 are shown escaped).
        print(f"facedeblur: error: {display_name(exc)}", file=sys.stderr)
        return exc.exit_status
    except KeyboardInterrupt:
        print("facedeblur: interrupted", file=sys.stderr)
        return 130


def _reader_went_away() -> int:
    """`facedeblur status | head`: the reader closed the pipe, which is its right and no error of ours. Point
    stdout at /dev/null so the interpreter's final flush cannot raise again, and exit as a program killed by
    SIGPIPE would (128 + 13), so a shell pipeline sees what happened."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 141


if __name__ == "__main__":
    sys.exit(main())
