"""`facedeblur restore` end to end: the real CLI in a subprocess, real images, real ONNX models."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

skimage_data = pytest.importorskip("skimage.data")

from facedeblur.defaults import SFACE_FILE, YUNET_FILE, bundled_model_path  # noqa: E402
from facedeblur.pipeline.detect import FaceDetector  # noqa: E402
from facedeblur.pipeline.restore import PACKAGED_MODELS, FaceRestorer, default_model_path, resolve_model  # noqa: E402
from cli_support import one_error_line  # noqa: E402
from facedeblur.errors import FacedeblurError  # noqa: E402

CLI_TIMEOUT_S = 180


def run_restore(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "facedeblur", "restore", *map(str, args)],
                          capture_output=True, text=True, timeout=CLI_TIMEOUT_S)


def files_in(folder: Path) -> list[str]:
    """Every file left in a folder, hidden temporaries included."""
    return sorted(p.name for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    """The astronaut (one face) in three formats, a face-less photo, and a folder of both."""
    root = tmp_path_factory.mktemp("restore-inputs")
    astronaut = cv2.cvtColor(skimage_data.astronaut(), cv2.COLOR_RGB2BGR)
    coffee = cv2.cvtColor(skimage_data.coffee(), cv2.COLOR_RGB2BGR)
    paths = {"png": root / "astronaut.png", "jpg": root / "astronaut_jpg.jpg", "webp": root / "astronaut_webp.webp",
             "noface": root / "coffee.png"}
    cv2.imwrite(str(paths["png"]), astronaut)
    cv2.imwrite(str(paths["jpg"]), astronaut, [cv2.IMWRITE_JPEG_QUALITY, 90])
    cv2.imwrite(str(paths["webp"]), astronaut, [cv2.IMWRITE_WEBP_QUALITY, 90])
    cv2.imwrite(str(paths["noface"]), coffee)
    folder = root / "folder"
    folder.mkdir()
    cv2.imwrite(str(folder / "portrait.png"), astronaut[::2, ::2])
    cv2.imwrite(str(folder / "mug.jpg"), coffee)
    paths["folder"] = folder
    # A roughly centred face crop for --aligned, non-square on purpose.
    paths["aligned"] = root / "face_crop.png"
    cv2.imwrite(str(paths["aligned"]), astronaut[30:230, 120:320][:, :190])
    return paths


@pytest.fixture(scope="module")
def inverting_model(tmp_path_factory) -> Path:
    """A facedeblur-format model with known behaviour (output = 1 - input), exported by the trainer's code;
    it changes the face a lot, so paste-back effects are visible."""
    torch = pytest.importorskip("torch")
    from facedeblur.trainer.export import export_onnx

    class InvertColours(torch.nn.Module):
        def forward(self, x):
            return 1.0 - x

    path = tmp_path_factory.mktemp("models") / "invert.onnx"
    export_onnx(InvertColours(), path, {"name": "invert-test", "version": "test"}, crop_size=128)
    return path


@pytest.mark.slow
def test_every_input_written_at_its_size_and_faceless_image_unchanged(images, tmp_path):
    out = tmp_path / "out"
    result = run_restore(images["png"], images["jpg"], images["webp"], images["noface"], images["folder"], "-o", out)
    assert result.returncode == 0, result.stderr
    expected = {"astronaut", "astronaut_jpg", "astronaut_webp", "coffee", "portrait", "mug"}
    assert files_in(out) == sorted(f"{stem}.png" for stem in expected)
    sources = {"astronaut": images["png"], "astronaut_jpg": images["jpg"], "astronaut_webp": images["webp"],
               "coffee": images["noface"], "portrait": images["folder"] / "portrait.png",
               "mug": images["folder"] / "mug.jpg"}
    for stem, source in sources.items():
        original = cv2.imread(str(source), cv2.IMREAD_COLOR)
        written = cv2.imread(str(out / f"{stem}.png"), cv2.IMREAD_COLOR)
        assert written.shape == original.shape, stem
    # Images without a face are written unchanged (bit-identical) and reported.
    for stem in ("coffee", "mug"):
        assert np.array_equal(cv2.imread(str(out / f"{stem}.png")), cv2.imread(str(sources[stem]))), stem
        assert f"{sources[stem]}: no face found" in result.stderr
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith("restored 4 face(s) in 6 image(s), 2 without a face, 0 failed"), summary


def test_aligned_mode_restores_whole_crop_at_its_size(images, inverting_model, tmp_path):
    out = tmp_path / "out"
    result = run_restore(images["aligned"], "--aligned", "--model", inverting_model, "-o", out)
    assert result.returncode == 0, result.stderr
    original = cv2.imread(str(images["aligned"]))
    written = cv2.imread(str(out / "face_crop.png"))
    assert written.shape == original.shape
    # The whole crop goes through the model: corners change too, unlike the default mode's paste-back.
    corner = (slice(0, 20), slice(0, 20))
    assert np.abs(written[corner].astype(int) - original[corner].astype(int)).mean() > 5
    assert "restored 1 face(s) in 1 image(s)" in result.stdout


@pytest.fixture(scope="module")
def inverted_astronaut(images, inverting_model, tmp_path_factory) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(original, restored with the inverting model, detected face box)."""
    out = tmp_path_factory.mktemp("inverted") / "out"
    result = run_restore(images["png"], "--model", inverting_model, "-o", out)
    assert result.returncode == 0, result.stderr
    original = cv2.imread(str(images["png"]))
    restored = cv2.imread(str(out / "astronaut.png"))
    faces = FaceDetector().detect(original)
    assert len(faces) == 1
    return original, restored, faces[0].box


@pytest.mark.slow
def test_default_mode_leaves_pixels_away_from_the_face_bit_identical(inverted_astronaut):
    original, restored, box = inverted_astronaut
    centre = (box[:2] + box[2:]) / 2
    half = 1.75 * max(box[2] - box[0], box[3] - box[1])
    ys, xs = np.mgrid[0:original.shape[0], 0:original.shape[1]]
    far = (np.abs(xs - centre[0]) > half) | (np.abs(ys - centre[1]) > half)
    assert far.mean() > 0.5  # most of the 512x512 photo is far from the 90 px face
    assert np.array_equal(restored[far], original[far])
    changed = np.abs(restored.astype(int) - original.astype(int)).max(axis=2)
    assert changed[~far].max() > 60  # the model really did change the face


@pytest.mark.slow
def test_paste_back_has_no_seam(inverted_astronaut):
    """Where the changed region meets untouched pixels the change must be small (feathered), while it is
    large inside: a hard-edged paste would show the full change right next to unchanged pixels."""
    original, restored, _ = inverted_astronaut
    change = np.abs(restored.astype(np.float32) - original.astype(np.float32)).max(axis=2)
    touched = change > 0
    untouched_nearby = cv2.dilate((~touched).astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
    border = touched & untouched_nearby
    assert border.sum() > 50
    assert change.max() > 60
    # Feathered: ~7 levels at the edge of a change of ~250 (a hard-edged paste measures ~120 here).
    assert np.percentile(change[border], 99) <= 0.1 * change.max()


def test_failed_input_gives_non_zero_exit_but_good_inputs_are_written(images, tmp_path):
    not_an_image = tmp_path / "notes.png"
    not_an_image.write_text("this is not a picture\n")
    out = tmp_path / "out"
    result = run_restore(images["png"], not_an_image, "-o", out)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"facedeblur: error: {not_an_image}: not a readable image" in result.stderr
    assert files_in(out) == ["astronaut.png"]  # nothing for the bad input, no temporaries
    assert "1 failed" in result.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize("case", ["not_an_image", "missing", "empty_folder"])
def test_bad_input_alone_is_a_one_line_error_and_writes_nothing(case, tmp_path):
    if case == "not_an_image":
        target = tmp_path / "broken.jpg"
        target.write_bytes(os.urandom(2048))
        needle = "not a readable image"
    elif case == "missing":
        target = tmp_path / "nowhere.png"
        needle = "not found"
    else:
        target = tmp_path / "empty"
        target.mkdir()
        needle = "folder has no images"
    out = tmp_path / "out"
    result = run_restore(target, "-o", out)
    one_error_line(result, str(target), needle)
    assert files_in(out) == []


def bad_model(kind: str, tmp_path: Path) -> Path:
    if kind == "sface":
        return bundled_model_path(SFACE_FILE)
    if kind == "yunet":
        return bundled_model_path(YUNET_FILE)
    path = tmp_path / f"{kind}.onnx"
    if kind == "random_bytes":
        path.write_bytes(os.urandom(4096))
    else:  # a real facedeblur model cut short, as by an interrupted copy
        data = default_model_path().read_bytes()
        path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize("kind, needle", [("sface", "not a facedeblur restorer model"),
                                          ("yunet", "not a facedeblur restorer model"),
                                          ("random_bytes", "cannot load ONNX model"),
                                          ("truncated", "cannot load ONNX model")])
def test_model_that_is_not_ours_or_corrupt_is_refused_before_any_output(images, kind, needle, tmp_path):
    model = bad_model(kind, tmp_path)
    out = tmp_path / "out"
    result = run_restore(images["png"], "--model", model, "-o", out)
    one_error_line(result, str(model), needle)
    assert not out.exists()


def test_unwritable_output_folder_is_a_one_line_error(images, tmp_path):
    # Tests run as root, so permissions cannot make a folder unwritable; a path under a regular file can.
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = blocker / "out"
    result = run_restore(images["png"], "-o", out)
    one_error_line(result, str(out), "cannot be written")
    assert blocker.read_text() == "not a folder"
    assert files_in(tmp_path) == ["a-file"]


def test_packaged_models_are_chosen_by_name_and_a_missing_one_is_named(tmp_path):
    """`--model quality` / `restorer.model: quality`: names map to files in the package's models
    folder, anything else is a path, and a size this package does not ship is a clear error."""
    assert resolve_model(None) == resolve_model("default") == default_model_path()
    assert resolve_model(str(tmp_path / "mine.onnx")) == tmp_path / "mine.onnx"
    models = tmp_path / "models"
    models.mkdir()
    with pytest.raises(FacedeblurError, match="'quality' model is not in this facedeblur package"):
        resolve_model("quality", models)
    (models / PACKAGED_MODELS["quality"]).write_bytes(default_model_path().read_bytes())
    assert resolve_model("quality", models) == models / "facedeblur-quality.onnx"
    assert FaceRestorer(resolve_model("quality", models), provider="cpu").info.name == "facedeblur-default"
    from facedeblur.config import RestorerSettings
    assert RestorerSettings(model="quality").model == "quality"
    assert RestorerSettings(model="models/x.onnx").model == Path("models/x.onnx")


@pytest.mark.slow
def test_recursive_restores_subfolders_into_a_mirrored_tree_and_never_leaves_it(images, tmp_path):
    astronaut = cv2.imread(str(images["png"]))
    root = tmp_path / "photos"
    (root / "2024" / "june").mkdir(parents=True)
    (root / ".thumbnails").mkdir()
    cv2.imwrite(str(root / "2024" / "portrait.jpg"), astronaut[::2, ::2])
    shutil.copy(images["noface"], root / "2024" / "june" / "mug.png")
    cv2.imwrite(str(root / ".thumbnails" / "small.png"), astronaut[::4, ::4])      # hidden: not entered
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    cv2.imwrite(str(outside / "stranger.png"), astronaut)
    (root / "link").symlink_to(outside, target_is_directory=True)                  # not followed out of the tree
    out = root / "restored"                                                        # inside the input: skipped

    flat = run_restore(root, "-o", out)
    one_error_line(flat, str(root), "folder has no images", "--recursive")
    for _ in range(2):                                  # the second run must not read the first run's outputs
        result = run_restore(root, "--recursive", "-o", out)
        assert result.returncode == 0, result.stderr
        assert files_in(out) == ["mug.png", "portrait.png"]
        assert sorted(str(p.relative_to(out)) for p in out.rglob("*.png")) == ["2024/june/mug.png",
                                                                              "2024/portrait.png"]
        assert "restored 1 face(s) in 2 image(s), 1 without a face, 0 failed" in result.stdout
        assert "restoring" not in result.stderr         # no progress bar without a terminal
    assert cv2.imread(str(out / "2024" / "portrait.png")).shape == astronaut[::2, ::2].shape


def test_recursive_output_never_goes_through_a_planted_link(images, tmp_path):
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    shutil.copy(images["png"], root / "sub" / "astronaut.png")
    out, victim = tmp_path / "out", tmp_path / "victim"
    out.mkdir()
    victim.mkdir()
    (out / "sub").symlink_to(victim, target_is_directory=True)
    result = run_restore(root, "-r", "-o", out)
    assert result.returncode == 1
    assert f"{out / 'sub'} is a symbolic link" in result.stderr and "Traceback" not in result.stderr
    assert list(victim.iterdir()) == []


def test_restored_images_carry_the_ai_label_with_the_model_in_their_metadata(images, tmp_path):
    Image = pytest.importorskip("PIL.Image")
    from facedeblur.ai_label import RESTORED_NOTICE
    info = FaceRestorer(provider="cpu").info
    out = tmp_path / "out"
    result = run_restore(images["png"], images["noface"], "-o", out)
    assert result.returncode == 0, result.stderr
    with Image.open(out / "astronaut.png") as restored:                 # read back by an independent reader
        restored.load()
        for description in (restored.text["Description"], restored.getexif()[0x010E],
                            restored.getxmp()["xmpmeta"]["RDF"]["Description"]["description"]["Alt"]["li"]["text"]):
            assert description.startswith(RESTORED_NOTICE), description
            assert f"Model: {info.name} {info.version}" in description, description
        assert restored.text["Software"].startswith("facedeblur ")
    assert cv2.imread(str(out / "astronaut.png")).shape == cv2.imread(str(images["png"])).shape
    with Image.open(out / "coffee.png") as unchanged:                   # no face restored: no label
        unchanged.load()
        assert "Description" not in unchanged.text


def test_a_long_run_on_a_terminal_shows_a_progress_bar(images, tmp_path):
    """On a terminal (a real pseudo-terminal here) restore shows tqdm's bar over the images."""
    import fcntl
    import pty
    import struct
    import termios
    out = tmp_path / "out"
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))   # 24 rows, 100 columns
    process = subprocess.Popen([sys.executable, "-m", "facedeblur", "restore", str(images["png"]),
                                str(images["noface"]), str(images["folder"]), "-o", str(out)],
                               stdin=terminal, stdout=terminal, stderr=terminal)
    os.close(terminal)
    shown = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:                                 # EIO: the process closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    assert process.wait(timeout=CLI_TIMEOUT_S) == 0, shown.decode(errors="replace")
    os.close(controller)
    text = shown.decode(errors="replace")
    assert "restoring: 100%" in text and "4/4" in text, text
    assert "restored 2 face(s) in 4 image(s)" in text


def test_help_says_which_packaged_models_are_shipped():
    from facedeblur.defaults import packaged_models_dir
    result = subprocess.run([sys.executable, "-m", "facedeblur", "restore", "--help"], capture_output=True,
                            text=True, timeout=CLI_TIMEOUT_S)
    help_text = " ".join(result.stdout.split())
    for name, filename in PACKAGED_MODELS.items():
        shipped = (packaged_models_dir() / filename).is_file()
        assert (f"{name} (not shipped yet)" in help_text) == (not shipped), (name, help_text)
    assert (packaged_models_dir() / PACKAGED_MODELS["default"]).is_file() and "default," in help_text
