"""Hostile inputs to the commands (`restore`, `process`): hostile inputs end in one clear line, never in lost data.

Real files and real `facedeblur` processes; docs/RELIABILITY.md (hostile-input table) lists the cases.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import data as skimage_data
from cli_support import one_error_line  # noqa: E402

pytestmark = pytest.mark.slow   # the real CLI on videos and large images

TIMEOUT = 180


def facedeblur(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "facedeblur", *map(str, args)], capture_output=True, text=True,
                          timeout=TIMEOUT)


def _photos(folder: Path) -> dict[str, bytes]:
    folder.mkdir(parents=True, exist_ok=True)
    astronaut = cv2.cvtColor(skimage_data.astronaut(), cv2.COLOR_RGB2BGR)[::2, ::2]
    cv2.imwrite(str(folder / "a.png"), astronaut)
    cv2.imwrite(str(folder / "b.png"), astronaut[:, ::-1])
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_restore_refuses_to_overwrite_its_inputs(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    originals = _photos(photos)
    # -o the input folder (also spelled differently, and through a link to it)
    os.symlink(photos, tmp_path / "link")
    for output in (photos, tmp_path / "photos" / ".." / "photos", tmp_path / "link"):
        one_error_line(facedeblur("restore", photos, "-o", output), "input folder")
    # a single input file whose output name is the file itself
    one_error_line(facedeblur("restore", photos / "a.png", "-o", photos), "replace the original")
    # the same file under another name (a hard link in the output folder)
    other = tmp_path / "out"
    other.mkdir()
    os.link(photos / "b.png", other / "b.png")
    one_error_line(facedeblur("restore", photos / "b.png", "-o", other), "replace the original")
    assert {p.name: p.read_bytes() for p in photos.iterdir()} == originals
    # a separate output folder still works
    result = facedeblur("restore", photos, "-o", tmp_path / "restored")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in (tmp_path / "restored").iterdir()) == ["a.png", "b.png"]


def test_outputs_follow_the_umask_and_the_unit_sets_one(tmp_path: Path) -> None:
    photo = tmp_path / "in" / "face.png"
    _photos(photo.parent)
    (photo.parent / "a.png").rename(photo)
    for umask, file_mode, dir_mode in ((0o027, 0o640, 0o750), (0o002, 0o664, 0o775)):
        out = tmp_path / f"out-{umask:o}"
        result = subprocess.run([sys.executable, "-m", "facedeblur", "process", str(photo), "-o", str(out),
                                 "--no-progress"], capture_output=True, text=True, timeout=TIMEOUT,
                                preexec_fn=lambda: os.umask(umask))
        assert result.returncode == 0, result.stderr
        assert out.stat().st_mode & 0o777 == dir_mode
        for name in ("manifest.json", "restored.png", "index.html"):
            assert (out / name).stat().st_mode & 0o777 == file_mode, name
        restored = tmp_path / f"restored-{umask:o}"
        result = subprocess.run([sys.executable, "-m", "facedeblur", "restore", str(photo), "-o", str(restored)],
                                capture_output=True, text=True, timeout=TIMEOUT, preexec_fn=lambda: os.umask(umask))
        assert result.returncode == 0, result.stderr
        assert (restored / "face.png").stat().st_mode & 0o777 == file_mode
    unit = (Path(__file__).resolve().parents[1] / "systemd" / "facedeblur.service").read_text(encoding="utf-8")
    assert "\nUMask=0027\n" in unit


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG whose header claims width x height, with a tiny (invalid) image body: decoding it would try to
    allocate width*height*3 bytes first."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def test_huge_images_are_refused_from_their_header(tmp_path: Path) -> None:
    huge = _png_header_only(tmp_path / "huge.png", 20000, 20000)
    line = one_error_line(facedeblur("process", huge, "-o", tmp_path / "out", "--no-progress"),
                          "20000x20000", "pipeline.max_image_pixels")
    assert "400 megapixels" in line
    assert not (tmp_path / "out").exists()
    one_error_line(facedeblur("restore", huge, "-o", tmp_path / "restored"), "20000x20000")
    # The limit is a setting: a real 256x256 photo is refused under a 50 000-pixel limit, and taken by default.
    photos = tmp_path / "photos"
    _photos(photos)
    config = tmp_path / "small.yaml"
    config.write_text("pipeline:\n  max_image_pixels: 50000\n", encoding="utf-8")
    one_error_line(facedeblur("process", photos / "a.png", "-o", tmp_path / "out2", "--config", config,
                              "--no-progress"), "256x256", "0.05 megapixels")
    assert facedeblur("process", photos / "a.png", "-o", tmp_path / "out3", "--no-progress").returncode == 0


def test_gallery_links_to_frames_with_awkward_names_are_url_encoded(tmp_path: Path) -> None:
    from urllib.parse import unquote
    import re
    frames = tmp_path / "frames"
    frames.mkdir()
    astronaut = cv2.cvtColor(skimage_data.astronaut(), cv2.COLOR_RGB2BGR)[::2, ::2]
    for i in range(1, 4):
        cv2.imwrite(str(frames / f"cam1 #{i}.png"), np.roll(astronaut, i, axis=1))
    out = tmp_path / "out"
    result = facedeblur("process", frames, "-o", out, "--no-progress")
    assert result.returncode == 0, result.stderr
    page = (out / "index.html").read_text(encoding="utf-8")
    links = re.findall(r'href="(restored/[^"]+)"', page)
    assert links and all("#" not in link and " " not in link for link in links), links
    assert all((out / unquote(link)).is_file() for link in links)


def test_commands_print_names_that_are_not_utf8_or_hold_control_characters(tmp_path: Path) -> None:
    root = os.fsencode(tmp_path)
    photos = _photos(tmp_path / "p")
    photo = os.path.join(root, b"caf\xe9\r.png")
    with open(photo, "wb") as handle:
        handle.write(photos["a.png"])
    output = os.path.join(root, b"out\xe9")
    result = subprocess.run([sys.executable, "-m", "facedeblur", "restore", photo, "-o", output],
                            capture_output=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stderr
    assert b"Traceback" not in result.stderr and b"out\\xe9" in result.stdout
    assert os.path.isfile(os.path.join(output, b"caf\xe9\r.png"))
    missing = os.path.join(root, b"gone\x1b[2J.png")
    result = subprocess.run([sys.executable, "-m", "facedeblur", "process", missing, "-o", output + b"2"],
                            capture_output=True, timeout=TIMEOUT)
    assert result.returncode == 2 and b"\x1b" not in result.stderr and b"gone\\x1b[2J.png" in result.stderr
