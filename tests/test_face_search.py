"""The video face search (footage/search.py): full search every k-th frame, one pass between, on real clips."""
from __future__ import annotations

import numpy as np
import pytest

from footage_support import SHARED_VIDEOS

pytestmark = pytest.mark.skipif(not SHARED_VIDEOS.is_dir(), reason=f"{SHARED_VIDEOS} not present (team footage)")


def decoded_frames(name: str, count: int) -> list[np.ndarray]:
    import av

    frames = []
    with av.open(str(SHARED_VIDEOS / name)) as container:
        for frame in container.decode(video=0):
            frames.append(frame.to_ndarray(format="bgr24"))
            if len(frames) == count:
                break
    return frames


@pytest.fixture(scope="module")
def detector():
    from facedeblur.pipeline.detect import FaceDetector

    return FaceDetector(threads=1)


def test_region_search_between_full_searches_finds_the_same_face(detector):
    """A talking head: the full search runs on every 8th frame only, and every frame's one face is where the full
    search on that frame puts it: box overlap >= 0.8, landmarks on average within a fifth of the eye distance
    (between them lies the fusion of the smaller passes, which moves a blurred frame's landmarks by a few px)."""
    from facedeblur.footage.search import FaceSearch
    from facedeblur.pipeline.detect import box_overlap

    frames = decoded_frames("webcam-single-face.mp4", 33)
    search = FaceSearch(detector, full_search_every=8)
    for image in frames:
        faces = search.find(image)
        full = [f for f in detector.detect(image, include_weak=True) if not f.weak]
        assert len([f for f in faces if not f.weak]) == len(full) == 1
        assert box_overlap(faces[0].box, full[0].box) >= 0.8
        eye_distance = float(np.linalg.norm(full[0].landmarks[1] - full[0].landmarks[0]))
        assert float(np.linalg.norm(faces[0].landmarks - full[0].landmarks, axis=1).mean()) < 0.2 * eye_distance
    assert search.searches == 33 and search.full_searches == 5  # frames 0, 8, 16, 24, 32


def test_full_search_on_every_frame_where_faces_are_small(detector):
    """Small faces (a classroom) need every pass: every frame gets the full search, so the search finds
    exactly what the detector finds."""
    from facedeblur.footage.search import FaceSearch

    frames = decoded_frames("classroom-small-faces.gif", 6)
    search = FaceSearch(detector, full_search_every=8)
    for image in frames:
        faces = search.find(image)
        full = detector.detect(image, include_weak=True)
        assert [f.box.tolist() for f in faces] == [f.box.tolist() for f in full]
    assert search.full_searches == len(frames)


def test_a_lost_face_or_a_cut_gets_the_full_search_at_once(detector):
    """The frame after a cut is searched in full; so is a frame where the cheaper search loses the previous
    frame's face (here: covered by a grey patch), and the frame after it, which follows a frame with no face."""
    from facedeblur.footage.search import FaceSearch

    first, second, third = decoded_frames("webcam-single-face.mp4", 3)
    search = FaceSearch(detector, full_search_every=8)
    search.find(first)
    search.find(second, after_cut=True)
    assert search.full_searches == 2
    x1, y1, x2, y2 = (int(v) for v in search.previous[0].box)
    covered = third.copy()
    covered[max(0, y1 - 20):y2 + 20, max(0, x1 - 20):x2 + 20] = 128
    assert [f for f in search.find(covered) if not f.weak] == []
    assert search.full_searches == 3
    assert len(search.find(third)) >= 1 and search.full_searches == 4
    assert len(search.find(third)) >= 1 and search.full_searches == 4  # a clear face again: the cheaper search
