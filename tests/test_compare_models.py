"""The shipping rule of scripts/compare_models.py on small reports whose verdict is known by construction:
PSNR must rise in every case and tier, dlib's match rate must not fall below the input's in any category
(tiers pooled), and the mean dlib distance must not rise above the input's in any case; a one-case dip of the
match rate alone is a note."""
from __future__ import annotations

import copy
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "compare_models.py"
spec = importlib.util.spec_from_file_location("compare_models", SCRIPT)
compare_models = importlib.util.module_from_spec(spec)
spec.loader.exec_module(compare_models)


def _scores(psnr: float, match: float, distance: float, n: int = 40) -> dict:
    return {"psnr": psnr, "n": n, "dlib_match": match, "dlib_distance": distance}


def _report(version: str, gain: float, matches: dict[str, float], distances: dict[str, float]) -> dict:
    categories = {}
    for case in ("motion_blur/moderate", "motion_blur/severe", "cctv/moderate", "cctv/severe"):
        categories[case] = {"methods": {"input": _scores(24.0, 1.0 if case.endswith("moderate") else 0.75, 0.40),
                                        "ours": _scores(24.0 + gain, matches[case], distances[case])},
                            "gain_db": gain}
    tier = {"methods": {"input": _scores(24.0, 0.9, 0.4), "ours": _scores(24.0 + gain, 0.9, 0.35)}, "gain_db": gain}
    return {"model": {"name": "facedeblur-default", "version": version}, "faces": 40, "seed": 0,
            "categories": categories, "severities": {"moderate": tier, "severe": copy.deepcopy(tier)},
            "overall": copy.deepcopy(tier)}


GOOD_MATCH = {"motion_blur/moderate": 1.0, "motion_blur/severe": 0.8, "cctv/moderate": 1.0, "cctv/severe": 0.8}
GOOD_DISTANCE = {case: 0.35 for case in GOOD_MATCH}


def test_a_one_face_dip_in_one_case_is_a_note_when_the_category_and_the_distance_hold():
    old = _report("1", 1.0, GOOD_MATCH, GOOD_DISTANCE)
    dip = dict(GOOD_MATCH, **{"motion_blur/moderate": 0.975, "motion_blur/severe": 0.8})
    lines, reasons, notes = compare_models.compare(old, _report("2", 1.1, dip, GOOD_DISTANCE))
    assert reasons == []
    assert len(notes) == 1 and notes[0].startswith("motion_blur/moderate")
    assert "| motion_blur | 70/80 | 71/80 |" in lines


def test_a_category_below_the_input_or_a_distance_above_it_stops_the_ship():
    old = _report("1", 1.0, GOOD_MATCH, GOOD_DISTANCE)
    worse_category = dict(GOOD_MATCH, **{"cctv/severe": 0.7})        # 68 of 80 against the input's 70
    _, reasons, _ = compare_models.compare(old, _report("2", 1.1, worse_category, GOOD_DISTANCE))
    assert reasons == ["cctv: dlib same person 68/80 is below the input's 70/80"]
    worse_distance = dict(GOOD_DISTANCE, **{"cctv/moderate": 0.41})
    _, reasons, _ = compare_models.compare(old, _report("2", 1.1, GOOD_MATCH, worse_distance))
    assert reasons == ["cctv/moderate: mean dlib distance 0.410 is above the input's 0.400"]


def test_the_command_exits_1_when_a_case_gains_less_and_0_when_it_may_ship(tmp_path):
    old, better, worse = (_report("1", 1.0, GOOD_MATCH, GOOD_DISTANCE), _report("2", 1.1, GOOD_MATCH, GOOD_DISTANCE),
                          _report("3", 0.9, GOOD_MATCH, GOOD_DISTANCE))
    paths = {}
    for name, report in (("old", old), ("better", better), ("worse", worse)):
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps(report))
    ships = subprocess.run([sys.executable, str(SCRIPT), str(paths["old"]), str(paths["better"])], capture_output=True, text=True)
    assert ships.returncode == 0 and "may ship" in ships.stdout
    stops = subprocess.run([sys.executable, str(SCRIPT), str(paths["old"]), str(paths["worse"])], capture_output=True, text=True)
    assert stops.returncode == 1 and "gains -0.10 dB less" in stops.stdout


def _with_faces(report: dict, case: str, psnr_by_face: list[float]) -> dict:
    report = copy.deepcopy(report)
    ours = report["categories"][case]["methods"]["ours"]
    ours["psnr_by_face"] = psnr_by_face
    ours["psnr"] = sum(psnr_by_face) / len(psnr_by_face)
    report["categories"][case]["gain_db"] = ours["psnr"] - 24.0
    return report


def test_a_case_behind_by_less_than_its_faces_noise_is_a_note_and_a_steady_deficit_a_reason():
    """Face by face: a case 0.01 dB behind whose faces scatter by 0.1 dB either way is a tie (a note); the same
    0.01 dB lost on every face is a real loss; so is 0.06 dB however noisy, and a tier behind at all."""
    case = "cctv/severe"
    old_faces = [25.0 + 0.01 * (face % 7) for face in range(40)]
    old = _with_faces(_report("1", 1.0, GOOD_MATCH, GOOD_DISTANCE), case, old_faces)
    better = _report("2", 1.1, GOOD_MATCH, GOOD_DISTANCE)
    scattered = [psnr + (0.1 if face % 2 else -0.1) - 0.01 for face, psnr in enumerate(old_faces)]
    _, reasons, notes = compare_models.compare(old, _with_faces(better, case, scattered))
    assert reasons == [] and len(notes) == 1 and notes[0].startswith(f"{case}: gains -0.010 dB less")
    steady = [psnr - 0.01 for psnr in old_faces]
    _, reasons, _ = compare_models.compare(old, _with_faces(better, case, steady))
    assert reasons == [f"{case}: gains -0.01 dB less than facedeblur-default 1"]
    far = [psnr + (0.3 if face % 2 else -0.3) - 0.06 for face, psnr in enumerate(old_faces)]
    _, reasons, _ = compare_models.compare(old, _with_faces(better, case, far))
    assert reasons == [f"{case}: gains -0.06 dB less than facedeblur-default 1"]
