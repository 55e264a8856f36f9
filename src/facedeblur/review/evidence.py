"""What a case report shows around each exported face: the whole frame it was found in, with its box drawn,
and the wall-clock time of that frame where the input records when it was made.

The frame comes from the original input when the export holds its copy (whose SHA-256 was checked against
the journal's); otherwise from the job's AI-restored output, and the report says which. A face whose frame
cannot be had is exported all the same, with the reason in place of the picture: the context never stops
an export.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..errors import FacedeblurError
from ..image_files import read_image
from ..safe_text import display_name
from . import safe_files
from .catalog import Catalog

log = logging.getLogger(__name__)

CONTEXT_LONG_SIDE = 1280          # px: enough to see the scene on a printed page, small enough for the PDF
CONTEXT_JPEG_QUALITY = 90
BOX_COLOUR = (0, 215, 255)        # BGR: the yellow of the AI notice, visible on dark and light footage
EPOCH_START_AFTER = datetime(2000, 1, 1, tzinfo=timezone.utc).timestamp()   # a start time this large is a date


def box_key(box: Any) -> tuple[float, float, float, float] | None:
    """A face box as a dictionary key, or None when the manifest has no usable one."""
    if isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                                       for v in box):
        return tuple(float(v) for v in box)
    return None


@dataclass
class ContextFrames:
    """Context pictures (JPEG bytes) by (frame number, box), and where the frames came from (said in the report
    beside each one). Each frame is drawn as soon as it is decoded, so only these small JPEGs are held, never
    the frames of a whole case."""
    pictures: dict[tuple[int, tuple | None], bytes] = field(default_factory=dict)
    source: str = ""
    problem: str = ""   # why there are none


def context_frames(catalog: Catalog, job: dict[str, Any], manifest: dict[str, Any], input_copy: Path | None,
                   wanted: Iterable[tuple[Any, Any]]) -> ContextFrames:
    """A context picture for each wanted (frame number, box): from the export's verified copy of the input,
    else the restored output."""
    boxes: dict[int, set] = {}
    for number, box in wanted:
        if isinstance(number, int) and not isinstance(number, bool) and number >= 0:
            boxes.setdefault(number, set()).add(box_key(box))
    pictures: dict[tuple[int, tuple | None], bytes] = {}

    def take(number: int, image: np.ndarray) -> None:
        for box in boxes.get(number, ()):
            pictures[(number, box)] = draw_context(image, box)

    source = manifest.get("input") or {}
    kind = source.get("kind")
    restored = (manifest.get("outputs") or {}).get("restored")
    try:
        if input_copy is not None and kind in ("video", "image"):
            if kind == "video":
                _decode_video(input_copy, boxes, take)
            else:
                take(0, read_image(input_copy))
            return ContextFrames(pictures, "the original input (its copy in this export, SHA-256 checked)")
        if not isinstance(restored, str) or not restored:
            return ContextFrames(problem="the original input is not in this export and the job wrote no restored output")
        label = (f"the AI-restored output ({display_name(restored)}), with the restored faces pasted in: the original "
                 "input is not in this export")
        if kind == "frames":
            names = source.get("frame_names") or []
            for number in sorted(boxes):
                if number < len(names) and isinstance(names[number], str):
                    take(number, _output_image(catalog, job, f"{restored}/{names[number]}"))
        elif kind == "image":
            take(0, _output_image(catalog, job, restored))
        else:
            fd = catalog.open_output_file(job, restored)
            try:
                _decode_video(Path(f"/proc/self/fd/{fd}"), boxes, take)
            finally:
                os.close(fd)
        return ContextFrames(pictures, label)
    except (FacedeblurError, safe_files.NotServable, OSError, IndexError, ValueError, cv2.error) as exc:
        log.warning("job %s: no context frames (%s)", job.get("id"), exc)
        return ContextFrames(problem=f"the frames could not be read ({display_name(exc)})")


def _decode_video(path: Path, wanted: dict[int, Any], take) -> None:
    """Decode from the start up to the last wanted frame, handing each wanted one to `take`: frame numbers
    count in decode order, as the pipeline counted them, which a seek by time cannot promise for variable
    frame rates or damaged streams."""
    from ..footage.decode import VideoSource

    if not wanted:
        return
    last = max(wanted)
    for frame in VideoSource(path).frames():
        if frame.index in wanted:
            take(frame.index, frame.image)
        if frame.index >= last:
            break


def _output_image(catalog: Catalog, job: dict[str, Any], relative: str) -> np.ndarray:
    fd = catalog.open_output_file(job, relative)
    with os.fdopen(fd, "rb") as handle:
        data = np.frombuffer(handle.read(), np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise ValueError(f"{relative} is not a readable image")
    return image


def draw_context(image: np.ndarray, box: tuple[float, float, float, float] | None) -> bytes:
    """The frame scaled to at most CONTEXT_LONG_SIDE with the face's box drawn, as JPEG bytes (the same frame
    and box always give the same bytes)."""
    height, width = image.shape[:2]
    scale = min(1.0, CONTEXT_LONG_SIDE / max(height, width))
    shown = cv2.resize(image, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA) \
        if scale < 1.0 else image.copy()
    if box is not None:
        x1, y1, x2, y2 = (round(v * scale) for v in box)
        thickness = max(2, round(max(shown.shape[:2]) / 320))
        margin = thickness   # drawn just outside the box: the face itself stays as it was
        cv2.rectangle(shown, (x1 - margin, y1 - margin), (x2 + margin, y2 + margin), (0, 0, 0), thickness + 2)
        cv2.rectangle(shown, (x1 - margin, y1 - margin), (x2 + margin, y2 + margin), BOX_COLOUR, thickness)
    ok, encoded = cv2.imencode(".jpg", shown, [cv2.IMWRITE_JPEG_QUALITY, CONTEXT_JPEG_QUALITY,
                                               cv2.IMWRITE_JPEG_OPTIMIZE, 0])
    if not ok:
        raise ValueError("the context frame could not be encoded")
    return encoded.tobytes()


@dataclass(frozen=True)
class RecordingStart:
    when: datetime | None
    source: str   # where `when` comes from, or why there is none


def recording_start(path: Path | None, kind: str | None, why_not_readable: str) -> RecordingStart:
    """When the recording began, as the input file itself says: the container's creation_time tag (MP4, MOV,
    MKV), else a container start time that is a date (a .dav counts from 1970). That clock is the recorder's
    and is reported as such, never corrected."""
    if kind != "video":
        return RecordingStart(None, "not recorded in the input (frames or a photo carry no recording time here)")
    if path is None:
        return RecordingStart(None, why_not_readable)
    import av

    try:
        with av.open(str(path)) as container:
            tags = {**(container.streams.video[0].metadata if container.streams.video else {}), **container.metadata}
            start = container.start_time / 1_000_000 if container.start_time is not None else None
    except (av.FFmpegError, OSError, ValueError) as exc:
        return RecordingStart(None, f"the input's metadata could not be read ({display_name(exc)})")
    text = tags.get("creation_time")
    if isinstance(text, str) and text.strip():
        try:
            when = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
        except ValueError:
            when = None
        if when is not None:
            when = when if when.tzinfo else when.replace(tzinfo=timezone.utc)   # MP4 times are UTC by definition
            return RecordingStart(when.astimezone(timezone.utc),
                                  f"the input's creation_time metadata ({display_name(text.strip())}), as the "
                                  "recorder's clock set it")
    if start is not None and start > EPOCH_START_AFTER:
        return RecordingStart(datetime.fromtimestamp(start, timezone.utc),
                              "the input's container start time (a date), as the recorder's clock set it")
    return RecordingStart(None, "not recorded in the input (no creation_time metadata and no dated start time)")


def wall_clock(start: RecordingStart, seconds: Any) -> str:
    if start.when is None or not isinstance(seconds, (int, float)):
        return ""
    return (start.when + timedelta(seconds=float(seconds))).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def utc_text(when: datetime | None) -> str:
    return when.strftime("%Y-%m-%d %H:%M:%S UTC") if when is not None else ""
