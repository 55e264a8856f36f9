"""The hand-made ground truth of the shared clips (tests/data/tracks) and the scoring of scripts/bench_tracks.py."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from footage_support import REPO, SHARED_VIDEOS

TRUTH_FILES = sorted((REPO / "tests" / "data" / "tracks").glob("*.json"))


def load_bench():
    spec = importlib.util.spec_from_file_location("bench_tracks", REPO / "scripts" / "bench_tracks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = load_bench()


@pytest.mark.parametrize("truth_file", TRUTH_FILES, ids=lambda p: p.stem)
def test_truth_matches_its_clip(truth_file):
    """Every labelled box lies inside the clip's frames, and the frame count is the clip's."""
    import av

    truth = bench.load_truth(truth_file)
    clip = SHARED_VIDEOS / truth["clip"]
    if not clip.is_file():
        pytest.skip(f"{clip} not present (team footage)")
    with av.open(str(clip)) as container:
        first = next(container.decode(video=0))
        frames = 1 + sum(1 for _ in container.decode(video=0))
    assert truth["frames"] == frames
    for people in truth["people"]:
        for box in people.values():
            assert 0 <= box[0] < box[2] <= first.width + 1 and 0 <= box[1] < box[3] <= first.height + 1, box
    assert all(any(pid in people for people in truth["people"]) for pid in truth["ids"])


def test_truth_scored_against_itself_is_perfect_and_junk_counts():
    truth = bench.load_truth(REPO / "tests" / "data" / "tracks" / "stage-and-audience.json")
    hypotheses = {frame: {f"h-{pid}": box for pid, box in people.items()} for frame, people in enumerate(truth["people"])}
    perfect = bench.score(truth, hypotheses)
    assert (perfect["precision"], perfect["recall"], perfect["tracks_per_person"]) == (1.0, 1.0, 1.0)
    assert perfect["mota"] == 1.0 and perfect["idf1"] == 1.0 and perfect["id_switches"] == 0
    # A box on the curtain (shot 3, nobody there) is junk; one in the defocused crowd of shot 2 is ignored;
    # splitting the pianist into two tracks is fragmentation.
    for frame in range(100, 130):
        hypotheses[frame]["curtain"] = np.array([560.0, 150, 600, 200])
    for frame in range(30, 60):
        hypotheses[frame]["crowd"] = np.array([100.0, 50, 140, 100])
    for frame in range(10, 20):
        hypotheses[frame]["h-pianist-2"] = hypotheses[frame].pop("h-pianist")
    scored = bench.score(truth, hypotheses)
    assert (scored["junk"], scored["ignored"]) == (1, 1)
    assert scored["precision"] < 1.0 and scored["recall"] == 1.0 and scored["tracks_per_person"] > 1.0
    assert scored["id_switches"] == 1


def test_truth_format_keys_are_sorted_and_ids_unique():
    for truth_file in TRUTH_FILES:
        raw = json.loads(truth_file.read_text())
        ids = [p["id"] for p in raw["people"]]
        assert len(ids) == len(set(ids)), truth_file
        for person in raw["people"]:
            frames = [k[0] for k in person["keys"]]
            assert frames == sorted(frames) and person["keys"][0][1] is not None, (truth_file, person["id"])
