#!/usr/bin/env python3
"""Benchmark face detection on damaged faces: recall, false detections, landmark error and time per frame,
for today's detector (one YuNet pass) and the configured one (pyramid + mosaic search).

    .venv/bin/python scripts/bench_detection.py [--data ../shared/data] [--videos ../shared/videos]
                                                [--photos 59] [--json detection.json] [--write-doc]

* Damaged photos: the first --photos AAF validation photos with one face, each shrunk so the face is 64-96
  px wide, then the *whole photo* damaged per category and severity (degradations.degrade, damage scaled to
  the face). Found = a detection overlapping the reference box (found on the clean full-size photo) with
  IoU >= 0.4; false = any other detection; NME = landmark error / inter-ocular distance against the
  reference landmarks.
* Face-free scenes: scikit-image's sample pictures without a face, and frames of the shared videos with
  their faces painted out; each also damaged once per category (moderate), which checks that damage
  (mosaics especially) does not make faces appear.
* Real low-quality photos: real-lq.tar (no ground truth; one face per photo).
* Time: median ms per call with one onnxruntime thread, on the video frames and on the photos; "today" is
  the detector before this change (the frame letterboxed into one square 640 x 640 pass), both measured
  alternately on the same frames so that machine load affects them alike.

With --write-doc the tables replace the "## Face detection on damaged faces" section of docs/BENCHMARKS.md
(other sections are left alone).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))

from facedeblur.config import DetectorSettings  # noqa: E402
from facedeblur.degradations import CATEGORIES, SEVERITIES, degrade  # noqa: E402
from facedeblur.evaluation import detection as bench  # noqa: E402
from facedeblur.pipeline.detect import FaceDetector  # noqa: E402
from benchmarks_doc import machine, write_section  # noqa: E402

SECTION = "## Face detection on damaged faces"
REAL_BLURRED = ("WebPhoto-Test", "Wider-Test")  # the real-lq subsets whose faces are blurred, not just small


def today_detector(threads: int) -> callable:
    """The detector as it was: one pass, the frame letterboxed into a square 640 x 640 input."""
    detector = FaceDetector(provider="cpu", threads=threads, pyramid=(1.0,), find_mosaics=False)

    def detect(image: np.ndarray):
        height, width = image.shape[:2]
        side = max(height, width)
        canvas = np.zeros((side, side, 3), image.dtype)
        canvas[:height, :width] = image
        faces = detector.detect(canvas)
        for face in faces:
            face.box[[0, 2]] = face.box[[0, 2]].clip(0, width)
            face.box[[1, 3]] = face.box[[1, 3]].clip(0, height)
        return faces

    return detect


def configured_detector(threads: int) -> callable:
    detector = FaceDetector(provider="cpu", threads=threads, **DetectorSettings().detector_options())
    return detector.detect


def damaged_scenes(scenes: list[bench.Scene], seed: int) -> list[bench.Scene]:
    out = []
    for index, scene in enumerate(scenes):
        for number, category in enumerate(CATEGORIES):
            rng = np.random.default_rng([seed, 1000 + index, number])
            # Scenes have no face to scale by: damage them as if faces were 80 px wide.
            image = degrade(scene.image, category, rng, "moderate", scale=80 / 64).image
            out.append(bench.Scene(f"{scene.name}+{category}", image))
    return out


def timing(detectors: dict[str, callable], images: list[np.ndarray], repeats: int = 3) -> dict[str, float]:
    """Median ms per call, the detectors taking turns on each image (shared machine load)."""
    samples: dict[str, list[float]] = {name: [] for name in detectors}
    for image in images:
        for _ in range(repeats):
            for name, detect in detectors.items():
                started = time.perf_counter()
                detect(image)
                samples[name].append(time.perf_counter() - started)
    return {name: round(float(np.median(values)) * 1000, 1) for name, values in samples.items()}


def measure(args: argparse.Namespace) -> dict:
    detectors = {"today": today_detector(args.threads), "new": configured_detector(args.threads)}
    reference = FaceDetector(provider="cpu", pyramid=(1.0,), find_mosaics=False)  # clean full-size photos
    photos = bench.load_photos(args.data / "aaf-val.tar", args.photos, reference, seed=args.seed)
    print(f"{len(photos)} photos; scenes ...", file=sys.stderr, flush=True)
    skimage_scenes = bench.skimage_scenes()
    video_scenes = (bench.masked_video_frames(args.videos, args.frames_per_video, reference)
                    if args.videos.is_dir() else [])
    scene_sets = {"scikit-image scenes": skimage_scenes, "video frames, faces masked": video_scenes,
                  "the same scenes, damaged (11 categories, moderate)": damaged_scenes(skimage_scenes + video_scenes,
                                                                                       args.seed)}
    result: dict = {"photos": len(photos), "face_width_px": list(bench.FACE_WIDTH_RANGE), "seed": args.seed,
                    "threads": args.threads, "machine": machine(),
                    "settings": DetectorSettings().model_dump(), "by": {}}
    categories = ("clean",) + tuple(CATEGORIES)
    for name, detect in detectors.items():
        print(f"{name}: photos ...", file=sys.stderr, flush=True)
        photo_results = bench.run_photos(detect, photos, categories, tuple(args.severities), args.seed)
        scenes = {label: bench.run_scenes(detect, scenes).as_dict() for label, scenes in scene_sets.items()}
        real = {subset: tally.as_dict()
                for subset, tally in bench.run_real(detect, args.data / "real-lq.tar", args.real_subsets).items()}
        result["by"][name] = {"photos": {f"{c}/{s}": t.as_dict() for (c, s), t in photo_results.items()},
                              "scenes": scenes, "real": real}
    if not args.no_restoration:
        from facedeblur.pipeline.restore import FaceRestorer

        print("restoration gain ...", file=sys.stderr, flush=True)
        restorer = FaceRestorer(provider="cpu", threads=args.threads)
        result["restoration"] = {"model": f"{restorer.info.name} {restorer.info.version}",
                                 "by_category": bench.restoration_gain(detectors["new"], photos, restorer,
                                                                       tuple(CATEGORIES), "moderate", args.seed)}
    print("timing ...", file=sys.stderr, flush=True)
    frames = [scene.image for scene in video_scenes]
    result["ms_per_frame"] = {"video frames": timing(detectors, frames) if frames else None,
                              "photos (64-96 px faces)": timing(detectors, [p.image for p in photos[:20]]),
                              "video frame sizes": sorted({f"{f.shape[1]}x{f.shape[0]}" for f in frames})}
    return result


def markdown(result: dict, command: str) -> str:
    today, new = result["by"]["today"], result["by"]["new"]
    lines = [SECTION, "",
             "Whether the faces that most need restoring are found at all. The whole photo is damaged (not the "
             "face crop), after shrinking it so the face is 64-96 px wide; the damage is scaled to that width "
             "(`degrade(..., scale=face_width / 64)`). *Today*: one YuNet pass at full size, no mosaic search (the baseline); "
             "*new*: the default `detector` settings (image pyramid at 1, 1/2, 1/4 and 1/8 of the input "
             "size, fused; mosaic search). Found: detections matching the reference face (IoU >= 0.4 with the box "
             "found on the clean full-size photo); false: every other detection; NME: mean landmark distance "
             "to the clean photo's landmarks / inter-ocular distance (mean over found faces; 0.05 is about "
             "1.5 px on these faces).", "",
             "```", command, "```", "",
             f"{result['photos']} AAF validation photos, seed {result['seed']}, measured on {result['machine']} "
             f"(shared with a training run), {result['threads']} onnxruntime thread.", "",
             "| damage | severity | found today | found new | false today | false new | NME today | NME new |",
             "|---|---|---|---|---|---|---|---|"]
    for key, before in today["photos"].items():
        after = new["photos"][key]
        category, severity = key.split("/")
        nme = lambda d: "—" if d["nme_mean"] is None else f"{d['nme_mean']:.3f}"
        lines.append(f"| {category} | {severity} | {before['found']} / {before['images']} | **{after['found']}** / "
                     f"{after['images']} | {before['false']} | {after['false']} | {nme(before)} | {nme(after)} |")
    lines += ["", "Face-free pictures (every detection is false):", "",
              "| pictures | images | false faces today | false faces new | pictures with a false face (new) |",
              "|---|---|---|---|---|"]
    for label, before in today["scenes"].items():
        after = new["scenes"][label]
        lines.append(f"| {label} | {before['images']} | {before['false']} | **{after['false']}** | "
                     f"{', '.join(after['missed']) or '—'} |")
    lines += ["", "Real low-quality photos (`real-lq.tar`, one face each, no ground truth): photos with a face "
              "found, at the default threshold. WebPhoto-Test and Wider-Test are the blurred ones.", "",
              "| subset | photos | found today | found new | extra detections today | extra detections new |",
              "|---|---|---|---|---|---|"]
    for subset, before in today["real"].items():
        after = new["real"][subset]
        lines.append(f"| {subset} | {before['images']} | {before['found']} | **{after['found']}** | "
                     f"{before['false']} | "
                     f"{after['false']} |")
    if result.get("restoration"):
        restoration = result["restoration"]
        lines += ["", f"Are the new landmarks good enough to align? Each found face (moderate damage) is aligned "
                  f"with the detected landmarks and, separately, with the clean photo's; the restorer "
                  f"({restoration['model']}) gains this much PSNR over its input in each case (dB, mean):", "",
                  "| damage | faces | gain, detected landmarks | gain, clean-photo landmarks |", "|---|---|---|---|"]
        for category, row in restoration["by_category"].items():
            lines.append(f"| {category} | {row['faces']} | {row['gain_db_detected']:+.2f} | "
                         f"{row['gain_db_reference']:+.2f} |")
    timing = result["ms_per_frame"]
    lines += ["", f"Time per frame (median ms, 1 thread, the two detectors alternating on the same images; video "
              f"frames are {', '.join(timing['video frame sizes'])}):", "",
              "| images | today | new | new / today |", "|---|---|---|---|"]
    for label in ("video frames", "photos (64-96 px faces)"):
        if timing.get(label):
            t = timing[label]
            lines.append(f"| {label} | {t['today']} | {t['new']} | {t['new'] / t['today']:.2f} |")
    lines += ["", "### Against the detection targets", "", "| target | measured | met? |", "|---|---|---|"]
    for target, measured, met in targets(result):
        lines.append(f"| {target} | {measured} | {'yes' if met else '**no**'} |")
    lines += ["", NOTES]
    return "\n".join(lines) + "\n"


NOTES = """Notes. The pyramid is what finds blurred, dark and compressed faces: at a quarter or an eighth of the
input size their blur is a pixel or two and YuNet sees an ordinary small face. Landmarks come from a
score- and scale-weighted mean of the passes that found the face; on clean faces that moves them by
NME 0.03 from the single pass (about 1 px here), while on damaged faces it cuts the error by up to
two thirds, and restoration gains about as much with the detected landmarks as with the clean photo's
(within 0.3 dB in every category). Mosaics are
found without a model (`pipeline/mosaic.py`): cells of 3-40 px, at least 6 x 6 of them, whole-frame or
face-only, also after JPEG or H.264 (tests). Still missed: a sixth of the severe CCTV chain (shake of up
to 25 px on a 64 px face, then x4 downscaling), and mosaics too coarse to hold a face (fewer than about 7
cells across it). Beyond the severe tier (blur of half the face width and more) YuNet starts to see
whole blurred heads or torsos as faces at any scale, the single pass included."""


def targets(result: dict) -> list[tuple[str, str, bool]]:
    new = result["by"]["new"]
    photos = new["photos"]
    pixelated = photos["pixelate/moderate"]
    others = {key: value for key, value in photos.items()
              if key.endswith("/moderate") and not key.startswith("pixelate")}
    worst_key = min(others, key=lambda key: others[key]["found"])
    worst = others[worst_key]
    blurred = [new["real"][subset] for subset in REAL_BLURRED if subset in new["real"]]
    found_real, total_real = sum(t["found"] for t in blurred), sum(t["images"] for t in blurred)
    scenes = new["scenes"]["scikit-image scenes"]
    timing = result["ms_per_frame"]
    ratios = [timing[label]["new"] / timing[label]["today"] for label in ("video frames", "photos (64-96 px faces)")
              if timing.get(label)]
    return [
        ("pixelated faces found >= 50 of 59 (moderate)", f"{pixelated['found']} of {pixelated['images']} "
         f"(severe: {photos['pixelate/severe']['found']})", pixelated["found"] >= 50),
        ("every other category (moderate): all but at most 2", f"worst: {worst_key.split('/')[0]} "
         f"{worst['found']} of {worst['images']}", worst["images"] - worst["found"] <= 2),
        ("real blurred photos >= 19 of 20 at default settings", f"{found_real} of {total_real}", found_real >= 19),
        ("at most 1 false face over 17 face-free scenes", f"{scenes['false']} over {scenes['images']} "
         f"(+ {new['scenes']['video frames, faces masked']['false']} over the masked video frames)",
         scenes["false"] <= 1),
        ("detection time at most twice today's", " / ".join(f"{r:.2f}x" for r in ratios), max(ratios) <= 2),
    ]


def write_doc(text: str) -> None:
    write_section(SECTION, text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--videos", type=Path, default=REPO.parent / "shared" / "videos")
    parser.add_argument("--photos", type=int, default=59)
    parser.add_argument("--severities", nargs="+", choices=SEVERITIES, default=list(SEVERITIES))
    parser.add_argument("--real-subsets", nargs="+", default=["CelebA", "CelebChild-Test", "LFW-Test", *REAL_BLURRED])
    parser.add_argument("--frames-per-video", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-restoration", action="store_true",
                        help="skip the restoration-gain check of the landmarks (needs the shipped model)")
    parser.add_argument("--json", type=Path, help="also write the raw numbers here")
    parser.add_argument("--write-doc", action="store_true", help="replace this section of docs/BENCHMARKS.md")
    parser.add_argument("--from-json", type=Path, help="render the tables from an earlier --json instead of measuring")
    args = parser.parse_args()
    if args.from_json:
        result = json.loads(args.from_json.read_text())
    else:
        started = time.perf_counter()
        result = measure(args)
        result["minutes"] = round((time.perf_counter() - started) / 60, 1)
    command = ".venv/bin/python scripts/bench_detection.py --write-doc"
    text = markdown(result, command)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    if args.write_doc:
        write_doc(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
