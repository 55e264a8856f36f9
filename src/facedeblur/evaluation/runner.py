"""Degrade every clean face once per category, restore it every way, and score each result."""
from __future__ import annotations

import multiprocessing
import time
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from ..degradations import BLUR_CATEGORIES, CATEGORIES, SEVERITIES, degrade
from ..pipeline.identity import IdentityEmbedder
from ..pipeline.restore import FaceRestorer
from .classical import classical_restorations
from .dlib_identity import DlibJudge
from .faces import CleanFace
from .metrics import identity_similarities, psnr, ssim

INPUT, OURS = "input", "ours"
FACES_PER_CHUNK = 4  # x 33 cases = 132 degraded crops, restored in batches of the restorer's batch size


def case_label(category: str, severity: str) -> str:
    """The row name of one damage case in reports: category and severity tier."""
    return f"{category}/{severity}"


def split_case(label: str) -> tuple[str, str]:
    category, _, severity = label.partition("/")
    return category, severity


@dataclass
class Score:
    face: int
    race: str | None
    category: str
    method: str
    psnr: float
    ssim: float
    identity: float
    # dlib ResNet distance to the clean face (same person below 0.6): the input and ours only, and only
    # when the judge is installed (the eval extra)
    dlib_distance: float | None = None


@dataclass
class GridSample:
    """Every output for one face and category, kept for the comparison image."""
    face: int
    category: str
    clean: np.ndarray
    outputs: dict[str, np.ndarray] = field(default_factory=dict)


def degradation_rng(seed: int, face_index: int, category: str, severity: str = "moderate") -> np.random.Generator:
    """One independent stream per (seed, face, category, severity): reproducible, and every method sees the
    same damage."""
    return np.random.default_rng([seed, face_index, CATEGORIES.index(category), SEVERITIES.index(severity)])


def evaluate_faces(faces: list[CleanFace], restorer: FaceRestorer, embedder: IdentityEmbedder,
                   categories: tuple[str, ...], seed: int, grid_faces: set[int],
                   with_classical: bool = True, judge: DlibJudge | None = None
                   ) -> tuple[list[Score], list[GridSample], float]:
    """Returns the scores, the outputs of the faces in `grid_faces`, and the seconds it took."""
    scores: list[Score] = []
    samples: list[GridSample] = []
    started = time.perf_counter()
    progress = tqdm(total=len(faces), desc=f"evaluating x{len(categories)} cases", unit="face")
    for start in range(0, len(faces), FACES_PER_CHUNK):
        chunk = faces[start:start + FACES_PER_CHUNK]
        chunk_scores, chunk_samples = evaluate_chunk(chunk, restorer, embedder, categories, seed, grid_faces,
                                                     with_classical, judge)
        scores.extend(chunk_scores)
        samples.extend(chunk_samples)
        progress.update(len(chunk))
        if start == 0 and len(faces) > len(chunk):
            _print_estimate(time.perf_counter() - started, len(chunk), len(faces), len(categories))
    progress.close()
    return scores, samples, time.perf_counter() - started


def _print_estimate(seconds: float, done: int, total: int, categories: int, workers: int = 1) -> None:
    per_face = seconds / done
    tqdm.write(f"estimated time: about {per_face * total / workers / 60:.1f} min for {total} faces "
               f"x {categories} damage cases ({per_face:.2f} s per face per worker on this machine)")


_worker_models: tuple[FaceRestorer, IdentityEmbedder, DlibJudge | None] | None = None


def _init_worker(model_path: str, provider: str, with_dlib: bool, flip_average: bool) -> None:
    global _worker_models
    import cv2
    cv2.setNumThreads(1)  # the worker processes are the parallelism
    _worker_models = (FaceRestorer(model_path, provider=provider, threads=1, batch_size=32, flip_average=flip_average),
                      IdentityEmbedder(provider=provider, threads=1), DlibJudge() if with_dlib else None)


def _evaluate_chunk_in_worker(task: tuple[list[CleanFace], tuple[str, ...], int, set[int], bool]):
    chunk, categories, seed, grid_faces, with_classical = task
    restorer, embedder, judge = _worker_models
    return evaluate_chunk(chunk, restorer, embedder, categories, seed, grid_faces, with_classical, judge)


def evaluate_faces_parallel(faces: list[CleanFace], model_path: str, provider: str, categories: tuple[str, ...],
                            seed: int, grid_faces: set[int], workers: int, with_classical: bool = True,
                            with_dlib: bool = False, flip_average: bool = False) -> tuple[list[Score], list[GridSample], float]:
    """The same as `evaluate_faces`, spread over worker processes (one model copy each, one thread each).
    Results do not depend on the number of workers: every degradation is seeded by face and category."""
    from concurrent.futures import ProcessPoolExecutor

    scores: list[Score] = []
    samples: list[GridSample] = []
    started = time.perf_counter()
    chunks = [faces[i:i + FACES_PER_CHUNK] for i in range(0, len(faces), FACES_PER_CHUNK)]
    progress = tqdm(total=len(faces), desc=f"evaluating x{len(categories)} cases ({workers} workers)", unit="face")
    # spawn, not fork: a child forked from a process with onnxruntime threads running can deadlock
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                             initializer=_init_worker, initargs=(model_path, provider, with_dlib, flip_average)) as pool:
        tasks = ((chunk, categories, seed, grid_faces, with_classical) for chunk in chunks)
        for done, (chunk_scores, chunk_samples) in enumerate(pool.map(_evaluate_chunk_in_worker, tasks), start=1):
            scores.extend(chunk_scores)
            samples.extend(chunk_samples)
            progress.update(len(chunks[done - 1]))
            if done == 1 and len(chunks) > 1:
                _print_estimate((time.perf_counter() - started) * workers, len(chunks[0]), len(faces),
                                len(categories), workers)
    progress.close()
    return scores, samples, time.perf_counter() - started


def evaluate_chunk(chunk: list[CleanFace], restorer: FaceRestorer, embedder: IdentityEmbedder,
                   categories: tuple[str, ...], seed: int, grid_faces: set[int],
                   with_classical: bool = True, judge: DlibJudge | None = None) -> tuple[list[Score], list[GridSample]]:
    scores: list[Score] = []
    samples: list[GridSample] = []
    template = restorer.info.template
    clean_embeddings = embedder.embed_aligned([face.crop for face in chunk], template)
    jobs = []
    for row, face in enumerate(chunk):
        for label in categories:  # "category/severity" labels
            category, severity = split_case(label)
            jobs.append((face, row, label, degrade(face.crop, category, degradation_rng(seed, face.index, category, severity),
                                                   severity)))
    restored = restorer.restore_batch([job[3].image for job in jobs])
    crops: list[np.ndarray] = []
    references: list[np.ndarray] = []
    labels: list[tuple[CleanFace, str, str]] = []
    for (face, row, category, damaged), ours in zip(jobs, restored):
        # Deconvolution gets the true kernel only in the single-blur categories, where every face has one.
        kernel = damaged.kernel if split_case(category)[0] in BLUR_CATEGORIES else None
        outputs = {INPUT: damaged.image, OURS: ours}
        if with_classical:
            outputs.update(classical_restorations(damaged.image, kernel))
        if face.index in grid_faces:
            samples.append(GridSample(face.index, category, face.crop, outputs))
        for method, image in outputs.items():
            crops.append(image)
            references.append(clean_embeddings[row])
            labels.append((face, category, method))
    similarities = identity_similarities(embedder, crops, np.asarray(references), template)
    distances = _dlib_distances(judge, chunk, labels, crops, template)
    for (face, category, method), image, similarity, distance in zip(labels, crops, similarities, distances):
        scores.append(Score(face.index, face.race, category, method, psnr(face.crop, image),
                            ssim(face.crop, image), float(similarity), distance))
    return scores, samples


def _dlib_distances(judge: DlibJudge | None, chunk: list[CleanFace], labels: list[tuple[CleanFace, str, str]],
                    crops: list[np.ndarray], template: np.ndarray) -> list[float | None]:
    """The independent judge's distance for the input and our output (the classical methods are left out:
    at about 80 ms a face it would double the evaluation's time for rows nobody ships)."""
    if judge is None:
        return [None] * len(crops)
    clean = judge.descriptors([face.crop for face in chunk], template)
    row_of = {face.index: row for row, face in enumerate(chunk)}
    wanted = [i for i, (_, _, method) in enumerate(labels) if method in (INPUT, OURS)]
    found = judge.distances([crops[i] for i in wanted], clean[[row_of[labels[i][0].index] for i in wanted]], template)
    distances: list[float | None] = [None] * len(crops)
    for i, distance in zip(wanted, found):
        distances[i] = float(distance)
    return distances
