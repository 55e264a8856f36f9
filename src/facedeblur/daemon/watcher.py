"""Filesystem events from watchdog (inotify, or polling for NFS/SMB), delivered as paths on a queue.

Events are only hints that something changed; the main loop re-checks the path itself, and the
periodic full rescan catches whatever an observer missed (inotify overflow, a share that remounted,
events lost while the daemon was down).
"""
from __future__ import annotations

import logging
import os
import queue
from pathlib import Path

from watchdog.events import FileSystemEvent, FileSystemEventHandler

log = logging.getLogger("facedeblur.daemon")


class _Forwarder(FileSystemEventHandler):
    def __init__(self, changed: "queue.Queue[tuple[Path, bool]]"):
        self.changed = changed

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):
            return  # reads (including our own hashing) are not changes
        for raw in (event.src_path, getattr(event, "dest_path", "")):
            if raw:
                path = Path(os.fsdecode(raw))
                self.changed.put((path, event.is_directory))


class InboxWatcher:
    def __init__(self, inboxes: list[Path], recursive: bool, polling: bool, poll_interval: float):
        self.changed: "queue.Queue[tuple[Path, bool]]" = queue.Queue()
        if polling:
            from watchdog.observers.polling import PollingObserver
            self.observer = PollingObserver(timeout=poll_interval)
        else:
            from watchdog.observers import Observer
            self.observer = Observer()
        handler = _Forwarder(self.changed)
        for inbox in inboxes:
            self.observer.schedule(handler, str(inbox), recursive=recursive)
        self.observer.daemon = True

    def start(self) -> None:
        self.observer.start()

    def stop(self) -> None:
        self.observer.stop()
        self.observer.join(timeout=5)

    def alive(self) -> bool:
        return self.observer.is_alive()

    def drain(self, limit: int = 10000) -> list[tuple[Path, bool]]:
        items = []
        while len(items) < limit:
            try:
                items.append(self.changed.get_nowait())
            except queue.Empty:
                break
        return items
