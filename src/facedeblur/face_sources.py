"""Photo sources of clean faces and the rule that splits them, shared by the trainer and `evaluate`.

Torch-free on purpose: `evaluate` must run on a runtime install (no [train] extra) and must pick exactly
the faces the trainer held out, so the split rule lives here, once, and `trainer/dataset.py` imports it.
"""
from __future__ import annotations

import hashlib
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from .errors import FacedeblurError
from .inputs import IMAGE_EXTENSIONS

UTK_RACES = {0: "White", 1: "Black", 2: "Asian", 3: "Indian", 4: "Other"}


@dataclass
class SourceImage:
    source: str  # tar or folder it came from
    name: str  # member name / relative path
    data: bytes


def iter_source_images(source: Path) -> Iterator[SourceImage]:
    if source.is_dir():
        for path in sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS):
            yield SourceImage(str(source), str(path.relative_to(source)), path.read_bytes())
    elif tarfile.is_tarfile(source):
        with tarfile.open(source) as archive:
            for member in archive:
                if member.isfile() and Path(member.name).suffix.lower() in IMAGE_EXTENSIONS:
                    handle = archive.extractfile(member)
                    if handle is not None:
                        yield SourceImage(str(source), member.name, handle.read())
    else:
        raise FacedeblurError(f"{source}: neither a folder nor a .tar of images; pass photo folders or tar files")


def utk_race(name: str) -> str | None:
    """UTKFace names are AGE_GENDER_RACE_DATE.jpg."""
    parts = Path(name).name.split("_")
    if len(parts) >= 4 and parts[2].isdigit():
        return UTK_RACES.get(int(parts[2]))
    return None


def is_validation(source: Path, name: str, utk_val_count: int) -> bool:
    """Split by source file: anything from a '*val*' source is validation; from UTK, a fixed hash slice."""
    if "val" in source.stem.lower():
        return True
    if utk_race(name) is not None and utk_val_count > 0:
        digest = int(hashlib.sha1(Path(name).name.encode()).hexdigest()[:8], 16)
        return digest % 1000 < 40  # ~4%: about 380 of 9,480 UTK photos, enough for 300 validation faces
    return False
