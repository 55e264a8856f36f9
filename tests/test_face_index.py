"""The person-search index (search/face_index.py) on a real SQLite file: exact search, and the inverted file
(faiss) a long-running server switches to when many faces are stored, against each other."""
from __future__ import annotations

import numpy as np
import pytest

PEOPLE, TRACKS_PER_PERSON, TRACKS_PER_JOB = 1000, 3, 60


def unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def sightings(centres: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One vector per sighting of each person: their centre plus noise, so two sightings of one person are
    about 0.45 similar (SFace's same-person range) and two people about 0."""
    return unit(centres + 1.1 * unit(rng.standard_normal(centres.shape)))


def manifest_of(vectors: np.ndarray) -> dict:
    from facedeblur.search.identity_vector import IDENTITY_MODEL

    return {"tracks": [{"id": number, "identity": {"model": IDENTITY_MODEL, "vector": vector.tolist()},
                        "best_frames": [{}]}
                       for number, vector in enumerate(vectors, start=1)]}


@pytest.fixture(scope="module")
def people() -> np.ndarray:
    return unit(np.random.default_rng(0).standard_normal((PEOPLE, 128)))


@pytest.fixture
def filled(tmp_path, people):
    """An index of PEOPLE x TRACKS_PER_PERSON tracks in jobs of TRACKS_PER_JOB, and who each (job, track) is."""
    from facedeblur.search.face_index import FaceIndex

    rng = np.random.default_rng(1)
    order = np.repeat(np.arange(PEOPLE), TRACKS_PER_PERSON)
    rng.shuffle(order)
    vectors = sightings(people[order], rng)
    index = FaceIndex(tmp_path)
    person_of = {}
    for job, first in enumerate(range(0, len(order), TRACKS_PER_JOB), start=1):
        index.add_job(job, manifest_of(vectors[first:first + TRACKS_PER_JOB]))
        for number, person in enumerate(order[first:first + TRACKS_PER_JOB], start=1):
            person_of[(job, number)] = int(person)
    return tmp_path, person_of


def test_the_inverted_file_ranks_like_the_exact_search(filled, people) -> None:
    """Queries are new sightings of stored people. The approximate index must find the exact search's best match
    nearly always, return exact similarities, and never return an excluded track."""
    from facedeblur.search.face_index import FaceIndex

    state, person_of = filled
    exact, approximate = FaceIndex(state), FaceIndex(state, approximate_from_rows=1000)
    queries = sightings(people[:100], np.random.default_rng(2))
    same_best = 0
    for person, query in enumerate(queries):
        exact_hits, approximate_hits = exact.search(query, 10), approximate.search(query, 10)
        assert approximate._current().hashed is not None and exact._current().hashed is None
        only_best = approximate.search(query, 1)[0]   # the fewest candidates: the hardest case
        same_best += (exact_hits[0].job_id, exact_hits[0].track_id) == (only_best.job_id, only_best.track_id)
        assert person_of[(exact_hits[0].job_id, exact_hits[0].track_id)] == person
        similarities = [hit.similarity for hit in approximate_hits]
        assert similarities == sorted(similarities, reverse=True)
        by_key = {(h.job_id, h.track_id): h.similarity for h in exact.search(query, PEOPLE * TRACKS_PER_PERSON)}
        for hit in approximate_hits:
            assert hit.similarity == pytest.approx(by_key[(hit.job_id, hit.track_id)], abs=1e-5)
        best = approximate_hits[0]
        without_it = approximate.search(query, 10, exclude=(best.job_id, best.track_id))
        assert (best.job_id, best.track_id) not in {(h.job_id, h.track_id) for h in without_it}
        assert all(h.job_id != best.job_id for h in approximate.search(query, 10, exclude_job=best.job_id))
    assert same_best >= 97


def test_new_and_removed_jobs_reach_the_hashed_search(filled, people) -> None:
    """A job added after the others were hashed is found (hashed and appended); a removed job is gone (rebuild)."""
    from facedeblur.search.face_index import FaceIndex

    state, _ = filled
    index = FaceIndex(state, approximate_from_rows=1000)
    newcomer = unit(np.random.default_rng(3).standard_normal(128))
    assert index.search(newcomer, 1)[0].similarity < 0.5
    hashed_before = index._current().hashed
    index.add_job(999, manifest_of(newcomer[None]))
    hit = index.search(newcomer, 1)[0]
    assert (hit.job_id, hit.track_id) == (999, 1) and hit.similarity == pytest.approx(1.0, abs=1e-5)
    assert index._current().hashed is hashed_before   # hashed and appended, not rebuilt
    index.remove_jobs([999])
    assert index.search(newcomer, 1)[0].job_id != 999
    assert index._current().hashed is not hashed_before
