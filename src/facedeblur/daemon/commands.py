"""`facedeblur watch` (the daemon) and `facedeblur status` (its journal). Heavy imports stay in handlers."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    watch = subparsers.add_parser(
        "watch", help="watch folders and process every clip or frame folder dropped there",
        description="Run the watch-folder daemon: each stable input in an inbox is processed once into its own "
                    "folder in the outbox; the job journal lives in the state folder. See docs/daemon.md.")
    watch.add_argument("--config", type=Path, metavar="FILE", help="config.yaml (daemon: and pipeline: sections)")
    watch.add_argument("--inbox", type=Path, action="append", metavar="DIR",
                       help="folder to watch (repeat for several); overrides daemon.inbox")
    watch.add_argument("--outbox", type=Path, metavar="DIR", help="output folder; overrides daemon.outbox")
    watch.add_argument("--state", type=Path, metavar="DIR", help="journal folder; overrides daemon.state")
    watch.set_defaults(handler=run_watch)

    status = subparsers.add_parser("status", help="show the daemon's queue, running jobs, failures and remote workers",
                                   description="Read the daemon's job journal: counts per state, running jobs, "
                                               "recent failures, throughput.")
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.add_argument("--state", type=Path, metavar="DIR", help="the daemon's state folder")
    status.add_argument("--config", type=Path, metavar="FILE", help="take the state folder from daemon.state (and, with "
                        "queue.backend: celery, list the live workers)")
    status.set_defaults(handler=run_status)


def run_watch(args: argparse.Namespace) -> int:
    from .logs import setup_daemon_logging
    from .service import FolderOverrides, run_daemon
    import logging
    setup_daemon_logging(verbose=logging.getLogger().level <= logging.DEBUG)
    return run_daemon(args.config, FolderOverrides(inbox=args.inbox, outbox=args.outbox, state=args.state))


def run_status(args: argparse.Namespace) -> int:
    from ..config import load_config
    from ..errors import FacedeblurError
    from .status import print_status
    state = args.state
    config = load_config(args.config) if args.config is not None else None
    if state is None:
        if config is None:
            raise FacedeblurError("status needs the daemon's state folder: pass --state DIR or --config FILE")
        state = config.daemon.state
        if state is None:
            raise FacedeblurError(f"{args.config} has no daemon.state; pass --state DIR")
    # The live remote workers are in Redis, not in the journal: listed when the config names the broker.
    remote = config.queue if config is not None and config.queue.backend == "celery" else None
    print_status(state, args.json, remote)
    return 0
