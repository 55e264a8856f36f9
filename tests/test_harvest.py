"""`facedeblur train harvest` end to end, on real inputs: a website served on 127.0.0.1 by the test and
rendered by Debian's chromium, photo folders, the built-in sample clip, and `train prepare` on the result.

Face photos are the bundled sample's own face (scripts/make_sample.py: the astronaut photo, public domain),
sharp, in several sizes, mirrored and rotated so they are different photos to a perceptual hash.
"""
from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys
import threading
import time
import urllib.request
import zlib
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pytest

from facedeblur.inputs import SUPPORTED_INPUTS_DOC, VIDEO_EXTENSIONS
from browser_support import needs_chromium
from cli_support import one_error_line
from footage_support import make_sample

REPO = Path(__file__).resolve().parent.parent
SAMPLE_CLIP = REPO / "src" / "facedeblur" / "sample" / "sample-clip.mp4"
LICENCE = "https://creativecommons.org/licenses/by/4.0/"


def facedeblur(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "facedeblur.cli", *args], capture_output=True, text=True,
                            cwd=REPO, timeout=300)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def portrait(height: int, background: tuple[int, int, int], mirror: bool = False, angle: float = 0.0,
             blur: float = 0.0, wide: bool = False) -> np.ndarray:
    """The sample's face, sharp, on a plain background with room around the head (`wide`: the head at the
    left of a wide picture, a different composition for the perceptual hash)."""
    head = make_sample.astronaut_head(height)
    if mirror:
        head = np.ascontiguousarray(head[:, ::-1])
    pad = height // 3
    image = cv2.copyMakeBorder(head, pad, pad, pad, pad + (2 * height if wide else 0), cv2.BORDER_CONSTANT,
                               value=background)
    if angle:
        centre = (image.shape[1] / 2, image.shape[0] / 2)
        image = cv2.warpAffine(image, cv2.getRotationMatrix2D(centre, angle, 1.0), image.shape[1::-1],
                               borderMode=cv2.BORDER_REPLICATE)
    return cv2.GaussianBlur(image, (0, 0), blur) if blur else image


def jpeg(image: np.ndarray, quality: int = 95) -> bytes:
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()


def png(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()


def decompression_bomb() -> bytes:
    """A PNG whose header declares 40000 x 40000 pixels (4.8 GB as BGR): refused from the header, never decoded."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    header = struct.pack(">IIBBBBB", 40000, 40000, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b"")


def scene_without_face() -> np.ndarray:
    return make_sample.background(400, 300, np.random.default_rng(5))


# ---------------------------------------------------------------------------------------------------------
# The local website
# ---------------------------------------------------------------------------------------------------------

GALLERY = """<!doctype html><html><head><title>Gallery</title>
<link rel="license" href="%(licence)s"></head>
<body><h1>Team photos</h1>
<a href="page2.html">more photos</a> <a href="/private/secret.html">staff only</a>
<a href="http://example.invalid/elsewhere.html">elsewhere</a> <a href="file:///etc/passwd">local</a>
<a href="javascript:void(0)">nothing</a>
<div id="gallery"></div><div style="height: 4000px"></div><div id="more"></div>
<script>
const names = ['face-a.jpg', 'face-b.png', 'face-a-copy.jpg', 'notes.jpg', 'missing.jpg', 'bomb.png',
               'away.jpg', '../private/face-private.jpg'];
window.addEventListener('load', () => setTimeout(() => {
  for (const name of names) {
    const img = document.createElement('img'); img.src = 'img/' + name; img.alt = name;
    document.getElementById('gallery').appendChild(img);
  }
}, 30));
let loaded = false;
window.addEventListener('scroll', () => {   // lazy loading: the rest only when scrolled to the bottom
  if (loaded || window.innerHeight + window.scrollY < document.body.offsetHeight - 100) return;
  loaded = true;
  for (const name of ['landscape.jpg', 'blurred.jpg']) {
    const img = document.createElement('img'); img.setAttribute('data-src', 'img/' + name); img.loading = 'lazy';
    document.getElementById('more').appendChild(img);
  }
});
</script></body></html>
"""

PAGE2 = """<!doctype html><html><head><title>More</title></head><body>
<img src="http://localhost:%(port)d/img/face-d.jpg"> <img src="img/face-c.jpg"> <img src="img/face-a-small.jpg"> <img src="img/tiny.jpg">
<a href="img/huge.jpg">full size</a> <a href="gallery.html">back</a> <a href="page3.html">even more</a>
<iframe src="/private/secret.html"></iframe><script src="/private/stats.js"></script>
</body></html>
"""

PAGE3 = """<!doctype html><html><body><img src="img/face-d.jpg"></body></html>"""
SECRET = """<!doctype html><html><body><img src="face-private.jpg"></body></html>"""
ROBOTS = """User-agent: *
Disallow: /

User-agent: facedeblur-harvester
Disallow: /private/
Crawl-delay: 0.05
"""


class SiteHandler(SimpleHTTPRequestHandler):
    """Serves the site folder, logs every request (the proof of what was fetched), and a few special routes."""

    requests: list[tuple[str, str]] = []

    def log_message(self, *args) -> None:  # keep the test output clean
        pass

    def do_GET(self) -> None:
        self.requests.append((self.path, self.headers.get("User-Agent", "")))
        if self.path == "/img/away.jpg":  # a redirect off the web, to a local file
            self.send_response(302)
            self.send_header("Location", "file:///etc/passwd")
            self.end_headers()
            return
        if self.path == "/img/huge.jpg":  # 3 MB of "JPEG" with no Content-Length: only reading tells its size
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.end_headers()
            try:
                self.wfile.write(b"\xff\xd8\xff\xe0")
                for _ in range(48):
                    self.wfile.write(b"\0" * 65536)
            except (BrokenPipeError, ConnectionResetError):
                pass
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture(scope="module")
def website(tmp_path_factory):
    root = tmp_path_factory.mktemp("site")
    handler = type("Handler", (SiteHandler,), {"requests": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), lambda *a, **k: handler(*a, directory=str(root), **k))
    port = server.server_address[1]
    (root / "img").mkdir()
    (root / "private").mkdir()
    face_a = jpeg(portrait(240, (90, 110, 130)))
    files = {
        "gallery.html": (GALLERY % {"licence": LICENCE}).encode(),
        "page2.html": (PAGE2 % {"port": port}).encode(),
        "page3.html": PAGE3.encode(),
        "robots.txt": ROBOTS.encode(),
        "img/face-a.jpg": face_a,
        "img/face-a-copy.jpg": face_a,
        "img/face-a-small.jpg": jpeg(cv2.resize(portrait(240, (90, 110, 130)), None, fx=0.7, fy=0.7,
                                                interpolation=cv2.INTER_AREA), quality=70),
        "img/face-b.png": png(portrait(200, (40, 160, 60), mirror=True)),
        "img/face-c.jpg": jpeg(portrait(260, (150, 60, 140), angle=10)),
        "img/face-d.jpg": jpeg(portrait(220, (30, 30, 200), mirror=True, angle=-8)),
        "img/notes.jpg": b"<html><body>not a photo</body></html>",
        "img/bomb.png": decompression_bomb(),
        "img/landscape.jpg": jpeg(scene_without_face()),
        "img/blurred.jpg": jpeg(portrait(240, (200, 200, 90), mirror=True, blur=4, wide=True)),
        "img/tiny.jpg": jpeg(portrait(60, (120, 120, 120), wide=True)),
        "private/secret.html": SECRET.encode(),
        "private/face-private.jpg": jpeg(portrait(230, (10, 90, 90))),
    }
    for name, data in files.items():
        (root / name).write_bytes(data)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{port}", handler.requests
    server.shutdown()
    server.server_close()


def read_provenance(outdir: Path) -> list[dict]:
    return [json.loads(line) for line in (outdir / "provenance.jsonl").read_text().splitlines()]


@pytest.mark.slow
@needs_chromium
def test_website_harvest_counts_robots_provenance_and_prepare(website, tmp_path):
    pytest.importorskip("selenium", reason="pip install selenium (the train extra)")
    base, requests = website
    requests.clear()
    out = tmp_path / "harvest"
    result = facedeblur("train", "harvest", f"{base}/gallery.html", "-o", str(out), "--delay", "0",
                        "--max-bytes", "2000000", "--no-progress")
    summary = json.loads((out / "summary.json").read_text())

    # Every kind of bad image was seen and counted under its reason; the three good faces were kept.
    assert summary["kept"] == 3, summary
    assert summary["skipped"] == {"robots": 1, "duplicate": 2, "no face": 1, "too small": 1, "too blurred": 1,
                                  "too large": 2, "not an image": 1, "HTTP error": 1, "not http(s)": 1,
                                  "private address": 1}, summary
    assert summary["images_seen"] == 15
    assert summary["pages_visited"] == 2  # gallery and page2; page3 is two links away (--depth 1)
    assert summary["pages_skipped"] == {"robots": 1}  # /private/secret.html
    host = base.split("//")[1]
    assert summary["sites"][host] == {"kept": 3, "delay": 0.05}  # robots.txt's Crawl-delay beat --delay 0
    assert "kept 3 of 15 images" in result.stdout and "robots 1" in result.stdout
    reasons = {Path(item["source"]).name: item["reason"]
               for item in map(json.loads, (out / "skipped.jsonl").read_text().splitlines())}
    assert reasons == {"face-a-copy.jpg": "duplicate", "face-a-small.jpg": "duplicate", "notes.jpg": "not an image",
                       "missing.jpg": "HTTP error", "bomb.png": "too large", "huge.jpg": "too large",
                       "away.jpg": "not http(s)", "face-private.jpg": "robots", "landscape.jpg": "no face",
                       "blurred.jpg": "too blurred", "tiny.jpg": "too small",
                       "face-d.jpg": "private address"}  # localhost: loopback, and not the host the user gave

    # The server's log: nothing under /private/ (not even the iframe and script the browser would load), nothing beyond the depth, robots.txt read once, each image
    # fetched once, every request made as facedeblur-harvester.
    paths = [path for path, _ in requests]
    assert not [p for p in paths if p.startswith("/private/")], paths
    assert "/page3.html" not in paths and "/img/face-d.jpg" not in paths
    assert paths.count("/robots.txt") == 1
    assert paths.count("/img/face-a.jpg") == 1
    assert "/img/landscape.jpg" in paths  # inserted only after scrolling
    assert all("facedeblur-harvester" in agent for _, agent in requests), requests
    # A plain HTTP fetch of the gallery finds no image: only the rendered page has them.
    with urllib.request.urlopen(f"{base}/gallery.html") as response:
        assert "<img" not in response.read().decode()

    records = {Path(r["url"]).name: r for r in read_provenance(out)}
    assert set(records) == {"face-a.jpg", "face-b.png", "face-c.jpg"}
    for name, record in records.items():
        kept = out / record["file"]
        assert hashlib.sha256(kept.read_bytes()).hexdigest() == record["sha256"]
        assert record["width"] > 0 and record["height"] > 0
        assert record["face_size"] >= 64 and record["sharpness"] >= 150
        assert record["fetched_at"].endswith("Z")
    assert records["face-a.jpg"]["page"] == f"{base}/gallery.html"
    assert records["face-a.jpg"]["licence"] == LICENCE
    assert records["face-c.jpg"]["page"] == f"{base}/page2.html"
    assert records["face-c.jpg"]["licence"] is None
    assert (out / records["face-b.png"]["file"]).suffix == ".png"

    # The output folder goes straight into `train prepare`, which finds the same three faces.
    prepared = facedeblur("train", "prepare", str(out), "-o", str(tmp_path / "cache"), "--workers", "1")
    index = json.loads((tmp_path / "cache" / "index.json").read_text())
    assert index["summary"]["counts"] == {"train": 3, "val": 0}, prepared.stdout


@pytest.mark.slow
def test_url_list_checks_every_hop_and_robots_without_a_browser(website, tmp_path):
    """A text file of image URLs: fetched directly, with the same checks (robots, redirects, content)."""
    base, requests = website
    requests.clear()
    listing = tmp_path / "urls.txt"
    listing.write_text("\n".join([
        "# photos we may use", f"{base}/img/face-a.jpg", f"{base}/img/face-a-copy.jpg", f"{base}/img/away.jpg",
        f"{base}/private/face-private.jpg", f"{base}/img/notes.jpg", "file:///etc/passwd", "ftp://example.invalid/x.jpg",
        "", f"{base}/img/face-d.jpg"]) + "\n")
    out = tmp_path / "out"
    facedeblur("train", "harvest", str(listing), "-o", str(out), "--delay", "0", "--no-progress")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kept"] == 2 and summary["images_seen"] == 8
    assert summary["skipped"] == {"robots": 1, "duplicate": 1, "not an image": 1, "not http(s)": 3}, summary
    assert not [path for path, _ in requests if path.startswith("/private/")]
    records = read_provenance(out)
    assert [Path(r["url"]).name for r in records] == ["face-a.jpg", "face-d.jpg"]
    assert all(r["page"] is None and r["licence"] is None for r in records)


def write_photo_folder(folder: Path) -> dict[str, bytes]:
    folder.mkdir()
    (folder / "album").mkdir()
    photos = {
        "one.jpg": jpeg(portrait(240, (90, 110, 130))),
        "album/two.png": png(portrait(200, (40, 160, 60), mirror=True)),
        "album/three-again.jpg": jpeg(portrait(240, (90, 110, 130))),   # the same bytes as one.jpg
        "bomb.png": decompression_bomb(),
        "empty-room.jpg": jpeg(scene_without_face()),
    }
    for name, data in photos.items():
        (folder / name).write_bytes(data)
    # A name that is not UTF-8 (a camera card from an old system), and a link out of the folder.
    (folder / os.fsdecode(b"caf\xe9.jpg")).write_bytes(jpeg(portrait(260, (150, 60, 140), angle=10)))
    (folder / "link.jpg").symlink_to("/etc/passwd")
    return photos


@pytest.mark.slow
def test_photo_folder_harvest_runs_through_prepare_and_a_rerun_adds_nothing(tmp_path):
    photos = tmp_path / "photos"
    write_photo_folder(photos)
    out = photos / "harvested"  # inside the source: must not be read back as photos
    facedeblur("train", "harvest", str(photos), "-o", str(out), "--no-progress")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kept"] == 3, summary
    assert summary["skipped"] == {"duplicate": 1, "no face": 1, "too large": 1, "unreadable": 1}, summary
    records = read_provenance(out)
    assert sorted(Path(r["path"]).name for r in records) == ["caf\\xe9.jpg", "one.jpg", "two.png"]
    for record in records:
        assert hashlib.sha256((out / record["file"]).read_bytes()).hexdigest() == record["sha256"]
        assert "url" not in record and record["face_size"] >= 64

    facedeblur("train", "prepare", str(out), "-o", str(tmp_path / "cache"), "--workers", "1")
    index = json.loads((tmp_path / "cache" / "index.json").read_text())
    assert index["summary"]["counts"] == {"train": 3, "val": 0}

    # Again into the same OUTDIR: every photo is already there, nothing is added or lost.
    facedeblur("train", "harvest", str(photos), "-o", str(out), "--no-progress")
    again = json.loads((out / "summary.json").read_text())
    assert again["kept"] == 0 and again["kept_total"] == 3 and again["skipped"]["duplicate"] == 4
    assert len(read_provenance(out)) == 3


@pytest.mark.slow
def test_sample_clip_and_its_frame_folder_give_the_best_frames_of_the_track(tmp_path):
    """The built-in sample clip (one person, 42 blurred CCTV-like frames, a 48 px face): at the defaults no
    frame is a clean training face; with the thresholds lowered to the clip's own quality it gives the best
    --per-track frames, which `train prepare` accepts at a crop size that fits the face. The same clip as a
    frame folder adds nothing: its faces are exact copies."""
    out = tmp_path / "strict"
    facedeblur("train", "harvest", str(SAMPLE_CLIP), "-o", str(out), "--no-progress")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kept"] == 0 and summary["skipped"] == {"too small": 1}
    assert summary["footage"][str(SAMPLE_CLIP)] == {"frames": 42, "tracks": 1}

    frames = tmp_path / "frames"
    frames.mkdir()
    import av
    with av.open(str(SAMPLE_CLIP)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            cv2.imwrite(str(frames / f"frame{index}.png"), frame.to_ndarray(format="bgr24"))
    out = tmp_path / "lenient"
    facedeblur("train", "harvest", str(SAMPLE_CLIP), str(frames), "--frames", "-o", str(out), "--no-progress",
               "--min-face-size", "40", "--min-sharpness", "15", "--per-track", "3")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kept"] == 3 and summary["skipped"] == {"duplicate": 3}, summary
    records = read_provenance(out)
    chosen = sorted(r["frame"] for r in records)
    assert len(set(chosen)) == 3 and chosen[-1] - chosen[0] >= 14  # spread over the track, not neighbours
    for record in records:
        assert record["path"] == str(SAMPLE_CLIP) and record["track"] == 1
        assert record["source_sha256"] == hashlib.sha256(SAMPLE_CLIP.read_bytes()).hexdigest()
        assert record["sharpness"] >= 15 and record["face_size"] >= 40
        assert hashlib.sha256((out / record["file"]).read_bytes()).hexdigest() == record["sha256"]

    facedeblur("train", "prepare", str(out), "-o", str(tmp_path / "cache"), "--workers", "1", "--crop-size", "64")
    index = json.loads((tmp_path / "cache" / "index.json").read_text())
    assert index["summary"]["counts"] == {"train": 3, "val": 0}


@pytest.mark.slow
@pytest.mark.parametrize("source, needle", [
    ("ftp://example.invalid/gallery", "only http:// and https://"),
    ("file:///etc/passwd", "only http:// and https://"),
    ("http://user:secret@example.invalid/", "credentials"),
    ("no-such-folder", "not found"),
])
def test_unusable_sources_fail_in_one_line_before_anything_is_written(tmp_path, source, needle):
    result = facedeblur("train", "harvest", source, "-o", str(tmp_path / "out"), check=False)
    one_error_line(result, needle)
    assert not (tmp_path / "out" / "provenance.jsonl").exists()


@pytest.mark.slow
def test_a_binary_file_is_not_taken_for_a_url_list(tmp_path):
    blob = tmp_path / "data.bin"
    blob.write_bytes(b"\xff\xfe\x00binary")
    line = one_error_line(facedeblur("train", "harvest", str(blob), "-o", str(tmp_path / "out"), check=False),
                          "data.bin: not a UTF-8 text file of URLs", SUPPORTED_INPUTS_DOC)
    assert not any(ext in line for ext in VIDEO_EXTENSIONS)   # listed once, in the docs the message points to


@pytest.mark.slow
def test_max_images_stops_the_harvest_and_nothing_more_is_fetched(website, tmp_path):
    base, requests = website
    requests.clear()
    listing = tmp_path / "urls.txt"
    listing.write_text(f"{base}/img/face-a.jpg\n{base}/img/face-b.png\n{base}/img/face-c.jpg\n")
    out = tmp_path / "out"
    facedeblur("train", "harvest", str(listing), "-o", str(out), "--delay", "0", "--max-images", "1", "--no-progress")
    assert json.loads((out / "summary.json").read_text())["kept"] == 1
    assert [path for path, _ in requests if path.startswith("/img/")] == ["/img/face-a.jpg"]


def test_robots_rules_for_the_harvester():
    """robots.txt as real sites write it: groups, wildcards, fractional Crawl-delay."""
    from facedeblur.harvest.politeness import SiteRules

    rules = SiteRules("User-agent: *\nDisallow: /\n\nUser-agent: FaceDeblur-Harvester\nDisallow: /*.php\n"
                      "Disallow: /tmp$\nAllow: /\nCrawl-delay: 2.5\n")
    assert rules.crawl_delay == 2.5
    assert rules.allowed("http://h/photos/a.jpg")
    assert not rules.allowed("http://h/photos/list.php?page=2")
    assert not rules.allowed("http://h/tmp") and rules.allowed("http://h/tmp/a.jpg")
    assert SiteRules("User-agent: *\nDisallow: /private/\n").disallowed_paths() == ["/private/"]
    assert not SiteRules(None, deny_all=True).allowed("http://h/a.jpg")


@pytest.mark.slow
def test_a_server_error_on_robots_txt_keeps_the_harvester_off_the_host(tmp_path):
    """RFC 9309: robots.txt unreachable (5xx) means disallow everything, so not even the image is requested."""
    from facedeblur.harvest.checks import Skipped
    from facedeblur.harvest.fetch import Fetcher
    from facedeblur.harvest.settings import HarvestSettings

    seen = []

    class Failing(SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            seen.append(self.path)
            self.send_error(503)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        fetcher = Fetcher(HarvestSettings(delay=0))
        url = f"http://127.0.0.1:{server.server_address[1]}/a.jpg"
        fetcher.named_hosts.add(url.split("/")[2])
        with pytest.raises(Skipped) as refused:
            fetcher.get(url)
        assert refused.value.reason == "robots"
        assert seen == ["/robots.txt"]
    finally:
        server.shutdown()
        server.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def serve_locally(files: dict[str, bytes], root: Path, handler=_QuietHandler) -> tuple[str, ThreadingHTTPServer]:
    """A real HTTP server on 127.0.0.1 serving `files` from `root` (stop it with .shutdown()/.server_close())."""
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    server = ThreadingHTTPServer(("127.0.0.1", 0), lambda *a, **k: handler(*a, directory=str(root), **k))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}", server


def harvest_within(seconds: float, *args: str) -> subprocess.CompletedProcess:
    """The harvester CLI, failing the test when it has not finished after `seconds` (a stalled harvest)."""
    try:
        result = subprocess.run([sys.executable, "-m", "facedeblur.cli", "train", "harvest", *args],
                                capture_output=True, text=True, cwd=REPO, timeout=seconds)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"the harvest did not finish within {seconds} s") from None
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_robots_wildcards_cannot_stall_the_harvest(tmp_path):
    """`Disallow: /*a*a*a*a*a*a*a*a*a*a*b` as a regular expression backtracks for hours on a path of 60 a's;
    the harvester matches RFC 9309 patterns without backtracking, so the photo is fetched at once."""
    rule = "/" + "*a" * 10 + "*b"
    files = {"robots.txt": f"User-agent: *\nDisallow: {rule}\nDisallow: /x**********y\n".encode(),
             "img/" + "a" * 60 + ".jpg": jpeg(portrait(240, (90, 110, 130))),
             "img/aaaaaaaaaab.jpg": jpeg(portrait(200, (40, 160, 60), mirror=True))}
    base, server = serve_locally(files, tmp_path / "site")
    try:
        listing = tmp_path / "urls.txt"
        listing.write_text(f"{base}/img/{'a' * 60}.jpg\n{base}/img/aaaaaaaaaab.jpg\n")
        out = tmp_path / "out"
        harvest_within(120, str(listing), "-o", str(out), "--delay", "0", "--no-progress")
    finally:
        server.shutdown()
        server.server_close()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kept"] == 1 and summary["skipped"] == {"robots": 1}, summary


def test_robots_rules_are_collapsed_and_capped():
    from facedeblur.harvest.politeness import MAX_RULE_LENGTH, SiteRules

    rules = SiteRules("User-agent: *\nDisallow: /a**b\nDisallow: /c***$\n"
                      f"Disallow: /long{'*x' * MAX_RULE_LENGTH}$\n")
    paths = rules.disallowed_paths()
    assert paths[:2] == ["/a*b", "/c*$"]
    assert len(paths[2]) == MAX_RULE_LENGTH and not paths[2].endswith("$")   # cut: blocks more, never less
    assert not rules.allowed("http://h/a-to-b") and not rules.allowed("http://h/c/anything")
    assert not rules.allowed("http://h/long" + "yx" * MAX_RULE_LENGTH)
    assert rules.allowed("http://h/a-only") and rules.allowed("http://h/lon")


def test_a_dribbling_server_is_cut_off_at_the_timeout(tmp_path):
    """A server that sends one byte every half second: read(64 KiB) would wait for all of it; the fetch must
    hang up once --timeout has passed, long before the server is done dribbling."""
    from facedeblur.harvest.checks import Skipped
    from facedeblur.harvest.fetch import Fetcher
    from facedeblur.harvest.settings import HarvestSettings

    sent: list[int] = []

    class Dribbling(_QuietHandler):
        def do_GET(self) -> None:
            if self.path == "/robots.txt":
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.end_headers()
            count = 0
            try:
                for _ in range(120):                                  # a minute of dribbling at most
                    self.wfile.write(b"\xff")
                    self.wfile.flush()
                    count += 1
                    time.sleep(0.5)
            except (BrokenPipeError, ConnectionResetError):
                pass
            sent.append(count)
            self.close_connection = True

    base, server = serve_locally({}, tmp_path, Dribbling)
    try:
        fetcher = Fetcher(HarvestSettings(delay=0, timeout=3))
        fetcher.named_hosts.add(base.split("/")[2])
        with pytest.raises(Skipped) as refused:
            fetcher.get(f"{base}/slow.jpg")
        assert refused.value.reason == "HTTP error" and "timeout" in refused.value.detail
        deadline = time.monotonic() + 90
        while not sent and time.monotonic() < deadline:            # the server notices the hang-up on its next write
            time.sleep(0.2)
        assert sent and sent[0] < 120, sent                           # cut off while the server was still sending
    finally:
        server.shutdown()
        server.server_close()


def test_a_huge_crawl_delay_skips_the_host_instead_of_stalling_the_harvest(tmp_path):
    """`Crawl-delay: 86400` would hold every later source for a day per request: that host is skipped with a
    reason, and the photo folder after it is still harvested."""
    files = {"robots.txt": b"User-agent: *\nCrawl-delay: 86400\n",
             "img/face-a.jpg": jpeg(portrait(240, (90, 110, 130))),
             "img/face-b.jpg": jpeg(portrait(200, (40, 160, 60), mirror=True))}
    base, server = serve_locally(files, tmp_path / "site")
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "c.jpg").write_bytes(jpeg(portrait(260, (150, 60, 140), angle=10)))
    try:
        listing = tmp_path / "urls.txt"
        listing.write_text(f"{base}/img/face-a.jpg\n{base}/img/face-b.jpg\n")
        out = tmp_path / "out"
        harvest_within(120, str(listing), str(photos), "-o", str(out), "--delay", "0", "--no-progress")
    finally:
        server.shutdown()
        server.server_close()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kept"] == 1 and summary["skipped"] == {"crawl-delay too long": 2}, summary
    detail = [json.loads(line)["detail"] for line in (out / "skipped.jsonl").read_text().splitlines()]
    assert all("86400 s" in d for d in detail), detail


ROGUE_PAGE = """<!doctype html><html><head><title>Rogue</title>
<link rel="stylesheet" href="%(private)s/style.css"><script src="%(private)s/script.js"></script></head>
<body><iframe src="%(private)s/frame.html"></iframe><div id="gallery"></div>
<script src="gallery.js"></script>
<script>
fetch('%(private)s/fetch', {mode: 'no-cors'}).catch(() => {});
navigator.sendBeacon('%(private)s/beacon', 'stolen');
</script></body></html>
"""
GALLERY_SCRIPT = b"""const img = document.createElement('img'); img.src = 'img/face-a.jpg';
document.getElementById('gallery').appendChild(img);"""


@needs_chromium
def test_the_browser_cannot_reach_a_private_host_the_harvester_refuses(tmp_path):
    """A page on the host the user named makes the browser ask a private host (loopback under another name,
    which the user did not give) for a script, a stylesheet, an iframe, a fetch and a sendBeacon POST. None of
    them may arrive there; the page's own script still runs and its photo is still harvested."""
    pytest.importorskip("selenium", reason="pip install selenium (the train extra)")
    seen: list[tuple[str, str]] = []

    class Private(_QuietHandler):
        def do_GET(self) -> None:
            seen.append(("GET", self.path))
            super().do_GET()

        def do_POST(self) -> None:
            seen.append(("POST", self.path))
            self.send_response(204)
            self.end_headers()

    private_base, private_server = serve_locally({"style.css": b"body{}", "script.js": b"1;",
                                                  "frame.html": b"<p>inside</p>"}, tmp_path / "private", Private)
    private = private_base.replace("127.0.0.1", "localhost")
    base, server = serve_locally({"page.html": (ROGUE_PAGE % {"private": private}).encode(),
                                  "gallery.js": GALLERY_SCRIPT, "img/face-a.jpg": jpeg(portrait(240, (90, 110, 130)))},
                                 tmp_path / "site")
    try:
        out = tmp_path / "out"
        harvest_within(240, f"{base}/page.html", "-o", str(out), "--delay", "0", "--no-progress")
    finally:
        for running in (server, private_server):
            running.shutdown()
            running.server_close()
    assert seen == [], seen
    summary = json.loads((out / "summary.json").read_text())
    assert summary["kept"] == 1 and summary["pages_visited"] == 1, summary


def _rebinding_dns(monkeypatch, name: str) -> list[str]:
    """The DNS of an attacker's domain `name`: a public address for the first question, loopback for every later
    one (DNS rebinding). Other names resolve as usual. Returns the answers given, in order."""
    import socket

    real = socket.getaddrinfo
    answers: list[str] = []

    def resolve(host, port, *args, **kwargs):
        if host != name:
            return real(host, port, *args, **kwargs)
        answers.append("93.184.215.14" if not answers else "127.0.0.1")
        return [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (answers[-1], int(port)))]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    return answers


def test_a_name_that_rebinds_to_loopback_is_never_connected_to(tmp_path, monkeypatch):
    """A public name whose DNS answers a public address for the harvester's check and loopback for the
    connection: neither the harvester's own requests nor its browser's (through the checking proxy, plain
    http and a CONNECT tunnel) may reach the local server."""
    import http.client

    from facedeblur.harvest.browser_proxy import GuardProxy
    from facedeblur.harvest.checks import PRIVATE_ADDRESS, Skipped
    from facedeblur.harvest.fetch import Fetcher
    from facedeblur.harvest.settings import HarvestSettings

    seen: list[str] = []

    class Recording(_QuietHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            super().do_GET()

    base, server = serve_locally({"robots.txt": b"", "face.jpg": jpeg(portrait(200, (90, 110, 130)))},
                                 tmp_path / "site", Recording)
    port = int(base.rsplit(":", 1)[1].split("/")[0])
    url = f"http://rebind.test:{port}/face.jpg"
    try:
        answers = _rebinding_dns(monkeypatch, "rebind.test")
        with pytest.raises(Skipped):
            Fetcher(HarvestSettings(delay=0, timeout=3)).get(url)
        assert answers[:2] == ["93.184.215.14", "127.0.0.1"], answers  # the connection did ask again

        fetcher = Fetcher(HarvestSettings(delay=0, timeout=3))
        with pytest.raises(Skipped) as refused:
            fetcher.open_connection("rebind.test", port, 3)
        assert refused.value.reason == PRIVATE_ADDRESS

        answers.clear()
        fetcher = Fetcher(HarvestSettings(delay=0, timeout=3))
        fetcher.refuse_private_address(url)  # the check's own question: answered with the public address
        proxy = GuardProxy(fetcher.refuse_private_address, fetcher.refuse_private_address, fetcher.open_connection, 3)
        try:
            host, proxy_port = proxy.address.split(":")
            for method, target in (("GET", url), ("CONNECT", f"rebind.test:{port}")):
                asked = len(answers)
                client = http.client.HTTPConnection(host, int(proxy_port), timeout=5)
                client.request(method, target)
                assert client.getresponse().status == 403, method
                client.close()
                assert answers[asked:] == ["127.0.0.1"], (method, answers)  # refused at the connection
        finally:
            proxy.close()
    finally:
        server.shutdown()
        server.server_close()
    assert seen == [], seen
