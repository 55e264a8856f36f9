"""Stage 1, decode: turn INPUT (a video file, a folder of frame images or one image) into a stream of frames.

Frames are produced one at a time (PyAV streams packets from disk), so memory stays flat however long the
clip. The pipeline decodes the input twice (once to find and track faces, once to restore them) instead of
holding frames in memory; `open_source` is cheap to call again.
"""
from __future__ import annotations

import errno
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from ..errors import FacedeblurError, UnusableInputError
from ..image_files import read_image
from ..inputs import SUPPORTED_INPUTS_DOC, frame_files, input_kind

log = logging.getLogger(__name__)
_TRANSIENT_ERRNOS = {errno.EACCES, errno.EPERM, errno.EIO, errno.ENOENT, errno.ESTALE, errno.ENOMEM}

# Display-matrix rotation (degrees, as FFmpeg reports it) -> the OpenCV rotation that makes the frame upright.
# Raw elementary streams (FFmpeg's demuxer names) carry no frame rate or timestamps: FFmpeg assumes 25 fps.
RAW_STREAM_FORMATS = {"h264", "hevc"}
RAW_STREAM_DEFAULT_FPS = 25.0

_UPRIGHT_ROTATIONS = {90: cv2.ROTATE_90_COUNTERCLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_CLOCKWISE}


@dataclass
class DecodedFrame:
    index: int
    image: np.ndarray  # BGR uint8, upright
    pts: int | None  # presentation timestamp in the source's time base (video input only)
    time: float | None  # seconds from the start of the clip (None for separate photos)
    name: str | None = None  # file name (frame-folder and single-image input)


@dataclass
class SourceInfo:
    kind: str  # "video", "frames" or "image"
    width: int  # upright size, as the frames come out of `frames()`
    height: int
    fps: float
    frame_rate: Fraction | None
    time_base: Fraction | None
    expected_frames: int | None  # what the container declares; the decoded count is what counts
    rotation: int = 0
    audio_codec: str | None = None
    codec: str | None = None
    names: list[str] = field(default_factory=list)
    start_seconds: float = 0.0  # the container's start time: outputs start there (a .dav counts from 1970, a .ts from ~1 s)
    folder: dict | None = None  # a folder's verdict, clip or separate photos (photos.FolderVerdict)


def list_frame_files(folder: Path) -> list[Path]:
    try:
        return frame_files(folder)
    except PermissionError:
        raise FacedeblurError(f"{folder}: folder not readable; fix its permissions") from None


def _av_problem(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = re.sub(r"^\[Errno -?\d+\]\s*", "", text)  # FFmpeg's error number means nothing to a user
    return re.sub(r"\s*:\s*'[^']*'$", "", text)[:160]


class VideoSource:
    """A video file decoded by PyAV (FFmpeg inside the wheel)."""

    def __init__(self, path: Path, raw_stream_fps: float | None = None):
        import av

        self.path = path
        if path.stat().st_size == 0:
            raise UnusableInputError(f"{path}: empty file (0 bytes); the copy or recording did not finish, supply the complete file")
        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise UnusableInputError(f"{path}: no video stream in this file; supply a video (see {SUPPORTED_INPUTS_DOC})")
                stream = container.streams.video[0]
                audio = container.streams.audio[0].codec_context.name if container.streams.audio else None
                first = next(container.decode(stream), None)
                start_seconds = container.start_time / 1_000_000 if container.start_time is not None else 0.0
                raw_stream = container.format.name in RAW_STREAM_FORMATS
                # PyAV refuses a stream's fields once its container is closed: read them all here.
                stream_rate = stream.average_rate or stream.guessed_rate
                time_base, frame_count, codec = stream.time_base, stream.frames, stream.codec_context.name
        except FacedeblurError:
            raise
        except (av.FFmpegError, StopIteration, OSError, ValueError) as exc:
            # Permission and I/O errors may pass (fixed permissions, a share back online); bad bytes never do.
            transient = isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS
            raise (FacedeblurError if transient else UnusableInputError)(
                f"{path}: not a readable video ({_av_problem(exc)}); check the file is complete and is a "
                f"supported video ({SUPPORTED_INPUTS_DOC})") from None
        if first is None:
            raise UnusableInputError(f"{path}: the video has no decodable frames (truncated or corrupt); supply the complete file")
        rotation = int(round(first.rotation or 0)) % 360
        width, height = (first.height, first.width) if rotation in (90, 270) else (first.width, first.height)
        rate = _raw_stream_rate(path, raw_stream_fps) if raw_stream else stream_rate
        self.info = SourceInfo(kind="video", width=width, height=height, fps=float(rate) if rate else 25.0,
                               frame_rate=Fraction(rate) if rate else None, time_base=time_base,
                               expected_frames=frame_count or None, rotation=rotation, audio_codec=audio,
                               codec=codec, start_seconds=start_seconds)

    def frames(self, on_audio_packet: Callable | None = None) -> Iterator[DecodedFrame]:
        """Yield upright BGR frames; audio packets (if asked) go to `on_audio_packet` in file order."""
        import av

        container = av.open(str(self.path))
        try:
            video = container.streams.video[0]
            video.thread_type = "AUTO"  # frame threading: decoding is a large share of the work on small CPUs
            streams = [video]
            if on_audio_packet is not None and container.streams.audio:
                streams.append(container.streams.audio[0])
            index = 0
            start = video.start_time or 0
            try:
                for packet in container.demux(*streams):
                    if packet.stream.type == "audio":
                        if packet.dts is not None:
                            on_audio_packet(packet)
                        continue
                    for frame in packet.decode():
                        image = frame.to_ndarray(format="bgr24")
                        if self.info.rotation in _UPRIGHT_ROTATIONS:
                            image = cv2.rotate(image, _UPRIGHT_ROTATIONS[self.info.rotation])
                        if image.shape[1] != self.info.width or image.shape[0] != self.info.height:
                            raise UnusableInputError(f"{self.path}: frame {index} changes size "
                                                  f"({image.shape[1]}x{image.shape[0]}); re-encode the clip at one size")
                        time = float((frame.pts - start) * video.time_base) if frame.pts is not None else index / self.info.fps
                        yield DecodedFrame(index=index, image=image, pts=frame.pts, time=time)
                        index += 1
            except av.FFmpegError as exc:
                raise UnusableInputError(f"{self.path}: video is corrupt or truncated after frame {index} "
                                      f"({_av_problem(exc)}); repair or re-export the file") from None
        finally:
            container.close()


def _raw_stream_rate(path: Path, configured: float | None) -> Fraction:
    """A raw stream's frame rate: the one given (--fps, pipeline.raw_stream_fps), else 25 with a warning, since
    a stream recorded at another rate then plays too fast or too slow in the outputs."""
    if configured:
        log.info("%s: raw stream without a frame rate; taken as %g fps as configured", path.name, configured)
        return Fraction(configured).limit_denominator(1001)
    log.warning("%s: raw H.264/H.265 stream carries no frame rate; assuming %g fps (a stream recorded at another "
                "rate comes out too fast or too slow): give the real one with --fps or pipeline.raw_stream_fps",
                path.name, RAW_STREAM_DEFAULT_FPS)
    return Fraction(RAW_STREAM_DEFAULT_FPS)


class FrameFolderSource:
    """A folder of frame images, in natural name order; every frame must have the same size."""

    def __init__(self, folder: Path, fps: float):
        self.path = folder
        self.files = list_frame_files(folder)
        if not self.files:
            raise UnusableInputError(f"{folder}: folder has no frame images (png, jpg, webp, bmp, tiff); "
                                  "supply a folder of frames or a video file")
        first = read_image(self.files[0])
        self.info = SourceInfo(kind="frames", width=first.shape[1], height=first.shape[0], fps=fps,
                               frame_rate=Fraction(fps).limit_denominator(1001), time_base=None,
                               expected_frames=len(self.files), names=[p.name for p in self.files])

    def frames(self, on_audio_packet: Callable | None = None) -> Iterator[DecodedFrame]:
        for index, path in enumerate(self.files):
            image = read_image(path)
            if image.shape[:2] != (self.info.height, self.info.width):
                raise UnusableInputError(
                    f"{self.path}: frame {path.name} is {image.shape[1]}x{image.shape[0]} but {self.files[0].name} is "
                    f"{self.info.width}x{self.info.height}; all frames in a folder must be the same size (resize or split the folder)")
            yield DecodedFrame(index=index, image=image, pts=None, time=index / self.info.fps, name=path.name)


class SingleImageSource:
    """One photo: a one-frame 'clip', so photos and footage share the whole pipeline."""

    def __init__(self, path: Path):
        self.path = path
        if path.stat().st_size == 0:
            raise UnusableInputError(f"{path}: empty file (0 bytes); supply the complete image")
        image = read_image(path)
        self.info = SourceInfo(kind="image", width=image.shape[1], height=image.shape[0], fps=0.0, frame_rate=None,
                               time_base=None, expected_frames=1, names=[path.name])

    def frames(self, on_audio_packet: Callable | None = None) -> Iterator[DecodedFrame]:
        yield DecodedFrame(index=0, image=read_image(self.path), pts=None, time=0.0, name=self.path.name)


def open_folder(folder: Path, fps: float):
    """A folder as one clip or as separate photos, by the folder rule (photos.classify_folder); logged."""
    from .photos import PhotoFolderSource, classify_folder

    files = list_frame_files(folder)
    if not files:
        return FrameFolderSource(folder, fps)  # which names the problem
    verdict = classify_folder(files)
    log.info("%s: folder of %d image(s) taken as %s: %s", folder.name, len(files),
             "separate photos" if verdict.taken_as == "photos" else "one clip", verdict.reason)
    if verdict.taken_as == "photos":
        return PhotoFolderSource(folder, files, verdict)
    source = FrameFolderSource(folder, fps)
    source.info.folder = verdict.as_dict()
    return source


FootageSource = VideoSource | FrameFolderSource | SingleImageSource


def open_source(path: Path, frame_folder_fps: float = 25.0, raw_stream_fps: float | None = None) -> FootageSource:
    """Open INPUT by what it is; every problem is a one-line FacedeblurError naming the fix."""
    if not path.exists():
        raise FacedeblurError(f"{path}: not found; check the path")
    kind = input_kind(path)
    if kind == "frames":
        return open_folder(path, frame_folder_fps)
    if kind == "image":
        return SingleImageSource(path)
    if kind == "video":
        return VideoSource(path, raw_stream_fps)
    raise UnusableInputError(f"{path}: unsupported input type '{path.suffix or 'no extension'}'; supply a video, "
                          f"an image or a folder of frame images ({SUPPORTED_INPUTS_DOC})")
