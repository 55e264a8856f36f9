"""A search by photo: check the bytes like every other image input, find the largest face, embed it with the
same SFace model and alignment the tracks were embedded with (identity_vector.py)."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import UnusableInputError
from ..image_files import check_pixel_limit, header_size

MAX_PHOTO_BYTES = 20 * 1024 * 1024   # a camera's full-size JPEG fits; anything larger is not a face photo
PHOTO_KINDS = "png, jpg, webp, bmp or tiff"


@dataclass(frozen=True)
class PhotoFace:
    vector: np.ndarray      # unit length
    box: list[float]        # x1, y1, x2, y2 of the face searched for
    faces_found: int        # faces in the photo; the largest is searched for


def decode_photo(data: bytes, name: str) -> np.ndarray:
    """The photo as BGR pixels, or UnusableInputError naming what is wrong: too many bytes, not an image of a
    supported kind (judged from its header, never its name), too many pixels (pipeline.max_image_pixels)."""
    if len(data) > MAX_PHOTO_BYTES:
        raise UnusableInputError(f"{name}: {len(data) / 1e6:.1f} MB is above the {MAX_PHOTO_BYTES // 2**20} MiB "
                                 "limit for a search photo; crop or downscale it")
    if not data:
        raise UnusableInputError(f"{name}: is empty; choose a {PHOTO_KINDS} photo with a face")
    # Only headers we can size are decoded, so the pixel limit holds before OpenCV allocates anything.
    if header_size(data) is None or data[:6] in (b"GIF87a", b"GIF89a"):
        raise UnusableInputError(f"{name}: not a {PHOTO_KINDS} image; choose a photo with a face")
    check_pixel_limit(name, data)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.size == 0:
        raise UnusableInputError(f"{name}: not a readable image (damaged or truncated); choose another photo")
    return image


def photo_face(image: np.ndarray, detector, embedder, name: str) -> PhotoFace:
    """The identity vector of the largest face in the photo."""
    faces = detector.detect(image)
    if not faces:
        raise UnusableInputError(f"{name}: no face found; use a photo where the face is at least about 20 pixels "
                                 "wide and turned towards the camera")
    largest = max(faces, key=lambda f: float((f.box[2] - f.box[0]) * (f.box[3] - f.box[1])))
    vector = embedder.embed_faces(image, [largest.landmarks])[0]
    return PhotoFace(vector.astype(np.float32), [round(float(v), 1) for v in largest.box], len(faces))


class PhotoSearcher:
    """The detector and the recogniser, loaded once (about a second) and reused for every photo."""

    def __init__(self, settings):
        from ..pipeline.detect import FaceDetector
        from ..pipeline.identity import IdentityEmbedder

        self.detector = FaceDetector(**settings.detector.detector_options(), provider=settings.provider,
                                     threads=settings.threads)
        self.embedder = IdentityEmbedder(provider=settings.provider, threads=settings.threads)
        self.max_image_pixels = settings.max_image_pixels

    def face_of(self, data: bytes, name: str) -> PhotoFace:
        from ..image_files import set_max_image_pixels

        set_max_image_pixels(self.max_image_pixels)
        return photo_face(decode_photo(data, name), self.detector, self.embedder, name)
