"""Reading and writing images: clear errors for unreadable files, atomic writes so no half-written output."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

from .errors import FacedeblurError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def read_image(path: str | Path) -> np.ndarray:
    """Read a BGR uint8 image; greyscale and alpha inputs are converted to three channels."""
    path = Path(path)
    if not path.exists():
        raise FacedeblurError(f"{path}: file not found; check the path")
    if not os.access(path, os.R_OK):
        raise FacedeblurError(f"{path}: not readable; fix its permissions")
    data = np.fromfile(str(path), dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise FacedeblurError(f"{path}: not a readable image (png, jpg, webp, bmp, tiff); replace or remove it")
    if image.dtype != np.uint8:
        image = cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if image.ndim == 2:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    elif image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    return image


def decode_image_bytes(data: bytes, name: str = "image") -> np.ndarray:
    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise FacedeblurError(f"{name}: not a readable image")
    return image


def write_image_atomic(path: str | Path, image: np.ndarray) -> None:
    """Encode in memory, write to a temporary file beside the target, then rename over it."""
    path = Path(path)
    ext = path.suffix.lower() or ".png"
    ok, encoded = cv2.imencode(ext, image)
    if not ok:
        raise FacedeblurError(f"{path}: cannot encode image as {ext}")
    write_bytes_atomic(path, encoded.tobytes())


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def prepare_output_dir(output: Path) -> None:
    """Create OUTDIR and prove it takes writes before any work starts, so a bad -o fails in one line."""
    try:
        output.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=output, prefix=".facedeblur-probe-", delete=True)
        probe.close()
    except OSError as exc:
        raise FacedeblurError(f"output folder {output} cannot be written ({exc.strerror or exc}); choose another -o") from None
