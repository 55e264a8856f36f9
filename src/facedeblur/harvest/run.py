"""The harvest: each SOURCE in turn, every candidate image through the same checks, kept ones written with
their provenance, and the counts for the summary."""
from __future__ import annotations

import hashlib
import logging
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from ..errors import FacedeblurError
from ..inputs import SUPPORTED_INPUTS_DOC, is_frame_name, is_image_name, is_video_name, sha256_of_input
from ..safe_text import display_name
from .checks import (DUPLICATE, NOT_HTTP, SKIP_REASONS, TOO_LARGE, UNREADABLE, DuplicateIndex, FaceJudge, Skipped,
                     decode_limited, difference_hash)
from ..footage.decode import open_source
from .fetch import Fetcher, normalise_url, refuse_unsafe_url
from .footage import FootageReport, encode_png, harvest_footage
from .output import HarvestOutput, folder_label, utc_now
from .politeness import host_key
from .settings import HarvestSettings

log = logging.getLogger(__name__)

_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
MAX_URL_LIST_BYTES = 10 * 1024 * 1024


@dataclass
class Source:
    kind: str    # "page", "urls", "photos", "photo", "footage"
    value: str   # URL or path
    urls: list[str] = field(default_factory=list)  # a URL list's entries, read up front


def classify_sources(values: list[str], frames: bool) -> list[Source]:
    """What each SOURCE is; every unusable one is a one-line error before anything is fetched or written."""
    sources = []
    for value in values:
        if value.lower().startswith(("http://", "https://")):
            try:
                refuse_unsafe_url(normalise_url(value))
            except Skipped as skipped:
                raise FacedeblurError(f"{value}: {skipped.detail}; pass a plain http(s):// page address") from None
            from .web import find_chromium
            find_chromium()  # no browser: say so now, not after the local sources have run
            sources.append(Source("page", normalise_url(value)))
            continue
        if _SCHEME.match(value):
            raise FacedeblurError(f"{display_name(value)}: only http:// and https:// pages are harvested; "
                                  "pass a web page, a text file of URLs, a photo folder, a video or a frame folder")
        path = Path(value)
        if not path.exists():
            raise FacedeblurError(f"{display_name(value)}: not found; pass an http(s):// page, a text file of URLs, "
                                  "a photo folder, a video or a frame folder")
        if path.is_dir() and not frames:
            sources.append(Source("photos", value))
        elif path.is_dir() or is_video_name(path.name):
            open_source(path)  # an unreadable clip or an empty frame folder fails here, before any work
            sources.append(Source("footage", value))
        elif is_image_name(path.name):
            sources.append(Source("photo", value))
        else:
            sources.append(Source("urls", value, read_url_list(path)))
    return sources


def read_url_list(path: Path) -> list[str]:
    try:
        if path.stat().st_size > MAX_URL_LIST_BYTES:
            raise FacedeblurError(f"{display_name(path)}: larger than {MAX_URL_LIST_BYTES // 2**20} MiB; a URL "
                                  "list is plain text, one URL a line; split it")
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise FacedeblurError(f"{display_name(path)}: not a UTF-8 text file of URLs, a video, an image or a folder; "
                              f"pass one of those (supported videos and images: {SUPPORTED_INPUTS_DOC})") from None
    except OSError as exc:
        raise FacedeblurError(f"{display_name(path)}: not readable ({exc.strerror}); fix its permissions") from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


@dataclass
class Counts:
    pages_visited: int = 0
    images_seen: int = 0
    kept: int = 0
    skipped: Counter = field(default_factory=Counter)
    pages_skipped: Counter = field(default_factory=Counter)
    kept_per_site: Counter = field(default_factory=Counter)
    footage: dict = field(default_factory=dict)


class _LimitReached(Exception):
    pass


class Harvester:
    def __init__(self, outdir: Path, settings: HarvestSettings):
        self.settings = settings
        self.output = HarvestOutput(outdir)
        self.outdir = Path(outdir).resolve()
        self.index = DuplicateIndex(settings.near_duplicate_bits)
        for record in self.output.records:  # an earlier run into the same OUTDIR
            self.index.digests.add(record.get("sha256", ""))
            if record.get("perceptual_hash"):
                self.index.add_kept(np.frombuffer(bytes.fromhex(record["perceptual_hash"]), np.uint8))
        self.counts = Counts()
        self.judge = FaceJudge(settings.min_face_size, settings.min_sharpness, settings.min_frontalness,
                               settings.crop_size)
        self.fetcher = Fetcher(settings)
        self._browser = None
        self._seen_urls: set[str] = set()
        self.skipped_items: list[dict] = []
        from tqdm import tqdm
        self.bar = tqdm(desc="harvesting", unit="img", disable=not settings.progress, dynamic_ncols=True)

    # -- the limits -------------------------------------------------------------------------------------
    def _room_left(self) -> bool:
        return not self.settings.max_images or self.counts.kept < self.settings.max_images

    def _site_room_left(self, host: str) -> bool:
        return not self.settings.per_site or self.counts.kept_per_site[host] < self.settings.per_site

    # -- one candidate ----------------------------------------------------------------------------------
    def _skip(self, skipped: Skipped, what: str) -> None:
        self.counts.skipped[skipped.reason] += 1
        self.skipped_items.append({"source": what, "reason": skipped.reason, "detail": skipped.detail})
        log.debug("skipped %s: %s", what, skipped)

    def _seen(self) -> None:
        self.counts.images_seen += 1
        self.bar.update(1)

    def _consider(self, data: bytes, label: str, record: dict, image=None, extension: str = ".png",
                  site: str | None = None) -> None:
        """The checks every candidate goes through, then keep. Raises Skipped."""
        digest = hashlib.sha256(data).hexdigest()
        if self.index.seen_bytes(digest):
            raise Skipped(DUPLICATE, f"same bytes as an earlier image ({digest[:12]})")
        if image is None:
            image, extension = decode_limited(data, self.settings.max_bytes, self.settings.max_pixels)
        image_hash = difference_hash(image)
        distance = self.index.near_copy_distance(image_hash)
        if distance is not None:
            raise Skipped(DUPLICATE, f"near copy of a kept image ({distance} bits apart)")
        quality = self.judge.judge(image)
        record = {**record, "sha256": digest, "fetched_at": utc_now(), "width": int(image.shape[1]),
                  "height": int(image.shape[0]), "face_size": round(quality.face_size, 1),
                  "sharpness": round(quality.sharpness, 1), "frontalness": round(quality.frontalness, 3),
                  "perceptual_hash": image_hash.tobytes().hex()}
        self.output.keep(data, extension, label, record)
        self.index.add_kept(image_hash)
        self.counts.kept += 1
        if site is not None:
            self.counts.kept_per_site[site] += 1
        self.bar.set_postfix(kept=self.counts.kept)
        if not self._room_left():
            raise _LimitReached

    # -- web --------------------------------------------------------------------------------------------
    @property
    def browser(self):
        if self._browser is None:
            from .web import Browser
            self._browser = Browser(self.settings, self.fetcher)
        return self._browser

    def web_image(self, url: str, page: str | None, licence: str | None, accept_page: bool = False,
                  site: str | None = None) -> str | None:
        """Fetch and consider one image URL; returns the URL back when it turned out to be a page. `site`: the
        host --per-site counts it under (the page's, for a gallery serving its photos from elsewhere)."""
        url = normalise_url(url)
        if url in self._seen_urls:
            return None
        self._seen_urls.add(url)
        host = site or (host_key(url) if urlsplit(url).hostname else "")
        if host and not self._site_room_left(host):
            return None
        self._seen()
        try:
            response = self.fetcher.get(url, accept_page=accept_page)
            if response.is_page:
                self.counts.images_seen -= 1  # a page listed in a URL file is crawled, not an image
                return url
            record = {"url": url, "final_url": response.url if response.url != url else None, "page": page,
                      "licence": licence, "content_type": response.content_type or None}
            self._consider(response.data, host_key(response.url) or "web", record, site=host)
        except Skipped as skipped:
            self._skip(skipped, url)
        return None

    def web_page(self, url: str) -> None:
        from .web import crawl

        site = host_key(url)
        for page in crawl(url, self.fetcher, self.browser, self.settings, self._page_skipped,
                          lambda: self._site_room_left(site)):
            self.counts.pages_visited += 1
            for image_url in page.images:
                if not self._site_room_left(site):
                    break
                self.web_image(image_url, page.url, page.licence, site=site)

    def _page_skipped(self, reason: str) -> None:
        self.counts.pages_skipped[reason] += 1

    def url_list(self, entries: list[str]) -> None:
        for entry in entries:
            if not entry.lower().startswith(("http://", "https://")):
                self._seen()
                self._skip(Skipped(NOT_HTTP, "only http and https are fetched"), entry)
                continue
            page = self.web_image(entry, None, None, accept_page=True)
            if page is not None:
                self._seen_urls.discard(page)
                self.web_page(page)

    # -- local photos -----------------------------------------------------------------------------------
    def photo_files(self, folder: Path):
        """Images under a folder, in a stable order, never following symlinks and never inside OUTDIR."""
        for root, folders, files in os.walk(folder, followlinks=False):
            root_path = Path(root)
            folders[:] = sorted(name for name in folders if not name.startswith(".")
                                and (root_path / name).resolve() != self.outdir)
            for name in sorted(files):
                if is_frame_name(name):
                    yield root_path / name

    def photo(self, path: Path, label: str) -> None:
        self._seen()
        try:
            flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
            try:
                fd = os.open(path, flags)
            except OSError as exc:
                raise Skipped(UNREADABLE, exc.strerror or str(exc)) from None
            with os.fdopen(fd, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                if size > self.settings.max_bytes:
                    raise Skipped(TOO_LARGE, f"{size} bytes, above the limit of {self.settings.max_bytes}")
                data = handle.read(self.settings.max_bytes + 1)
            self._consider(data, label, {"path": str(path.resolve())})
        except Skipped as skipped:
            self._skip(skipped, display_name(path))

    # -- footage ----------------------------------------------------------------------------------------
    def footage(self, path: Path) -> None:
        report = FootageReport()
        source_sha256 = sha256_of_input(path)
        label = folder_label(path.stem if path.is_file() else path.name)

        def rejected(reason: str, detail: str) -> None:
            self._seen()
            self._skip(Skipped(reason, detail), display_name(path))

        try:
            for face in harvest_footage(path, self.settings, report, rejected):
                self._seen()
                record = {"path": str(path.resolve()), "source_sha256": source_sha256, "frame": face.frame_index,
                          "time": round(face.time, 3), "track": face.track_id, "box": face.box}
                try:
                    self._consider(encode_png(face.image), label, record, image=face.image)
                except Skipped as skipped:
                    self._skip(skipped, f"{display_name(path)} frame {face.frame_index}")
        except Skipped as skipped:
            self._skip(skipped, display_name(path))
        finally:
            self.counts.footage[str(path)] = {"frames": report.frames, "tracks": report.tracks}

    # -- all --------------------------------------------------------------------------------------------
    def run(self, sources: list[Source]) -> dict:
        for source in sources:
            if source.kind == "page":
                self.fetcher.named_hosts.add(host_key(source.value))
            elif source.kind == "urls":
                self.fetcher.named_hosts.update(host_key(url) for url in source.urls
                                                if url.lower().startswith(("http://", "https://")))
        try:
            for source in sources:
                if source.kind == "page":
                    self.web_page(source.value)
                elif source.kind == "urls":
                    self.url_list(source.urls)
                elif source.kind == "photos":
                    folder = Path(source.value)
                    for path in self.photo_files(folder):
                        self.photo(path, folder_label(folder.resolve().name))
                elif source.kind == "photo":
                    self.photo(Path(source.value), folder_label(Path(source.value).resolve().parent.name))
                else:
                    self.footage(Path(source.value))
        except _LimitReached:
            log.info("stopped at --max-images %d", self.settings.max_images)
        except OSError as exc:  # disk full, OUTDIR made read-only: one line, and what was kept stays listed
            where = f" ({display_name(exc.filename)})" if exc.filename else ""
            raise FacedeblurError(f"cannot write the harvest{where}: {exc.strerror or exc}; free space or fix "
                                  f"permissions in {display_name(self.outdir)}, then run again (kept images "
                                  "are not harvested twice)") from None
        finally:
            self.bar.close()
            self.output.flush()
            if self._browser is not None:
                self._browser.close()
        summary = self.summary()
        self.output.write_summary(summary, self.skipped_items)
        return summary

    def summary(self) -> dict:
        counts = self.counts
        skipped = {reason: counts.skipped[reason] for reason in SKIP_REASONS if counts.skipped[reason]}
        skipped.update({reason: n for reason, n in counts.skipped.items() if reason not in skipped})
        hosts = {host for host in counts.kept_per_site} | {host_key(o) for o in self.fetcher.rules}
        return {
            "pages_visited": counts.pages_visited,
            "pages_skipped": dict(counts.pages_skipped),
            "images_seen": counts.images_seen,
            "kept": counts.kept,
            "kept_total": len(self.output.records),
            "skipped": skipped,
            "sites": {host: {"kept": counts.kept_per_site[host],
                             "delay": max(self.settings.delay, max((rules.crawl_delay for o, rules in
                                                                     self.fetcher.rules.items() if host_key(o) == host),
                                                                    default=0.0))}
                      for host in sorted(hosts)},
            "footage": counts.footage,
        }


def harvest(values: list[str], outdir: Path, settings: HarvestSettings) -> dict:
    sources = classify_sources(values, settings.frames)
    return Harvester(outdir, settings).run(sources)


def summary_lines(summary: dict, outdir: Path) -> list[str]:
    skipped = ", ".join(f"{reason} {count}" for reason, count in summary["skipped"].items()) or "none"
    lines = [f"kept {summary['kept']} of {summary['images_seen']} images seen into {outdir} "
             f"({summary['pages_visited']} pages visited); skipped: {skipped}"]
    if summary["pages_skipped"]:
        lines.append("pages not visited: " + ", ".join(f"{r} {n}" for r, n in summary["pages_skipped"].items()))
    for path, report in summary["footage"].items():
        lines.append(f"footage {display_name(path)}: {report['frames']} frames, {report['tracks']} tracks")
    return lines
