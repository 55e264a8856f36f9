"""Stage 8, encode: write restored and annotated frames back out.

Video goes through PyAV's libx264 with the source's own timestamps (so frame count, frame rate, variable
frame timing, dropped-frame gaps and start offset all survive) and the source's audio track copied packet
for packet. Timestamps the muxer cannot take (missing, repeated, going backwards) are re-timed by
`plan_timestamps`, and the manifest says so. Audio
that MP4 cannot carry (PCM from AVI/MOV, for example) is re-encoded to AAC rather than dropped.
"""
from __future__ import annotations

import errno
import logging
import queue
import threading
from fractions import Fraction
from pathlib import Path
from typing import Callable

import numpy as np

from ..ai_label import RESTORED_NOTICE
from ..errors import FacedeblurError
from ..image_files import write_image_atomic
from .decode import SourceInfo

log = logging.getLogger(__name__)

# Audio codecs FFmpeg's MP4 muxer accepts as they are.
MP4_AUDIO_CODECS = {"aac", "mp3", "ac3", "eac3", "opus", "flac", "alac", "mp2"}


class VideoEncoder:
    """H.264 MP4 writer keeping the input's timestamps; optionally carries the input's audio."""

    def __init__(self, path: Path, info: SourceInfo, crf: int, preset: str, audio_from: Path | None = None,
                 comment: str = RESTORED_NOTICE):
        import av

        self.path = path
        self.container = av.open(str(path), mode="w", format="mp4")
        self.container.metadata["comment"] = comment
        rate = info.frame_rate or Fraction(25)
        self.stream = self.container.add_stream("libx264", rate=rate)
        self.stream.width, self.stream.height = info.width, info.height
        # 4:2:0 (what every player decodes) needs even sides; odd-sized input keeps its size in 4:4:4.
        even = info.width % 2 == 0 and info.height % 2 == 0
        self.stream.pix_fmt = "yuv420p" if even else "yuv444p"
        self.stream.options = {"crf": str(crf), "preset": preset}
        self.time_base = info.time_base or (1 / rate)
        self.stream.time_base = self.time_base
        # The encoder counts in the source's time base too: by default it would count in frames of the
        # average rate (1/rate), and a clip with a dropped frame or a variable rate then rounds two frames
        # onto one tick ("non monotonically increasing dts").
        self.stream.codec_context.time_base = self.time_base
        self.step = max(1, round(float(1 / rate / self.time_base))) if info.time_base else 1
        self.last_pts: int | None = None
        self.start_seconds = info.start_seconds  # subtracted from the copied audio too, keeping it in sync
        self.audio_stream = None
        self.audio_transcoder = None
        self.audio_note = None
        if audio_from is not None:
            self._add_audio(audio_from)

    def _add_audio(self, source: Path) -> None:
        import av

        with av.open(str(source)) as container:
            if not container.streams.audio:
                return
            template = container.streams.audio[0]
            name = template.codec_context.name
            if name in MP4_AUDIO_CODECS:
                self.audio_stream = self.container.add_stream_from_template(template)
                self.audio_note = f"copied ({name})"
            else:
                rate = template.codec_context.sample_rate or 48000
                self.audio_stream = self.container.add_stream("aac", rate=rate)
                self.audio_transcoder = av.AudioResampler(format="fltp", layout=template.codec_context.layout.name
                                                          if template.codec_context.layout else "stereo",
                                                          rate=rate, frame_size=1024)
                self.audio_note = f"re-encoded from {name} to aac (MP4 cannot carry {name})"

    def write_audio_packet(self, packet) -> None:
        self.write_audio(self.audio_payload(packet))

    def audio_payload(self, packet):
        """What `write_audio` needs of one source packet, taken while the source is still open: the packet
        itself when it is copied (it owns its data), its decoded frames when it is re-encoded (decoding needs
        the source's decoder)."""
        if self.audio_stream is None or self.audio_transcoder is None:
            return packet
        return list(packet.decode())

    def write_audio(self, payload) -> None:
        if self.audio_stream is None:
            return
        if self.audio_transcoder is None:
            packet = payload
            if self.start_seconds and packet.pts is not None and packet.time_base:
                shift = round(self.start_seconds / packet.time_base)
                packet.pts -= shift
                if packet.dts is not None:
                    packet.dts -= shift
            packet.stream = self.audio_stream
            self.container.mux(packet)
            return
        for frame in payload:
            frame.pts = None  # the resampler re-times; AAC frames are then numbered in samples
            for chunk in self.audio_transcoder.resample(frame):
                self.container.mux(self.audio_stream.encode(chunk))

    def write(self, image: np.ndarray, pts: int | None) -> None:
        import av

        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        if pts is None:
            pts = 0 if self.last_pts is None else self.last_pts + self.step
        if self.last_pts is not None and pts <= self.last_pts:
            pts = self.last_pts + 1  # duplicate timestamps in the source would make the muxer refuse the frame
        frame.pts = pts
        frame.time_base = self.time_base
        self.last_pts = pts
        self.container.mux(self.stream.encode(frame))

    def close(self) -> None:
        try:
            self.container.mux(self.stream.encode(None))
            if self.audio_transcoder is not None:
                for chunk in self.audio_transcoder.resample(None):
                    self.container.mux(self.audio_stream.encode(chunk))
                self.container.mux(self.audio_stream.encode(None))
        finally:
            self.container.close()


def plan_timestamps(pts: list[int | None], info: SourceInfo) -> tuple[list[int], str]:
    """The output timestamp of every frame, in `info.time_base`, and what was done, for the manifest.

    The input's own timestamps are kept whenever they increase, gaps (dropped frames) and variable frame
    rate included, counted from the container's start (so a Dahua .dav's wall-clock times, from 1970, or an
    MPEG-TS clock offset do not become a long blank start). A frame without one gets the previous frame's plus one nominal frame step; one that does
    not come after the previous frame (a repeated timestamp, a jump back, an MPEG-TS clock wrap) moves it
    and every later frame so that it lands one step after the previous frame, keeping the later spacing."""
    rate = info.frame_rate or Fraction(25)
    step = max(1, round(float(1 / rate / info.time_base))) if info.time_base else 1
    planned: list[int] = []
    offset = -round(info.start_seconds / info.time_base) if info.time_base else 0
    missing = moved = 0
    first_moved: int | None = None
    for index, value in enumerate(pts):
        previous = planned[-1] if planned else None
        if value is None:
            missing += 1
            new = 0 if previous is None else previous + step
        else:
            new = value + offset
            if previous is not None and new <= previous:
                offset += previous + step - new
                new = previous + step
                moved += 1
                first_moved = index if first_moved is None else first_moved
        planned.append(new)
    if not missing and not moved:
        return planned, "kept"
    parts = []
    if missing:
        parts.append(f"{missing} frame(s) without a timestamp placed one frame step after the previous one")
    if moved:
        parts.append(f"{moved} repeated or backward timestamp(s) (first at frame {first_moved}) moved one frame "
                     "step after the previous frame, later frames shifted with them")
    return planned, "re-timed: " + "; ".join(parts)


class FrameFolderWriter:
    """Restored frames under the input's own file names (and formats), for frame-folder input."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def write(self, image: np.ndarray, name: str) -> None:
        write_image_atomic(self.folder / name, image)

    def close(self) -> None:
        pass


# Errors that mean the output disk or folder is at fault (full, read-only, no permission), not the encoder.
_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO}


def encoder_error(path: Path, exc: Exception) -> FacedeblurError:
    problem = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
    if isinstance(exc, OSError) and exc.errno in _DISK_ERRNOS:
        return FacedeblurError(f"cannot write {path.name} ({problem}); "
                               "check free disk space and that the output folder is writable")
    return FacedeblurError(f"cannot encode {path.name} ({problem}); the encoder refused the frames, not the disk: "
                           "re-export the input (e.g. ffmpeg -i INPUT -c:v libx264 OUT.mp4) and report the input's details")


class BackgroundWriter:
    """Runs the writing calls of one output, in the order given, on a thread of its own, so encoding (x264
    and the muxer release the GIL) overlaps the next frames' decoding and restoring instead of waiting its
    turn. A bounded queue keeps memory flat when the encoder is the slower side. Once a call raises, the
    later ones are skipped and the error comes back from every later `submit` and from `finish`."""

    def __init__(self, max_queued: int = 8):
        self._queue: queue.Queue = queue.Queue(maxsize=max_queued)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._work, name="facedeblur-writer", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while (call := self._queue.get()) is not None:
            if self._error is None:
                try:
                    call[0](*call[1])
                except BaseException as exc:  # handed to the caller's thread, which decides what it means
                    self._error = exc

    def submit(self, function: Callable, *args) -> None:
        if self._error is not None:
            raise self._error
        self._queue.put((function, args))

    def finish(self) -> None:
        """Wait for every submitted call; raise the first error one of them raised."""
        self.stop()
        if self._error is not None:
            raise self._error

    def stop(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()
