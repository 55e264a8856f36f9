"""OUTDIR: kept images, provenance.jsonl and summary.json.

    OUTDIR/images/<source>/<sha256 prefix>.<ext>   the kept images (web and photos: the bytes as fetched)
    OUTDIR/provenance.jsonl                        one JSON object per kept image
    OUTDIR/summary.json                            the counts of the last run
    OUTDIR/skipped.jsonl                           each image of the last run not kept, and why

`facedeblur train prepare OUTDIR` reads every image under OUTDIR (its folder rule), and nothing else here is
an image. Images are written to a temporary name and renamed; provenance.jsonl is rewritten the same way,
so a reader never sees half an image or half a line. An image written just before a crash, whose line was
never written, is removed when the harvest is run again into the same OUTDIR; that run also knows every
earlier image, so it adds no duplicates of them.
"""
from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

from ..errors import FacedeblurError
from ..image_files import prepare_output_dir, write_bytes_atomic
from ..safe_text import json_safe

log = logging.getLogger(__name__)

PROVENANCE = "provenance.jsonl"
SUMMARY = "summary.json"
SKIPPED = "skipped.jsonl"
IMAGES = "images"
_KEPT_NAME = re.compile(r"^[0-9a-f]{16}\.(png|jpg|webp|bmp|tif)$")
# provenance.jsonl is rewritten whole; past this many lines it is rewritten every FLUSH_EVERY keeps (and
# at the end) instead of after each, so a long harvest does not spend its time rewriting the file.
SMALL_LOG = 200
FLUSH_EVERY = 25


def folder_label(text: str) -> str:
    """A safe folder name for a source (a host, a video's name): letters, digits, '.', '_' and '-'."""
    label = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")[:80]
    return label or "source"


class HarvestOutput:
    def __init__(self, outdir: Path):
        self.outdir = Path(outdir)
        prepare_output_dir(self.outdir)
        self.records: list[dict] = []
        self._unflushed = 0
        path = self.outdir / PROVENANCE
        if path.exists():
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if not line.strip():
                    continue
                try:
                    self.records.append(json.loads(line))
                except json.JSONDecodeError:
                    raise FacedeblurError(f"{path}: line {number} is not JSON; move the file away or choose "
                                          "another -o") from None
        self._remove_orphans()

    def _remove_orphans(self) -> None:
        listed = {record.get("file") for record in self.records}
        images = self.outdir / IMAGES
        if not images.is_dir():
            return
        for path in images.glob("*/*"):
            relative = path.relative_to(self.outdir).as_posix()
            if _KEPT_NAME.match(path.name) and relative not in listed:
                log.info("removing %s: written by an interrupted harvest, without provenance", relative)
                path.unlink()

    def keep(self, data: bytes, extension: str, source_label: str, record: dict) -> str:
        """Write the image and its provenance line; returns the file's path relative to OUTDIR."""
        folder = self.outdir / IMAGES / folder_label(source_label)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{record['sha256'][:16]}{extension}"
        write_bytes_atomic(path, data)
        relative = path.relative_to(self.outdir).as_posix()
        self.records.append(json_safe({"file": relative, **record}))
        self._unflushed += 1
        if len(self.records) <= SMALL_LOG or self._unflushed >= FLUSH_EVERY:
            self.flush()
        return relative

    def flush(self) -> None:
        if self._unflushed or not (self.outdir / PROVENANCE).exists():
            text = "".join(json.dumps(record, ensure_ascii=False) + "\n" for record in self.records)
            write_bytes_atomic(self.outdir / PROVENANCE, text.encode("utf-8"))
            self._unflushed = 0

    def write_summary(self, summary: dict, skipped: list[dict]) -> None:
        """summary.json, and skipped.jsonl: each image not kept, with its reason (why is my photo missing?)."""
        write_bytes_atomic(self.outdir / SUMMARY,
                           (json.dumps(json_safe(summary), indent=1, ensure_ascii=False) + "\n").encode("utf-8"))
        text = "".join(json.dumps(json_safe(item), ensure_ascii=False) + "\n" for item in skipped)
        write_bytes_atomic(self.outdir / SKIPPED, text.encode("utf-8"))


def utc_now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
