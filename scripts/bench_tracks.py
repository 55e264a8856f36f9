#!/usr/bin/env python3
"""Tracking benchmark: `process`'s tracks against hand-made ground truth (tests/data/tracks/<clip>.json).

    nice -n 10 .venv/bin/python scripts/bench_tracks.py [CLIP ...] [--videos ../shared/videos] [--json out.json]

Runs pass 1 of the footage pipeline (detect and track, exactly as `process` does; pass 2 only restores) on
each clip that has a truth file and reports per clip:

- tracks: tracks `process` keeps; real: those whose boxes cover a labelled person in at least half of
  their frames; junk: those that cover nobody (tracks mostly inside an `ignore` region, such as a
  defocused crowd nobody could label, are neither); precision = real / (real + junk);
- people, found: labelled identities, and those covered by some real track in at least a fifth of their
  labelled frames (recall = found / people);
- tracks/person: real tracks per found person (1.0 = one track per person: no fragmentation);
- MOTA, IDF1, ID switches: py-motmetrics (the `dev` extra) at IoU >= 0.3, hypotheses inside `ignore`
  regions removed first (as the MOT challenge does).

To measure another checkout (a release), put its src first: PYTHONPATH=/path/to/release/src.
The truth format is described in tests/data/tracks/README.md.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
TRUTH_DIR = REPO / "tests" / "data" / "tracks"
MATCH_IOU = 0.3  # faces are small and boxes differ in convention (forehead, chin): a loose match
REAL_SHARE = 0.5  # a track is real when it covers a person in this share of its frames
FOUND_SHARE = 0.2  # a person is found when real tracks cover this share of their labelled frames


def load_truth(path: Path) -> dict:
    """{"clip", "frames", "people": [{"id", "keys": [[frame, [x1, y1, x2, y2] | null], ...]}], "ignore": [...]}
    -> per frame: {person id: box} and the ignore boxes; boxes are interpolated linearly between keys, and a
    person is absent from a null key up to their next key."""
    truth = json.loads(path.read_text())
    frames = truth["frames"]
    people: list[dict[int, np.ndarray]] = [dict() for _ in range(frames)]
    for person in truth["people"]:
        keys = sorted(person["keys"], key=lambda k: k[0])
        for (start, box_a), (end, box_b) in zip(keys, keys[1:]):
            if box_a is None:
                continue
            for frame in range(start, min(end, frames)):
                t = 0.0 if box_b is None else (frame - start) / max(end - start, 1)  # before a null key: held
                people[frame][person["id"]] = (1 - t) * np.array(box_a, float) + t * np.array(box_b or box_a, float)
        last_frame, last_box = keys[-1]
        if last_box is not None and last_frame < frames:
            people[last_frame][person["id"]] = np.array(last_box, float)
    ignore: list[list[np.ndarray]] = [[] for _ in range(frames)]
    for region in truth.get("ignore", []):
        first, last = region["frames"]
        for frame in range(first, min(last, frames - 1) + 1):
            ignore[frame].append(np.array(region["box"], float))
    return {"clip": truth["clip"], "frames": frames, "people": people, "ignore": ignore,
            "ids": [p["id"] for p in truth["people"]]}


def iou(a: np.ndarray, b: np.ndarray) -> float:
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x2 - x1) * max(0.0, y2 - y1)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def inside_ignore(box: np.ndarray, regions: list[np.ndarray]) -> bool:
    """A box whose centre lies in an ignore region."""
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    return any(r[0] <= cx <= r[2] and r[1] <= cy <= r[3] for r in regions)


def run_tracker(clip: Path, settings) -> tuple[dict[int, dict[str, np.ndarray]], int, float, dict[str, list[int]]]:
    """Pass 1 of `process` on CLIP: per frame {hypothesis id: box}, the number of kept tracks, seconds, and
    each kept track's best frames (the gallery's)."""
    from facedeblur.footage.decode import open_source
    from facedeblur.footage.process import StageTimer, _find_faces, load_models

    models = load_models(settings)
    source = open_source(clip, settings.frame_folder_fps)
    started = time.perf_counter()
    found = _find_faces(source, clip, settings, models, StageTimer(), False)
    elapsed = time.perf_counter() - started
    per_frame: dict[int, dict[str, np.ndarray]] = {}
    lone = 0
    for frame, faces in found.planned.items():
        for face in faces:
            if face.track_id is None:  # a lone untracked detection: a hypothesis of its own
                lone += 1
                key = f"lone-{lone}"
            else:
                key = f"t{face.track_id}"
            per_frame.setdefault(frame, {})[key] = np.asarray(face.box, float)
    best = {f"t{track_id}": [frame for frame, _ in chosen] for track_id, chosen in found.best_frames.items()}
    return per_frame, len(found.tracks) + lone, elapsed, best


def tracks_without_a_face(clip: Path, settings, per_frame: dict[int, dict[str, np.ndarray]],
                          best: dict[str, list[int]]) -> list[str]:
    """The kept tracks in whose best frames an independent detector (dlib's CNN face detector, the `eval`
    extra; never used by the pipeline) finds no face: each best box, widened to twice its size and scaled so
    the face is about 120 px, must hold a detection."""
    import cv2
    import dlib
    import face_recognition_models
    from importlib import resources

    from facedeblur.footage.decode import open_source

    detector = dlib.cnn_face_detection_model_v1(
        str(resources.files(face_recognition_models) / "models" / "mmod_human_face_detector.dat"))
    wanted = {frame for frames in best.values() for frame in frames}
    images = {}
    for frame in open_source(clip, settings.frame_folder_fps).frames():
        if frame.index in wanted:
            images[frame.index] = frame.image
        if len(images) == len(wanted):
            break

    def holds_face(frame: int, box: np.ndarray) -> bool:
        x1, y1, x2, y2 = box
        side = max(x2 - x1, y2 - y1)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        image = images[frame]
        left, top = int(max(0, cx - side)), int(max(0, cy - side))
        crop = image[top:int(min(image.shape[0], cy + side)), left:int(min(image.shape[1], cx + side))]
        scale = 120.0 / max(side, 1.0)
        crop = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
        return len(detector(np.ascontiguousarray(crop[:, :, ::-1]), 1)) > 0

    return [track for track, frames in sorted(best.items())
            if not any(holds_face(frame, per_frame[frame][track]) for frame in frames)]


def score(truth: dict, hypotheses: dict[int, dict[str, np.ndarray]]) -> dict:
    frames = truth["frames"]
    covered: dict[str, dict[str, int]] = {}  # hypothesis -> person -> frames matched
    hyp_frames: dict[str, int] = {}
    hyp_ignored: dict[str, int] = {}
    for frame in range(frames):
        people = truth["people"][frame]
        for hyp, box in hypotheses.get(frame, {}).items():
            hyp_frames[hyp] = hyp_frames.get(hyp, 0) + 1
            best = max(people, key=lambda p: iou(box, people[p]), default=None)
            if best is not None and iou(box, people[best]) >= MATCH_IOU:
                covered.setdefault(hyp, {}).setdefault(best, 0)
                covered[hyp][best] += 1
            elif inside_ignore(box, truth["ignore"][frame]):
                hyp_ignored[hyp] = hyp_ignored.get(hyp, 0) + 1
    real, junk, ignored = [], [], []
    for hyp, count in hyp_frames.items():
        matched = max(covered.get(hyp, {}).values(), default=0)
        if matched >= REAL_SHARE * count:
            real.append(hyp)
        elif hyp_ignored.get(hyp, 0) >= REAL_SHARE * count:
            ignored.append(hyp)
        else:
            junk.append(hyp)
    labelled = {pid: sum(pid in truth["people"][f] for f in range(frames)) for pid in truth["ids"]}
    found_frames: dict[str, set] = {pid: set() for pid in truth["ids"]}
    tracks_of: dict[str, set] = {pid: set() for pid in truth["ids"]}
    for frame in range(frames):
        for hyp, box in hypotheses.get(frame, {}).items():
            if hyp not in real:
                continue
            for pid, person_box in truth["people"][frame].items():
                if iou(box, person_box) >= MATCH_IOU:
                    found_frames[pid].add(frame)
                    tracks_of[pid].add(hyp)
    found = [pid for pid in truth["ids"] if len(found_frames[pid]) >= FOUND_SHARE * max(labelled[pid], 1)]
    result = {
        "tracks": len(hyp_frames), "real": len(real), "junk": len(junk), "ignored": len(ignored),
        "precision": round(len(real) / max(len(real) + len(junk), 1), 3),
        "people": len(truth["ids"]), "found": len(found), "recall": round(len(found) / max(len(truth["ids"]), 1), 3),
        "missed": [pid for pid in truth["ids"] if pid not in found],
        "junk_tracks": {hyp: _span(hypotheses, hyp) for hyp in junk},
        "ignored_tracks": {hyp: _span(hypotheses, hyp) for hyp in ignored},
        "tracks_of": {pid: sorted(tracks_of[pid]) for pid in truth["ids"]},
        "tracks_per_person": round(sum(len(tracks_of[p]) for p in found) / max(len(found), 1), 2),
    }
    result.update(_motmetrics(truth, hypotheses))
    return result


def _span(hypotheses: dict[int, dict[str, np.ndarray]], hyp: str) -> str:
    frames = [frame for frame, boxes in hypotheses.items() if hyp in boxes]
    box = np.mean([hypotheses[f][hyp] for f in frames], axis=0)
    return f"frames {min(frames)}-{max(frames)}, mean box {[round(float(v)) for v in box]}"


def _motmetrics(truth: dict, hypotheses: dict[int, dict[str, np.ndarray]]) -> dict:
    try:
        import motmetrics as mm
    except ImportError:
        return {"mota": None, "idf1": None, "id_switches": None}
    accumulator = mm.MOTAccumulator(auto_id=True)
    numbers: dict[str, int] = {}  # motmetrics keeps ids in a float column: number them
    number = lambda key: numbers.setdefault(key, len(numbers) + 1)
    for frame in range(truth["frames"]):
        people = truth["people"][frame]
        hyps = {h: b for h, b in hypotheses.get(frame, {}).items()
                if not (inside_ignore(b, truth["ignore"][frame])
                        and all(iou(b, p) < MATCH_IOU for p in people.values()))}
        person_ids, hyp_ids = list(people), list(hyps)
        distances = np.array([[1 - iou(people[p], hyps[h]) if iou(people[p], hyps[h]) >= MATCH_IOU else np.nan
                               for h in hyp_ids] for p in person_ids]).reshape(len(person_ids), len(hyp_ids))
        accumulator.update([number('p:' + p) for p in person_ids], [number('h:' + h) for h in hyp_ids], distances)
    summary = mm.metrics.create().compute(accumulator, metrics=["mota", "idf1", "num_switches"], name="clip")
    row = summary.loc["clip"]
    return {"mota": round(float(row["mota"]), 3), "idf1": round(float(row["idf1"]), 3),
            "id_switches": int(row["num_switches"])}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("clips", nargs="*", help="clip file names (default: every clip with a truth file)")
    parser.add_argument("--videos", type=Path, default=REPO.parent / "shared" / "videos")
    parser.add_argument("--truth", type=Path, default=TRUTH_DIR)
    parser.add_argument("--config", help="settings file (pipeline: section); default: built-in")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--independent", action="store_true",
                        help="also count the tracks in whose best frames dlib's CNN face detector finds no face "
                             "(the eval extra)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    from facedeblur.config import load_config

    settings = load_config(args.config).pipeline
    truth_files = sorted(args.truth.glob("*.json"))
    if args.clips:
        truth_files = [f for f in truth_files if json.loads(f.read_text())["clip"] in args.clips]
    results = {}
    header = (f"{'clip':<32} {'tracks':>6} {'real':>4} {'junk':>4} {'ign':>3} {'prec':>5} {'people':>6} {'found':>5} "
              f"{'tr/pers':>7} {'MOTA':>6} {'IDF1':>5} {'IDsw':>4} {'pass1 s':>7}")
    print(header)
    for truth_file in truth_files:
        truth = load_truth(truth_file)
        clip = args.videos / truth["clip"]
        if not clip.is_file():
            print(f"{truth['clip']:<32} (not present at {clip})")
            continue
        hypotheses, _, elapsed, best = run_tracker(clip, settings)
        result = score(truth, hypotheses)
        result["pass1_seconds"] = round(elapsed, 1)
        if args.independent:
            result["no_face_independent"] = tracks_without_a_face(clip, settings, hypotheses, best)
        results[truth["clip"]] = result
        print(f"{truth['clip']:<32} {result['tracks']:>6} {result['real']:>4} {result['junk']:>4} {result['ignored']:>3} "
              f"{result['precision']:>5.2f} {result['people']:>6} {result['found']:>5} {result['tracks_per_person']:>7.2f} "
              f"{_fmt(result['mota']):>6} {_fmt(result['idf1']):>5} {str(result['id_switches']):>4} {elapsed:>7.1f}"
              + (f"  missed: {', '.join(result['missed'])}" if result["missed"] else "")
              + (f"  no face (dlib CNN): {len(result['no_face_independent'])} {result['no_face_independent']}"
                 if args.independent else ""), flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return 0


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


if __name__ == "__main__":
    sys.exit(main())
