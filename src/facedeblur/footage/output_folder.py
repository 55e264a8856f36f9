"""All-or-nothing output: everything is written into a hidden folder beside OUTDIR, renamed into place at the end.

A reader (a person, the daemon, a sync tool) therefore never sees a partial OUTDIR: either the previous
result, or the complete new one. A failed run removes its temporary folder.
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from ..errors import FacedeblurError
from ..image_files import default_mode

RESULT_MARKER = "manifest.json"  # an existing OUTDIR holding this is a previous facedeblur result: replaceable


def check_outdir(outdir: Path) -> None:
    """Fail before any work if OUTDIR holds something that is not ours (never overwrite foreign files)."""
    if outdir.exists() and not outdir.is_dir():
        raise FacedeblurError(f"output {outdir} exists and is a file; choose a folder path for -o")
    if outdir.is_dir() and any(outdir.iterdir()) and not (outdir / RESULT_MARKER).is_file():
        raise FacedeblurError(f"output folder {outdir} is not empty and is not a facedeblur result; "
                              "choose a new or empty folder for -o")


class StagedOutput:
    def __init__(self, outdir: Path):
        self.outdir = outdir
        check_outdir(outdir)
        try:
            outdir.parent.mkdir(parents=True, exist_ok=True)
            self.path = Path(tempfile.mkdtemp(prefix=f".{outdir.name}.facedeblur-tmp-", dir=outdir.parent))
        except OSError as exc:
            raise FacedeblurError(f"cannot create the output folder beside {outdir} ({exc.strerror or exc}); "
                                  "choose a writable location for -o") from None

    def commit(self) -> None:
        """Put the finished folder at OUTDIR, replacing a previous result in one rename where possible."""
        check_outdir(self.outdir)
        os.chmod(self.path, default_mode(directory=True))  # mkdtemp makes it owner-only; the umask decides
        old = None
        if self.outdir.is_dir():
            if any(self.outdir.iterdir()):
                old = Path(tempfile.mkdtemp(prefix=f".{self.outdir.name}.facedeblur-old-", dir=self.outdir.parent))
                os.replace(self.outdir, old / "previous")
            else:
                self.outdir.rmdir()
        os.replace(self.path, self.outdir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)

    def discard(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
