#!/usr/bin/env python3
"""Person-search benchmark: retrieval across jobs on labelled footage, and query time at 10,000 and 1,000,000
stored faces.

    nice -n 10 .venv/bin/python scripts/bench_search.py [--videos ../shared/videos] [--parts 2]
        [--max-frames 240] [--sizes 10000 1000000] [--skip-retrieval] [--candidates N ...] [--compare-libraries]
        [--json FILE]

Retrieval: every clip of ../shared/videos with a truth file (tests/data/tracks/<clip>.json) is cut into
--parts consecutive pieces, each written as a frame folder and run through `process` as its own job (the
real pipeline; only the restored and annotated outputs are switched off, they do not touch the identity
vector). Each track is matched to the labelled person its boxes cover (IoU >= 0.3 in at least half its
frames). A query is a track whose person also has a track in another job; it succeeds when the top-ranked
track among all other jobs' tracks (every clip's) shows the same person. The speaker of
stage-and-audience.mp4 is labelled once per shot (a cut starts new ids); the three ids are one man here.

Query time: a real FaceIndex (STATE/faces.sqlite3) filled with N random unit vectors, as jobs of 100 tracks;
the time of FaceIndex.search (the similarity search, the top-20 selection and the thumbnail look-up) once the
vectors are in memory, and the time of the first search (reading them in, and hashing them for the
server), for the exact search (`facedeblur search`) and for the review server's (a hashed search from
face_index.APPROXIMATE_FROM_ROWS faces on; `--candidates` tries other numbers of candidates re-ranked per
search). Queries are stored faces seen again (moved to a similarity of 0.5: random vectors have no clusters to
help, so this is the hard case for any approximate index); reported: how often the stored face ranks first,
and how often the server's best is the exact search's.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "scripts"))

from benchmarks_doc import cpu_name  # noqa: E402
from bench_tracks import MATCH_IOU, REAL_SHARE, TRUTH_DIR, iou, load_truth  # noqa: E402

SAME_PERSON = {"speaker-wide": "speaker", "speaker-profile": "speaker", "speaker-medium": "speaker"}
QUERIES = 30          # timed searches per setting
RECALL_QUERIES = 200  # searches that measure how often the right face ranks first


def cut_into_parts(clip: Path, parts: int, max_frames: int, root: Path) -> list[tuple[Path, int, float]]:
    """(frame folder, first frame, fps) of each part."""
    from facedeblur.footage.decode import open_source
    from facedeblur.image_files import write_image_atomic

    source = open_source(clip, 25.0, 25.0)
    frames = []
    for frame in source.frames():
        if len(frames) >= max_frames:
            break
        frames.append(frame.image)
    fps = source.info.fps or 25.0
    bounds = np.linspace(0, len(frames), parts + 1).astype(int)
    result = []
    for part, (start, end) in enumerate(zip(bounds, bounds[1:]), 1):
        folder = root / f"{clip.stem}-part{part}"
        folder.mkdir(parents=True)
        for index in range(start, end):
            write_image_atomic(folder / f"{index - start:05d}.png", frames[index])
        result.append((folder, int(start), fps))
    return result


def person_of(track: dict, truth: dict, offset: int) -> str | None:
    """The labelled person this track's boxes cover in at least REAL_SHARE of its frames, or None."""
    votes: dict[str, int] = {}
    for entry in track["frames"]:
        frame = entry["frame"] + offset
        if frame >= truth["frames"]:
            continue
        for person, box in truth["people"][frame].items():
            if iou(np.array(entry["box"], float), box) >= MATCH_IOU:
                votes[person] = votes.get(person, 0) + 1
    if not votes:
        return None
    person, count = max(votes.items(), key=lambda item: item[1])
    return SAME_PERSON.get(person, person) if count >= REAL_SHARE * len(track["frames"]) else None


def retrieval(videos: Path, parts: int, max_frames: int, work: Path) -> dict:
    from facedeblur.config import PipelineSettings
    from facedeblur.footage.process import load_models, process_input
    from facedeblur.search.face_index import FaceIndex

    (work / "state").mkdir(parents=True)
    index = FaceIndex(work / "state")
    labels: dict[tuple[int, int], tuple[str, str]] = {}     # (job, track) -> (clip, person)
    job_id, seconds = 0, 0.0
    models = None
    for truth_file in sorted(TRUTH_DIR.glob("*.json")):
        truth = load_truth(truth_file)
        clip = videos / truth["clip"]
        if not clip.is_file():
            continue
        for folder, offset, fps in cut_into_parts(clip, parts, max_frames, work / "cuts"):
            settings = PipelineSettings(frame_folder_fps=fps, output={"write_restored": False,
                                                                       "write_annotated": False})
            models = models or load_models(settings)
            job_id += 1
            started = time.perf_counter()
            manifest = process_input(folder, work / "out" / folder.name, settings, models, progress=False)
            seconds += time.perf_counter() - started
            index.add_job(job_id, manifest)
            for track in manifest["tracks"]:
                person = person_of(track, truth, offset)
                if person is not None and track.get("identity"):
                    labels[(job_id, track["id"])] = (truth["clip"], person)
            print(f"job {job_id}: {folder.name}: {len(manifest['tracks'])} track(s), "
                  f"{sum(1 for k in labels if k[0] == job_id)} labelled", flush=True)
    per_clip: dict[str, list[int]] = {}
    details = []
    for (job, track), who in sorted(labels.items()):
        elsewhere = [k for k, v in labels.items() if v == who and k[0] != job]
        if not elsewhere:
            continue
        hits = index.search(index.vector_of(job, track), 5, exclude_job=job)
        top = hits[0] if hits else None
        correct = top is not None and labels.get((top.job_id, top.track_id)) == who
        same = [h.similarity for h in hits if labels.get((h.job_id, h.track_id)) == who]
        per_clip.setdefault(who[0], []).append(int(correct))
        details.append({"job": job, "track": track, "clip": who[0], "person": who[1], "correct": correct,
                        "top": [top.job_id, top.track_id, round(top.similarity, 3)] if top else None,
                        "top_person": labels.get((top.job_id, top.track_id)) if top else None,
                        "best_same_similarity": round(max(same), 3) if same else None})
    queries = sum(len(v) for v in per_clip.values())
    correct = sum(sum(v) for v in per_clip.values())
    return {"jobs": job_id, "tracks_indexed": index.size(), "labelled_tracks": len(labels), "queries": queries,
            "top1": correct / queries if queries else None, "correct": correct,
            "per_clip": {clip: [sum(v), len(v)] for clip, v in per_clip.items()},
            "process_seconds": round(seconds, 1), "details": details}


def query_times(size: int, work: Path, compare: bool, candidates: list[int], seed: int = 0) -> dict:
    from facedeblur.search.face_index import APPROXIMATE_FROM_ROWS, CANDIDATES, FaceIndex

    rng = np.random.default_rng(seed)
    (work / f"state-{size}").mkdir(parents=True)
    index = FaceIndex(work / f"state-{size}")
    per_job = 100
    started = time.perf_counter()
    # Rows written as add_job writes them, in one transaction (add_job's manifest checks, 128 numbers per track
    # in Python, take most of an hour for a million faces on this busy machine, and are not what is timed).
    db = sqlite3.connect(index.path)
    with db:
        for first in range(0, size, 100_000):
            vectors = _unit(rng.standard_normal((min(100_000, size - first), 128)))
            rows = []
            for offset, vector in enumerate(vectors):
                job, track = (first + offset) // per_job + 1, (first + offset) % per_job + 1
                rows.append((job, track, vector.astype("<f4").tobytes(), f"faces/{track}/f-original.png",
                             f"faces/{track}/f-restored.png"))
            db.executemany("INSERT INTO faces (job_id, track_id, vector, original, restored) VALUES (?,?,?,?,?)",
                           rows)
    db.close()
    fill = time.perf_counter() - started
    result = {"faces": index.size(), "fill_seconds": round(fill, 1)}
    searches = {"exact": index, "server": FaceIndex(work / f"state-{size}", approximate_from_rows=APPROXIMATE_FROM_ROWS)}
    stored = np.frombuffer(b"".join(r[0] for r in sqlite3.connect(index.path).execute(
        "SELECT vector FROM faces ORDER BY id")), "<f4").reshape(-1, 128)
    # Queries: the same person seen again. Each is a stored face moved to a cosine similarity of about 0.5 with
    # it (SFace's same-person tracks across jobs score 0.4-0.7), so the stored face should rank first.
    picks = rng.choice(len(stored), RECALL_QUERIES, replace=False)
    queries = _unit(stored[picks] + np.sqrt(3.0) * _unit(rng.standard_normal((RECALL_QUERIES, 128))))
    for name, searcher in searches.items():
        load_average = os.getloadavg()[0]
        started = time.perf_counter()
        searcher.search(queries[0], 20)
        first = time.perf_counter() - started
        hashed = searcher._current().hashed
        settings = [None] if hashed is None else candidates or [CANDIDATES]
        for setting in settings:
            if hashed is not None:
                hashed.candidates = setting
            figures = {"first_search_seconds": round(first, 2), **_timed(lambda q: searcher.search(q, 20),
                                                                           queries[:QUERIES]),
                       "load_average": round(max(load_average, os.getloadavg()[0]), 1)}
            if hashed is not None:
                figures.update(candidates=setting)
            found = [(h.job_id, h.track_id) for h in (searcher.search(q, 1)[0] for q in queries)]
            figures["stored_face_first"] = float(np.mean([(job - 1) * per_job + track - 1 == pick
                                                          for (job, track), pick in zip(found, picks)]))
            if searcher is index:   # the exact search runs first: the best matches the others are judged by
                exact_best = found
            elif hashed is not None:
                figures["same_best_as_exact"] = float(np.mean([a == b for a, b in zip(found, exact_best)]))
            result.setdefault("searches", {})[name if hashed is None else f"{name}, {setting} candidates"] = figures
    if compare:
        result["libraries"] = _libraries(index._current().vectors, queries[:QUERIES])
    return result


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def _timed(search, queries: np.ndarray) -> dict:
    times = []
    for query in queries:
        started = time.perf_counter()
        search(query)
        times.append(time.perf_counter() - started)
    return {"median_ms": round(1000 * statistics.median(times), 1),
            "p95_ms": round(1000 * float(np.percentile(times, 95)), 1)}


def _libraries(vectors: np.ndarray, queries: np.ndarray) -> dict:
    """The same exact top-20 search in the vector-index libraries that are installed (none is a dependency)."""
    found = {"numpy matrix-vector product alone": _timed(lambda q: np.argpartition(vectors @ q, -20)[-20:], queries)}
    try:
        import faiss
        flat = faiss.IndexFlatIP(vectors.shape[1])
        flat.add(vectors)
        found[f"faiss-cpu {faiss.__version__} IndexFlatIP"] = _timed(lambda q: flat.search(q[None], 20), queries)
        if len(vectors) >= 100_000:   # an inverted file scans nprobe of nlist clusters: approximate
            started = time.perf_counter()
            coarse = faiss.IndexFlatIP(vectors.shape[1])
            ivf = faiss.IndexIVFFlat(coarse, vectors.shape[1], 1024, faiss.METRIC_INNER_PRODUCT)
            ivf.train(vectors[np.random.default_rng(1).choice(len(vectors), 50_000, replace=False)])
            ivf.add(vectors)
            ivf.nprobe = 16
            build = time.perf_counter() - started
            timing = _timed(lambda q: ivf.search(q[None], 20), queries)
            # Recall of the exact best match, for queries near a stored face (a person seen again).
            rng = np.random.default_rng(2)
            picks = rng.choice(len(vectors), len(queries), replace=False)
            near = vectors[picks] + 0.6 / np.sqrt(vectors.shape[1]) * rng.standard_normal(queries.shape).astype(np.float32)
            near /= np.linalg.norm(near, axis=1, keepdims=True)
            exact = [int(np.argmax(vectors @ q)) for q in near]
            found_ivf = [int(ivf.search(q[None], 1)[1][0][0]) for q in near]
            timing["build_seconds"] = round(build, 1)
            timing["recall_at_1"] = float(np.mean([a == b for a, b in zip(exact, found_ivf)]))
            found[f"faiss-cpu {faiss.__version__} IndexIVFFlat nlist 1024 nprobe 16"] = timing
    except ImportError:
        pass
    try:
        import usearch
        from usearch.index import MetricKind, search
        found[f"usearch {usearch.__version__} exact"] = _timed(
            lambda q: search(vectors, q, 20, MetricKind.IP, exact=True), queries)
    except ImportError:
        pass
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=Path, default=REPO.parent / "shared" / "videos")
    parser.add_argument("--parts", type=int, default=2)
    parser.add_argument("--max-frames", type=int, default=240, help="frames used from each clip (the webcam clip "
                        "has 1337)")
    parser.add_argument("--sizes", type=int, nargs="*", default=[10_000, 1_000_000])
    parser.add_argument("--skip-retrieval", action="store_true")
    parser.add_argument("--compare-libraries", action="store_true", help="also time faiss-cpu and usearch where "
                        "importable (e.g. pip install --target /tmp/vec faiss-cpu usearch; PYTHONPATH=...:/tmp/vec)")
    parser.add_argument("--candidates", type=int, nargs="*", default=[], help="candidates re-ranked per search by "
                        "the server's hashed search, one run each (default: face_index.CANDIDATES)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    results: dict = {"cpu": cpu_name(), "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        if not args.skip_retrieval:
            if not args.videos.is_dir():
                print(f"no videos at {args.videos}; pass --videos or --skip-retrieval", file=sys.stderr)
                return 2
            results["retrieval"] = retrieval(args.videos, args.parts, args.max_frames, Path(tmp) / "retrieval")
            r = results["retrieval"]
            print(f"retrieval: {r['correct']}/{r['queries']} queries rank the same person first "
                  f"({100 * (r['top1'] or 0):.1f} %); per clip {r['per_clip']}", flush=True)
        results["query_times"] = []
        for size in args.sizes:
            timing = query_times(size, Path(tmp), args.compare_libraries, args.candidates)
            results["query_times"].append(timing)
            for name, figures in timing["searches"].items():
                print(f"{timing['faces']:>9,d} faces, {name}: search median {figures['median_ms']} ms, p95 "
                      f"{figures['p95_ms']} ms; first search (reads the vectors in) {figures['first_search_seconds']}"
                      f" s; stored face ranked first {100 * figures['stored_face_first']:.1f} %"
                      + (f", same best as exact {100 * figures['same_best_as_exact']:.1f} %"
                         if "same_best_as_exact" in figures else "")
                      + f"; load average {figures['load_average']}", flush=True)
            for name, figures in timing.get("libraries", {}).items():
                extra = {k: v for k, v in figures.items() if k not in ("median_ms", "p95_ms")}
                print(f"{'':>9}        {name}: median {figures['median_ms']} ms, p95 {figures['p95_ms']} ms"
                      f"{' ' + str(extra) if extra else ''}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
