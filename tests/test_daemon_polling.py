"""The polling observer (for NFS/SMB shares, where inotify sees nothing) and `after: move`."""
from __future__ import annotations

from pathlib import Path

import pytest

from daemon_support import DaemonRun, assert_processed_exactly_once, make_clip

pytestmark = pytest.mark.slow   # a real daemon


def test_polling_observer_takes_drops_and_moves_processed_inputs(tmp_path: Path) -> None:
    done_folder = tmp_path / "processed"
    # A long rescan period: only the polling observer can find the second drop in time.
    run = DaemonRun(tmp_path, polling=True, poll_interval=0.5, rescan_seconds=3600.0, after="move",
                    done_folder=str(done_folder)).start()
    make_clip(run.inbox / "first.mp4", face=False, seed=11)
    run.wait_for(lambda: run.settled(1), 60, "the first drop")
    make_clip(run.inbox / "cam 2" / "second.mp4", face=False, seed=12)
    run.wait_for(lambda: run.settled(2), 60, "the second drop, seen by polling")
    assert_processed_exactly_once(run, ["first.mp4", "cam 2/second.mp4"])
    assert (done_folder / "first.mp4").is_file() and (done_folder / "cam 2" / "second.mp4").is_file()
    assert not (run.inbox / "first.mp4").exists() and not (run.inbox / "cam 2" / "second.mp4").exists()
    assert run.stop() == 0
