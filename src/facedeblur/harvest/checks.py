"""Is this image a clean training face?

In the order they run, cheapest first: the byte limit, the format from the file's own magic bytes, the pixel
count from its header (a decompression bomb is refused before a single pixel is decoded), the decode, near
duplicates, and the face rules (one face large and sharp enough). Exact duplicates are caught by the
caller from the SHA-256 of the bytes, before any of this.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..footage.select_best import frontalness
from ..image_files import header_size
from ..pipeline.align import estimate_alignment, largest_face, warp_to_crop
from ..pipeline.face_crops import sharpness

# Why an image was not kept; the summary counts each, in this order.
ROBOTS = "robots"
DUPLICATE = "duplicate"
NO_FACE = "no face"
TOO_SMALL = "too small"
TOO_BLURRED = "too blurred"
TURNED_AWAY = "turned away"
TOO_LARGE = "too large"
NOT_AN_IMAGE = "not an image"
HTTP_ERROR = "HTTP error"
NOT_HTTP = "not http(s)"
PRIVATE_ADDRESS = "private address"
UNREADABLE = "unreadable"
CRAWL_DELAY = "crawl-delay too long"
SKIP_REASONS = (ROBOTS, DUPLICATE, NO_FACE, TOO_SMALL, TOO_BLURRED, TURNED_AWAY, TOO_LARGE, NOT_AN_IMAGE, HTTP_ERROR, NOT_HTTP,
                PRIVATE_ADDRESS, UNREADABLE, CRAWL_DELAY)

# Magic bytes -> the extension the kept file gets. Only formats OpenCV decodes and `train prepare` reads
# (inputs.IMAGE_EXTENSIONS); a GIF or SVG is "not an image" for training.
_MAGIC = ((b"\x89PNG\r\n\x1a\n", ".png"), (b"\xff\xd8\xff", ".jpg"), (b"II*\x00", ".tif"), (b"MM\x00*", ".tif"),
          (b"BM", ".bmp"))
# Content types a server may send with a photo. Anything else (text/html for an error page, image/svg+xml)
# is refused from the headers, before the body is read. Octet-stream is common for photos on plain servers,
# and the magic bytes decide then.
IMAGE_CONTENT_TYPES = {"image/jpeg", "image/pjpeg", "image/png", "image/webp", "image/bmp", "image/x-ms-bmp",
                       "image/tiff", "application/octet-stream", "binary/octet-stream"}


class Skipped(Exception):
    """An image (or page) that is not kept, with the reason the summary counts and a detail for the log."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


def image_extension(data: bytes) -> str | None:
    """'.png', '.jpg', '.webp', '.bmp' or '.tif' from the magic bytes; None for anything else."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    for magic, extension in _MAGIC:
        if data.startswith(magic):
            return extension
    return None


def content_type_is_image(content_type: str | None) -> bool:
    """A missing content type is allowed (the magic bytes decide); a declared one must be a photo type."""
    if not content_type:
        return True
    return content_type.split(";")[0].strip().lower() in IMAGE_CONTENT_TYPES


def decode_limited(data: bytes, max_bytes: int, max_pixels: int) -> tuple[np.ndarray, str]:
    """(BGR image, extension) of downloaded or read bytes, refusing before decoding what is too large or not a
    photo. Raises Skipped."""
    if len(data) > max_bytes:
        raise Skipped(TOO_LARGE, f"{len(data)} bytes, above the limit of {max_bytes}")
    extension = image_extension(data)
    if extension is None:
        raise Skipped(NOT_AN_IMAGE, "not a PNG, JPEG, WebP, BMP or TIFF file")
    size = header_size(data)
    if size is None or size[0] <= 0 or size[1] <= 0:
        # Without a readable size the pixel limit cannot be checked, so the bytes are never decoded.
        raise Skipped(NOT_AN_IMAGE, "image header unreadable")
    if size[0] * size[1] > max_pixels:
        raise Skipped(TOO_LARGE, f"{size[0]}x{size[1]} pixels, above the limit of {max_pixels}")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise Skipped(NOT_AN_IMAGE, "cannot be decoded")
    return image, extension


def difference_hash(image: np.ndarray, side: int = 16) -> np.ndarray:
    """A 256-bit perceptual hash (dHash): is each pixel of a side x side thumbnail brighter than its right
    neighbour. Resizing, re-compression and small colour shifts keep almost every bit."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY) if image.ndim == 3 else image
    thumbnail = cv2.resize(grey, (side + 1, side), interpolation=cv2.INTER_AREA).astype(np.int16)
    return np.packbits(thumbnail[:, 1:] > thumbnail[:, :-1])


class DuplicateIndex:
    """SHA-256 of every byte string seen, and the perceptual hashes of every kept image."""

    def __init__(self, near_bits: int):
        self.near_bits = near_bits
        self.digests: set[str] = set()
        self._hashes = np.zeros((0, 32), np.uint8)

    def seen_bytes(self, sha256: str) -> bool:
        """True for a repeat; records the digest otherwise."""
        if sha256 in self.digests:
            return True
        self.digests.add(sha256)
        return False

    def near_copy_distance(self, image_hash: np.ndarray) -> int | None:
        """Hamming distance to the closest kept image when within `near_bits`, else None."""
        if not len(self._hashes):
            return None
        distances = np.unpackbits(self._hashes ^ image_hash[None, :], axis=1).sum(axis=1)
        closest = int(distances.min())
        return closest if closest <= self.near_bits else None

    def add_kept(self, image_hash: np.ndarray) -> None:
        self._hashes = np.vstack([self._hashes, image_hash[None, :]])


@dataclass
class FaceQuality:
    face_size: float    # px, the shorter side of the detected box
    sharpness: float    # Laplacian variance of the face aligned to the trainer's crop
    frontalness: float  # 1 = frontal and level (select_best.frontalness)
    score: float        # detector confidence


def measure_face(image: np.ndarray, box: np.ndarray, landmarks: np.ndarray, score: float,
                 crop_size: int) -> FaceQuality:
    crop = warp_to_crop(image, estimate_alignment(landmarks, crop_size), crop_size)
    return FaceQuality(face_size=float(min(box[2] - box[0], box[3] - box[1])), sharpness=sharpness(crop),
                       frontalness=frontalness(np.asarray(landmarks)), score=float(score))


def face_rule(quality: FaceQuality, min_face_size: float, min_sharpness: float, min_frontalness: float) -> None:
    """Raises Skipped when the face is not a clean training target (photos and footage alike)."""
    if quality.face_size < min_face_size:
        raise Skipped(TOO_SMALL, f"face {quality.face_size:.0f} px, below {min_face_size:g} px")
    if quality.frontalness < min_frontalness:
        raise Skipped(TURNED_AWAY, f"frontalness {quality.frontalness:.2f}, below {min_frontalness:g}")
    if quality.sharpness < min_sharpness:
        raise Skipped(TOO_BLURRED, f"sharpness {quality.sharpness:.0f}, below {min_sharpness:g}")


class FaceJudge:
    """The detector as `train prepare` runs it on clean photos (one full-size pass, no mosaic search), so a
    kept photo is judged on the face prepare will align: the largest one."""

    def __init__(self, min_face_size: float, min_sharpness: float, min_frontalness: float, crop_size: int):
        from ..pipeline.detect import FaceDetector

        self.detector = FaceDetector(pyramid=(1.0,), find_mosaics=False)
        self.min_face_size = min_face_size
        self.min_sharpness = min_sharpness
        self.min_frontalness = min_frontalness
        self.crop_size = crop_size

    def judge(self, image: np.ndarray) -> FaceQuality:
        faces = self.detector.detect(image)
        if not faces:
            raise Skipped(NO_FACE)
        face = largest_face(faces)
        quality = measure_face(image, face.box, face.landmarks, face.score, self.crop_size)
        face_rule(quality, self.min_face_size, self.min_sharpness, self.min_frontalness)
        return quality
