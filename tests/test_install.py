"""The installed environment runs on a minimal server: one headless OpenCV, one onnxruntime, no GUI
libraries needed, no caches written into $HOME."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

import facedeblur

SAMPLE_CLIP = Path(facedeblur.__file__).resolve().parent / "sample" / "sample-clip.mp4"
GUI_LIBRARIES = ("libGL.so.1", "libX11.so.6")  # what the GUI OpenCV wheel links (with Qt, which it bundles)


def installed_distributions(prefix: str) -> set[str]:
    names = set()
    for dist in metadata.distributions():
        name = (dist.metadata["Name"] or "").lower().replace("_", "-")
        if name.startswith(prefix):
            names.add(name)
    return names


def facedeblur_command() -> list[str]:
    entry = Path(sys.executable).parent / "facedeblur"
    return [str(entry)] if entry.exists() else [sys.executable, "-m", "facedeblur"]


def test_exactly_one_opencv_and_it_is_headless():
    assert installed_distributions("opencv-") == {"opencv-python-headless"}, (
        "several OpenCV wheels overwrite each other's cv2/; run ./scripts/setup-venv to keep only the headless one")
    import cv2

    build = cv2.getBuildInformation()
    gui = next(line for line in build.splitlines() if line.strip().startswith("GUI:"))
    assert gui.split(":", 1)[1].strip() == "NONE", gui


def test_exactly_one_onnxruntime():
    assert len(installed_distributions("onnxruntime")) == 1, installed_distributions("onnxruntime")


def gui_library_files() -> list[str]:
    """Files the dynamic loader would open for the GUI libraries (per `ldconfig -p`), resolved."""
    files = set()
    listing = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True).stdout \
        if shutil.which("ldconfig") else ""
    for line in listing.splitlines():
        name, _, path = line.strip().partition(" => ")
        if name.split(" ")[0] in GUI_LIBRARIES and os.path.exists(path):
            files.add(os.path.realpath(path))
    for folder in ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib/aarch64-linux-gnu",
                   "/usr/lib/aarch64-linux-gnu", "/lib64", "/usr/lib64", "/usr/lib"):
        for library in GUI_LIBRARIES:
            if os.path.exists(os.path.join(folder, library)):
                files.add(os.path.realpath(os.path.join(folder, library)))
    return sorted(files)


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="hiding libraries needs root (unshare -m)")
def test_process_runs_without_gui_libraries(tmp_path):
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is not installed")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"unshare -m does not work here: {probe.stderr.strip()[:200]}")
    hidden = gui_library_files()
    # In a private mount namespace (the host keeps its libraries), /dev/null stands in for each GUI library:
    # loading it fails as it would on a server without them. The probe proves they really are gone.
    script = "\n".join(["set -e", *(f"mount --bind /dev/null '{path}'" for path in hidden),
                        f"{sys.executable} -c \"import ctypes, sys\n"
                        "for name in sys.argv[1:]:\n"
                        "    try:\n        ctypes.CDLL(name)\n    except OSError:\n        print('hidden', name)\n"
                        f"\" {' '.join(GUI_LIBRARIES)}",
                        'exec "$@"'])
    out = tmp_path / "out"
    result = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", *facedeblur_command(), "process",
                             str(SAMPLE_CLIP), "-o", str(out), "--no-progress"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    for library in GUI_LIBRARIES:
        assert f"hidden {library}" in result.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["summary"]["tracks"] == 1 and (out / "restored.mp4").stat().st_size > 0


@pytest.mark.slow
def test_process_writes_no_cache_into_home_and_imports_no_plotting(tmp_path):
    """What the systemd unit relies on: with XDG_CACHE_HOME set (the unit points it into the state folder),
    nothing lands in $HOME; and nothing imports matplotlib (which writes its own cache) or supervision."""
    home, cache = tmp_path / "home", tmp_path / "cache"
    home.mkdir()
    env = {key: value for key, value in os.environ.items() if key not in ("MPLCONFIGDIR", "XDG_CONFIG_HOME")}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(cache))
    code = ("import sys\nfrom facedeblur.cli import main\n"
            f"status = main(['process', {str(SAMPLE_CLIP)!r}, '-o', {str(tmp_path / 'out')!r}, '--no-progress'])\n"
            "print('imported:', sorted(m for m in ('matplotlib', 'supervision', 'PyQt5') if m in sys.modules))\n"
            "sys.exit(status)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "imported: []" in result.stdout, result.stdout
    assert list(home.rglob("*")) == []
    unit = (Path(__file__).resolve().parents[1] / "systemd" / "facedeblur.service").read_text()
    assert "Environment=XDG_CACHE_HOME=/var/lib/facedeblur/" in unit
