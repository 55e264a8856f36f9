"""The original footage beside the restored: the inbox file itself where the browser can play it, otherwise a
playable proxy of it (H.264 MP4, made once on first use in STATE/proxies and labelled and hashed as a proxy,
deleted with the job's output by retention), and the wall-clock recording time where the input gives one.

The inbox is writable by whoever drops footage, so the original is only shown while it is still a regular
file of the recorded size whose SHA-256 is the one the journal recorded when it was processed. Hashing a
long clip takes seconds, so a verified file is remembered by what fstat says of it (device, inode, size,
mtime and ctime: a rewrite changes ctime, which no user can set back).
"""
from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from .. import __version__
from ..inputs import sha256_of_stream
from ..safe_text import display_name
from . import safe_files

log = logging.getLogger(__name__)

PROXY_FOLDER = "proxies"
PROXY_CRF = 18              # visually lossless for review: the proxy must not hide detail the original has
PROXY_PRESET = "veryfast"
PROXY_NOTICE = ("Proxy of the original, re-encoded to H.264 by facedeblur review because browsers cannot play "
                "the original's codec; not AI-restored.")
# What Chromium and Firefox play without help: container (by extension) -> codecs, in 8-bit 4:2:0.
BROWSER_CODECS = {".mp4": {"h264", "vp9", "av1"}, ".m4v": {"h264"}, ".webm": {"vp8", "vp9", "av1"}}
BROWSER_PIXEL_FORMATS = {"yuv420p", "yuvj420p"}
BROWSER_IMAGES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif")
# 20260102_030405, 2026-01-02 03-04-05, 2026-01-02T03:04:05, 20260102T030405: a date and a time of day in a name.
NAME_TIMESTAMP = re.compile(r"(?<!\d)((?:19|20)\d\d)[-_.]?(0[1-9]|1[0-2])[-_.]?(0[1-9]|[12]\d|3[01])"
                            r"[T _.-]?([01]\d|2[0-3])[-_.:h]?([0-5]\d)[-_.:m]?([0-5]\d)(?!\d)")
RECORDED_FROM_METADATA = "the file's creation_time metadata"
RECORDED_FROM_NAME = "the file name (time zone not recorded)"


class OriginalUnavailable(Exception):
    """The original cannot be shown; the message says why (gone, changed, unreadable)."""


@dataclass(frozen=True)
class Recorded:
    start: datetime
    source: str   # RECORDED_FROM_METADATA or RECORDED_FROM_NAME

    def at(self, offset_seconds: float | None) -> str:
        moment = self.start + timedelta(seconds=offset_seconds or 0.0)
        text = moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-4]
        return text + (" UTC" if moment.tzinfo is not None else "")


@dataclass
class Original:
    """What the job page shows of a video job's original."""
    state: str                      # 'direct', 'proxy', 'pending' (the proxy is being made) or 'unavailable'
    reason: str = ""
    codec: str = ""
    proxy_sha256: str = ""
    recorded: Recorded | None = None


def recorded_from_name(rel_path: str) -> Recorded | None:
    match = NAME_TIMESTAMP.search(rel_path.rsplit("/", 1)[-1])
    if not match:
        return None
    try:
        return Recorded(datetime(*(int(group) for group in match.groups())), RECORDED_FROM_NAME)
    except ValueError:
        return None   # 2026-02-30: looks like a date, is not one


def recorded_from_metadata(value: str | None) -> Recorded | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.year < 1971:
        return None   # 1904-01-01 or 1970-01-01: the muxer's zero, not a recording time
    return Recorded(moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc), RECORDED_FROM_METADATA)


def proxy_name(job_id: int, source_sha256: str) -> str:
    """The proxy's file name in STATE/proxies; its record is the same name + '.json'."""
    return f"j{int(job_id)}-{source_sha256[:16]}.mp4"


def remove_proxies(state: Path, job_id: int) -> int:
    """Delete the job's proxies and their records from STATE/proxies (retention calls it with the job's output,
    so a proxy never outlives what it was made for); returns how many files went. The record goes first: a
    proxy is never named by a record once its file is gone."""
    folder = Path(state) / PROXY_FOLDER
    if not folder.is_dir():
        return 0
    pattern = proxy_name(job_id, "?" * 16)
    doomed = sorted(folder.glob(pattern + ".json")) + sorted(folder.glob(pattern))
    for path in doomed:
        path.unlink(missing_ok=True)
    return len(doomed)


class Originals:
    def __init__(self, state: Path):
        self.folder = Path(state) / PROXY_FOLDER
        self._verified: dict[tuple[int, ...], dict[str, Any]] = {}
        self._lock = threading.Lock()
        self._job_locks: dict[int, threading.Lock] = {}
        self._encoding = threading.Semaphore(1)   # one proxy at a time: each uses every core
        self._making: set[int] = set()
        # A proxy half-written when the server last stopped is never finished: its record was not written.
        for stale in self.folder.glob(".*.part") if self.folder.is_dir() else []:
            stale.unlink(missing_ok=True)

    # ---- the inbox file -----------------------------------------------------------------------------------
    def open_verified(self, job: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        """A descriptor of the job's inbox file at offset 0, and what probing it found; only while it still has
        the recorded content."""
        if job.get("kind") != "file" or not job.get("path") or not job.get("sha256"):
            raise OriginalUnavailable("this job's input is not one file")
        try:
            fd = safe_files.open_recorded_input(Path(job["path"]), int(job.get("size") or 0))
        except safe_files.InputUnusable as exc:
            raise OriginalUnavailable(f"the original is {exc}") from None
        try:
            info = os.fstat(fd)
            key = (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns, job["id"])
            with self._lock:
                known = self._verified.get(key)
            if known is None:
                with os.fdopen(os.dup(fd), "rb") as handle:
                    digest = sha256_of_stream(handle)
                if digest != job["sha256"]:
                    raise OriginalUnavailable("the original in the inbox has other content than was processed "
                                              f"(SHA-256 {digest[:16]}…, recorded {job['sha256'][:16]}…)")
                known = probe(fd, job)
                with self._lock:
                    if len(self._verified) > 1024:
                        self._verified.clear()
                    self._verified[key] = known
            os.lseek(fd, 0, os.SEEK_SET)
            return fd, known
        except BaseException:
            os.close(fd)
            raise

    # ---- the page -----------------------------------------------------------------------------------------
    def describe(self, job: dict[str, Any]) -> Original:
        """The original as the job page shows it; starts making the proxy in the background when one is due."""
        name_time = recorded_from_name(job.get("rel_path") or "")
        try:
            fd, known = self.open_verified(job)
        except OriginalUnavailable as exc:
            return Original("unavailable", reason=str(exc), recorded=name_time)
        os.close(fd)
        recorded = recorded_from_metadata(known.get("creation_time")) or name_time
        if known["playable"]:
            return Original("direct", codec=known["codec"], recorded=recorded)
        record = self.proxy_record(job)
        if record is not None:
            return Original("proxy", codec=known["codec"], proxy_sha256=record["proxy_sha256"], recorded=recorded)
        with self._lock:
            start = job["id"] not in self._making
            self._making.add(job["id"])
        if start:
            threading.Thread(target=self._make_in_background, args=(job,), daemon=True,
                             name=f"proxy-j{job['id']}").start()
        return Original("pending", codec=known["codec"], recorded=recorded)

    def _make_in_background(self, job: dict[str, Any]) -> None:
        try:
            self.proxy(job)
        except Exception:   # the video request that waits for it reports the failure
            log.exception("making a proxy of job %s's original failed", job["id"])
        finally:
            with self._lock:
                self._making.discard(job["id"])

    # ---- the proxy ----------------------------------------------------------------------------------------
    def proxy_name(self, job: dict[str, Any]) -> str:
        return proxy_name(job["id"], job["sha256"])

    def proxy_record(self, job: dict[str, Any]) -> dict[str, Any] | None:
        try:
            data = safe_files.read_below(self.folder, [self.proxy_name(job) + ".json"], 64 * 1024)
            record = json.loads(data)
        except (safe_files.NotServable, ValueError):
            return None
        return record if isinstance(record, dict) and record.get("source_sha256") == job["sha256"] else None

    def proxy(self, job: dict[str, Any]) -> dict[str, Any]:
        """The proxy's record, made first when there is none (one maker per job; others wait for it)."""
        with self._lock:
            job_lock = self._job_locks.setdefault(job["id"], threading.Lock())
        with job_lock:
            record = self.proxy_record(job)
            if record is not None:
                return record
            fd, known = self.open_verified(job)
            try:
                with self._encoding:
                    return self._encode(fd, job, known)
            finally:
                os.close(fd)

    def _encode(self, fd: int, job: dict[str, Any], known: dict[str, Any]) -> dict[str, Any]:
        from ..footage.decode import VideoSource
        from ..footage.encode import VideoEncoder

        self.folder.mkdir(parents=True, exist_ok=True)
        name = self.proxy_name(job)
        temp = self.folder / f".{name}.{os.getpid()}.{threading.get_ident()}.part"
        started = time.monotonic()
        # /proc/self/fd/N: FFmpeg reads the very file that was verified, not whatever the path names now.
        source = VideoSource(Path(f"/proc/self/fd/{fd}"))
        info = source.info
        encoder = VideoEncoder(temp, info, PROXY_CRF, PROXY_PRESET, audio_from=Path(f"/proc/self/fd/{fd}"),
                               comment=PROXY_NOTICE)
        shift = round(info.start_seconds / info.time_base) if info.time_base else 0
        frames = 0
        try:
            for frame in source.frames(on_audio_packet=encoder.write_audio_packet if encoder.audio_stream else None):
                encoder.write(frame.image, None if frame.pts is None else frame.pts - shift)
                frames += 1
        except BaseException:
            encoder.close()
            temp.unlink(missing_ok=True)
            raise
        encoder.close()
        with open(temp, "rb") as handle:
            digest = sha256_of_stream(handle)
        record = {"proxy": name, "proxy_sha256": digest, "source": display_name(job.get("rel_path") or ""),
                  "source_sha256": job["sha256"], "source_codec": known["codec"], "frames": frames,
                  "encoder": f"libx264 crf {PROXY_CRF} preset {PROXY_PRESET}", "tool": f"facedeblur {__version__}",
                  "notice": PROXY_NOTICE}
        os.replace(temp, self.folder / name)
        sidecar = self.folder / f".{name}.json.part"
        sidecar.write_text(json.dumps(record, indent=1), encoding="utf-8")
        os.replace(sidecar, self.folder / f"{name}.json")   # the record last: it says the proxy is complete
        log.info("made a proxy of job %s's original (%s, %d frames) in %.1f s", job["id"], known["codec"], frames,
                 time.monotonic() - started)
        return record

    def open_video(self, job: dict[str, Any]) -> tuple[int, str]:
        """What the original's player plays: (descriptor, name for its media type)."""
        fd, known = self.open_verified(job)
        if known["playable"]:
            return fd, job["path"]
        os.close(fd)
        record = self.proxy(job)
        try:
            return safe_files.open_below(self.folder, [record["proxy"]]), record["proxy"]
        except safe_files.NotServable as exc:
            raise OriginalUnavailable(f"the proxy of the original is missing ({exc})") from None


def probe(fd: int, job: dict[str, Any]) -> dict[str, Any]:
    """The original's video codec, pixel format, whether a browser plays it, and its creation_time."""
    import av

    try:
        with av.open(f"/proc/self/fd/{fd}") as container:
            stream = container.streams.video[0]
            codec = stream.codec_context.name
            pixel_format = stream.codec_context.format.name if stream.codec_context.format else ""
            created = container.metadata.get("creation_time") or stream.metadata.get("creation_time")
    except (av.FFmpegError, IndexError, OSError) as exc:
        raise OriginalUnavailable(f"the original cannot be read ({str(exc).splitlines()[0][:120]})") from None
    suffix = os.path.splitext(job.get("rel_path") or "")[1].lower()
    playable = codec in BROWSER_CODECS.get(suffix, set()) and pixel_format in BROWSER_PIXEL_FORMATS
    return {"codec": codec, "pixel_format": pixel_format, "playable": playable, "creation_time": created}
