"""`facedeblur evaluate` on real faces, with the real detector, restorer, SFace and classical methods."""
from __future__ import annotations

import json
import math
import subprocess
import sys
import tarfile
from pathlib import Path

import cv2
import numpy as np
import pytest

skimage_data = pytest.importorskip("skimage.data")

from facedeblur.cli import main  # noqa: E402
from facedeblur.degradations import BLUR_CATEGORIES, CATEGORIES, SEVERITIES, degrade  # noqa: E402
from facedeblur.evaluation.classical import CLASSICAL_METHODS  # noqa: E402
from facedeblur.evaluation.faces import load_clean_faces  # noqa: E402
from facedeblur.evaluation.metrics import identity_similarities  # noqa: E402
from facedeblur.evaluation.runner import degradation_rng, split_case  # noqa: E402

CASES = [f"{c}/{s}" for s in SEVERITIES for c in CATEGORIES]
from facedeblur.pipeline.align import FACE_TEMPLATE, estimate_alignment, warp_to_crop  # noqa: E402
from facedeblur.pipeline.detect import FaceDetector  # noqa: E402
from facedeblur.pipeline.identity import IdentityEmbedder  # noqa: E402
from facedeblur.trainer.dataset import is_validation  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
AAF_VAL = REPO / ".." / "shared" / "data" / "aaf-val.tar"
CLI_TIMEOUT_S = 300


def run_evaluate(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "facedeblur", "evaluate", *map(str, args)],
                          capture_output=True, text=True, timeout=CLI_TIMEOUT_S)


def bgr(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)


@pytest.fixture(scope="module")
def astronaut_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("astronaut")
    cv2.imwrite(str(folder / "astronaut.png"), bgr(skimage_data.astronaut()))
    return folder


@pytest.fixture(scope="module")
def astronaut_report(astronaut_folder, tmp_path_factory) -> tuple[Path, dict, subprocess.CompletedProcess]:
    """Every category on the one face that ships with scikit-image, with the shipped model."""
    out = tmp_path_factory.mktemp("astronaut-report") / "report"
    result = run_evaluate(astronaut_folder, "-o", out, "--seed", "7")
    assert result.returncode == 0, result.stderr
    return out, json.loads((out / "report.json").read_text()), result


def assert_sane(metrics: dict) -> None:
    assert 5.0 < metrics["psnr"] <= 100.0, metrics
    assert -1.0 <= metrics["ssim"] <= 1.0, metrics
    assert -1.0 <= metrics["identity"] <= 1.0 + 1e-5, metrics


@pytest.mark.slow
def test_report_files_cover_every_category_with_sane_metrics(astronaut_report):
    out, report, result = astronaut_report
    assert sorted(p.name for p in out.iterdir()) == ["comparison.png", "report.json", "report.md"]
    assert list(report["categories"]) == CASES
    assert list(report["severities"]) == list(SEVERITIES)
    assert report["faces"]["total"] == 1 and list(report["faces"]["per_source"].values()) == [1]
    for category, row in report["categories"].items():
        expected = {"input", "ours", "unsharp_mask", "nl_means"}
        if split_case(category)[0] in BLUR_CATEGORIES:
            expected |= {"wiener", "richardson_lucy"}
        assert set(row["methods"]) == expected, category
        for metrics in row["methods"].values():
            assert metrics["n"] == 1
            assert_sane(metrics)
        classical = {m: row["methods"][m]["psnr"] for m in CLASSICAL_METHODS if m in row["methods"]}
        assert row["best_classical"] == max(classical, key=classical.get)
        assert math.isclose(row["gain_db"], row["methods"]["ours"]["psnr"] - row["methods"]["input"]["psnr"],
                            abs_tol=1e-9)
    for key in ("input", "ours", "best_classical"):
        assert_sane(report["overall"][key])
    # The severe tier really is harder, and its mean is over its own cases only.
    severe, mild = report["severities"]["severe"], report["severities"]["mild"]
    assert severe["input"]["psnr"] < mild["input"]["psnr"] - 3.0
    expected_severe = np.mean([report["categories"][f"{c}/severe"]["methods"]["input"]["psnr"] for c in CATEGORIES])
    assert severe["input"]["psnr"] == pytest.approx(expected_severe)
    assert report["races"] == {}
    markdown = (out / "report.md").read_text()
    for case in CASES:
        assert f"| {case} |" in markdown
    assert "| severe |" in markdown
    assert report["command"] in markdown and report["command"].startswith("facedeblur evaluate ")
    assert "--seed 7" in report["command"]
    assert f"evaluated 1 face(s) x {len(CASES)} damage cases" in result.stdout
    assert "severe tier" in result.stdout


@pytest.mark.slow
def test_identity_is_judged_by_dlib_beside_sface(astronaut_report):
    """The independent judge (dlib ResNet) scores the input and ours in every case and tier, and the
    console compares like with like: the severe tier's classical figure is the severe tier's own."""
    pytest.importorskip("dlib")
    out, report, result = astronaut_report
    for case, row in report["categories"].items():
        for method in ("input", "ours"):
            assert 0.0 <= row["methods"][method]["dlib_match"] <= 1.0, case
            assert 0.0 <= row["methods"][method]["dlib_distance"] < 2.0, case
        assert "dlib_match" not in row["methods"]["unsharp_mask"]
    for scope in (*report["severities"].values(), report["overall"]):
        assert {"dlib_match", "dlib_distance"} <= set(scope["ours"])
    # the damage that hurts most moves the face furthest from the clean one
    distance = lambda case: report["categories"][case]["methods"]["input"]["dlib_distance"]
    assert distance("pixelate/severe") > distance("pixelate/mild")
    markdown = (out / "report.md").read_text()
    assert "## Identity by an independent recogniser (dlib ResNet)" in markdown
    assert "| severe |" in markdown.split("dlib ResNet")[1]
    severe_classical = report["severities"]["severe"]["best_classical"]["psnr"]
    assert f"severe tier PSNR" in result.stdout and f"best classical {severe_classical:.2f} dB" in result.stdout
    assert "dlib same person" in result.stdout


@pytest.mark.slow
def test_dlib_judge_tells_the_same_face_from_another_person(astronaut_folder):
    pytest.importorskip("dlib")
    if not AAF_VAL.exists():
        pytest.skip(f"{AAF_VAL} not present (../shared/data)")
    from facedeblur.evaluation.dlib_identity import SAME_PERSON_DISTANCE, DlibJudge
    detector = FaceDetector(provider="cpu")
    astronaut = load_clean_faces([astronaut_folder], detector, 128, FACE_TEMPLATE, None, 0)
    others = load_clean_faces([AAF_VAL], detector, 128, FACE_TEMPLATE, 6, 0)
    judge = DlibJudge()
    reference = judge.descriptors([astronaut[0].crop])
    assert judge.distances([astronaut[0].crop], reference)[0] == pytest.approx(0.0, abs=1e-6)
    # a face is itself after mild damage, and the astronaut is nobody else
    mild = degrade(astronaut[0].crop, "gaussian_blur", np.random.default_rng(0), "mild").image
    assert judge.distances([mild], reference)[0] < SAME_PERSON_DISTANCE
    other_distances = judge.distances([face.crop for face in others], np.repeat(reference, len(others), axis=0))
    assert (other_distances > SAME_PERSON_DISTANCE).all(), other_distances


@pytest.mark.slow
def test_wiener_with_the_true_kernel_beats_the_blurred_input(astronaut_report):
    _, report, _ = astronaut_report
    methods = report["categories"]["gaussian_blur/moderate"]["methods"]
    assert methods["wiener"]["psnr"] > methods["input"]["psnr"] + 1.0
    assert methods["wiener"]["ssim"] > methods["input"]["ssim"]


@pytest.mark.slow
def test_comparison_image_has_a_row_per_severe_case_and_four_columns(astronaut_report):
    out, _, _ = astronaut_report
    grid = cv2.imread(str(out / "comparison.png"))
    from facedeblur.evaluation.report import HEADER_HEIGHT, LABEL_WIDTH, TILE
    assert grid.shape == (HEADER_HEIGHT + TILE * len(CATEGORIES), LABEL_WIDTH + 4 * TILE, 3)
    # Column 0 is the clean face, column 1 the degraded one: different pixels, same face.
    first_row = grid[HEADER_HEIGHT:HEADER_HEIGHT + TILE]
    clean, degraded = first_row[:, LABEL_WIDTH:LABEL_WIDTH + TILE], first_row[:, LABEL_WIDTH + TILE:LABEL_WIDTH + 2 * TILE]
    assert clean.std() > 20 and not np.array_equal(clean, degraded)


# The quality gate: on this fixed sample (the astronaut, seed 7, every category), the shipped model must gain
# at least this much over its input in each damage tier. A regression in training or export fails here.
MIN_TIER_GAIN_DB = {"moderate": 0.5, "severe": 0.5}


def quality_gate_failures(report: dict) -> dict[str, float]:
    """Tiers whose mean gain (dB) falls short of MIN_TIER_GAIN_DB, with the gain measured."""
    gains = {tier: report["severities"][tier]["ours"]["psnr"] - report["severities"][tier]["input"]["psnr"]
             for tier in MIN_TIER_GAIN_DB}
    return {tier: round(gain, 2) for tier, gain in gains.items() if gain < MIN_TIER_GAIN_DB[tier]}


@pytest.mark.slow
def test_quality_gate_passes_the_shipped_model_and_catches_a_worse_one(astronaut_report, astronaut_folder,
                                                                       blurring_model_path, tmp_path):
    _, shipped, _ = astronaut_report
    assert quality_gate_failures(shipped) == {}
    out = tmp_path / "worse"
    result = run_evaluate(astronaut_folder, "-o", out, "--seed", "7", "--model", blurring_model_path,
                          "--severities", *MIN_TIER_GAIN_DB, "--no-classical")
    assert result.returncode == 0, result.stderr
    worse = json.loads((out / "report.json").read_text())
    failures = quality_gate_failures(worse)
    # A blur even helps a little on severe noise (+0.46 dB here), which is why the floor is not zero.
    assert set(failures) == set(MIN_TIER_GAIN_DB), failures


@pytest.fixture(scope="module")
def identity_model(tmp_path_factory) -> Path:
    """A facedeblur model whose output is exactly its input, exported by the trainer's own export code."""
    torch = pytest.importorskip("torch")
    from facedeblur.trainer.export import export_onnx

    class Unchanged(torch.nn.Module):
        def forward(self, x):
            return x * 1.0

    path = tmp_path_factory.mktemp("models") / "unchanged.onnx"
    export_onnx(Unchanged(), path, {"name": "unchanged-test", "version": "test"}, crop_size=128)
    return path


@pytest.mark.slow
@pytest.mark.skipif(not AAF_VAL.exists(), reason=f"{AAF_VAL} not present (shared evaluation data)")
def test_aaf_faces_with_a_model_of_known_behaviour(identity_model, tmp_path):
    out = tmp_path / "aaf"
    categories = ("gaussian_blur", "defocus", "noise")
    result = run_evaluate(AAF_VAL, "-o", out, "--per-source", "4", "--model", identity_model,
                          "--categories", *categories, "--severities", "mild")
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["faces"]["total"] == 4
    assert report["model"]["name"] == "unchanged-test"
    assert list(report["categories"]) == [f"{c}/mild" for c in categories]
    for category, row in report["categories"].items():
        # A model that returns its input scores exactly like the input: "ours" really is the given model.
        assert row["methods"]["ours"] == row["methods"]["input"], category
        assert row["gain_db"] == 0.0
        for metrics in row["methods"].values():
            assert metrics["n"] == 4
            assert_sane(metrics)
    for category in ("gaussian_blur/mild", "defocus/mild"):
        methods = report["categories"][category]["methods"]
        assert methods["wiener"]["psnr"] > methods["input"]["psnr"], category
        assert methods["richardson_lucy"]["psnr"] > methods["input"]["psnr"], category
    noise = report["categories"]["noise/mild"]  # mild noise is plain sensor noise (no JPEG after it)
    assert noise["best_classical"] == "nl_means"
    assert noise["methods"]["nl_means"]["psnr"] > noise["methods"]["input"]["psnr"] + 2.0
    grid = cv2.imread(str(out / "comparison.png"))
    assert grid.shape[0] > 3 * len(categories) * 128  # three faces by default, each with every category


def aligned_face(image: np.ndarray) -> np.ndarray:
    face = FaceDetector().detect(image)[0]
    return warp_to_crop(image, estimate_alignment(face.landmarks, 128), 128)


def test_identity_similarity_is_one_for_the_same_face_and_low_for_another_person():
    astronaut = aligned_face(bgr(skimage_data.astronaut()))
    cameraman = aligned_face(cv2.cvtColor(skimage_data.camera(), cv2.COLOR_GRAY2BGR))
    embedder = IdentityEmbedder()
    reference = embedder.embed_aligned([astronaut], FACE_TEMPLATE)
    similarities = identity_similarities(embedder, [astronaut, cameraman], np.repeat(reference, 2, axis=0),
                                         FACE_TEMPLATE)
    assert similarities[0] == pytest.approx(1.0, abs=1e-4)
    assert similarities[1] < 0.5


def test_misalign_evaluates_faces_cut_off_their_alignment(astronaut_report, astronaut_folder, tmp_path):
    """`--misalign` cuts the clean face off its alignment before the damage: the same seed then damages a
    different crop (so the input scores differ from the aligned run's), and the report says how faces were cut."""
    aligned = astronaut_report[1]
    out = tmp_path / "misaligned"
    result = run_evaluate(astronaut_folder, "-o", out, "--seed", "7", "--categories", "defocus", "noise",
                          "--severities", "moderate", "--no-classical", "--misalign")
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    assert "--misalign" in report["command"]
    for case in ("defocus/moderate", "noise/moderate"):
        ours, theirs = report["categories"][case]["methods"], aligned["categories"][case]["methods"]
        assert ours["input"]["psnr"] != pytest.approx(theirs["input"]["psnr"], abs=1e-3)
        assert ours["ours"]["psnr"] > ours["input"]["psnr"]  # the model still restores a misaligned face
    assert "cut a little off" in (out / "report.md").read_text()
    assert "exact (landmarks from the clean photo" in (astronaut_report[0] / "report.md").read_text()


def test_degradations_are_reproducible_per_face_and_category():
    clean = aligned_face(bgr(skimage_data.astronaut()))
    first = degrade(clean, "motion_blur", degradation_rng(3, 5, "motion_blur"))
    again = degrade(clean, "motion_blur", degradation_rng(3, 5, "motion_blur"))
    assert np.array_equal(first.image, again.image) and np.array_equal(first.kernel, again.kernel)
    other_face = degrade(clean, "motion_blur", degradation_rng(3, 6, "motion_blur"))
    other_seed = degrade(clean, "motion_blur", degradation_rng(4, 5, "motion_blur"))
    assert not np.array_equal(first.image, other_face.image)
    assert not np.array_equal(first.image, other_seed.image)


def utk_name(race: int, validation: bool, start: int = 0) -> str:
    """A UTKFace-style file name that the trainer's split puts in validation (or training)."""
    for serial in range(start, start + 100_000):
        name = f"30_1_{race}_2017010{serial:08d}.jpg"
        if is_validation(Path("utk-train.tar"), name, 300) == validation:
            return name
    raise AssertionError("no such name")


def test_only_held_out_utk_faces_are_used(tmp_path):
    photo = bgr(skimage_data.astronaut())[:300, 80:380]  # UTK photos are ~200-300 px face portraits
    held_out = [utk_name(1, True), utk_name(2, True, start=50_000)]
    trained_on = [utk_name(0, False), utk_name(3, False, start=50_000)]
    archive = tmp_path / "utk-train.tar"
    with tarfile.open(archive, "w") as tar:
        for name in sorted(held_out + trained_on):
            path = tmp_path / name
            cv2.imwrite(str(path), photo)
            tar.add(path, arcname=f"utk/{name}")
    detector = FaceDetector()
    faces = load_clean_faces([archive], detector, 128, FACE_TEMPLATE, per_source=None, utk_validation=300)
    assert sorted(Path(f.name).name for f in faces) == sorted(held_out)
    assert sorted(f.race for f in faces) == ["Asian", "Black"]
    limited = load_clean_faces([archive], detector, 128, FACE_TEMPLATE, per_source=None, utk_validation=1)
    assert len(limited) == 1


def test_output_under_a_file_is_refused_before_any_work(astronaut_folder, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    assert main(["evaluate", str(astronaut_folder), "-o", str(blocker / "report")]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert errors == [f"facedeblur: error: output folder {blocker / 'report'} cannot be created ({blocker} is a file); "
                      "choose another -o"]


@pytest.mark.parametrize("case", ["missing", "empty_folder", "text_file", "folder_without_faces"])
def test_bad_sources_are_one_line_errors(case, tmp_path, capsys):
    if case == "missing":
        source, needle = tmp_path / "nowhere", "not found"
    elif case == "empty_folder":
        source, needle = tmp_path / "empty", "folder has no images"
        source.mkdir()
    elif case == "text_file":
        source, needle = tmp_path / "faces.txt", "neither an image"
        source.write_text("not faces")
    else:
        source, needle = tmp_path / "junk", "no usable face (1 no face, 1 unreadable)"
        source.mkdir()
        (source / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
        cv2.imwrite(str(source / "mug.png"), bgr(skimage_data.coffee()))
    out = tmp_path / "out"
    assert main(["evaluate", str(source), "-o", str(out)]) == 2
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("facedeblur: error: ")]
    assert len(errors) == 1, stderr
    assert str(source) in errors[0] and needle in errors[0], errors[0]
    assert not out.exists()


@pytest.mark.slow
def test_evaluate_runs_without_pytorch(astronaut_folder, tmp_path):
    """A runtime-only install has no PyTorch: make importing it fail, and evaluate must still work."""
    out = tmp_path / "out"
    code = (
        "import sys\n"
        "class NoTorch:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'torch':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, NoTorch())\n"
        "from facedeblur.cli import main\n"
        f"rc = main(['evaluate', {str(astronaut_folder)!r}, '-o', {str(out)!r}, '--categories', 'gaussian_blur'])\n"
        "sys.exit(rc)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
    assert result.returncode == 0, result.stderr
    assert (out / "report.json").exists()


def test_evaluate_does_not_import_the_trainer() -> None:
    """`evaluate` runs on a runtime install (no [train] extra, no torch): it shares the trainer's held-out
    split through facedeblur.face_sources, never through facedeblur.trainer."""
    script = ("import sys\n"
              "import facedeblur.evaluation.command, facedeblur.evaluation.runner, facedeblur.evaluation.faces\n"
              "import facedeblur.evaluation.report, facedeblur.evaluation.detection\n"
              "print(sorted(m for m in sys.modules if m.startswith('facedeblur.trainer') or m.split('.')[0] == 'torch'))\n")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]", out.stdout
    from facedeblur import face_sources
    from facedeblur.trainer import dataset
    assert dataset.is_validation is face_sources.is_validation   # one rule, not a copy
