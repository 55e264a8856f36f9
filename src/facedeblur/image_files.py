"""Reading and writing images: clear errors for unreadable files, atomic writes so no half-written output."""
from __future__ import annotations

import errno
import os
import stat
import struct
import tempfile
import zlib
from html import escape as html_escape  # xml.sax.saxutils's escape would import urllib, http and ssl
from pathlib import Path

import cv2
import numpy as np

from .defaults import DEFAULT_MAX_IMAGE_PIXELS  # noqa: F401 - harvest/settings.py reads it from here
from .errors import FacedeblurError, UnusableInputError

from .inputs import IMAGE_EXTENSIONS, is_image_name  # noqa: F401 - one home for the extensions (inputs.py)

# The daemon's workers set this (daemon.follow_symlinks: false): every image is then opened with O_NOFOLLOW,
# so a frame swapped for a symlink (frames/002.png -> /etc/passwd) is refused, never read.
_refuse_symlinks = False


# pipeline.max_image_pixels sets it for `process` and the daemon.
_max_image_pixels = DEFAULT_MAX_IMAGE_PIXELS


def set_max_image_pixels(limit: int) -> None:
    global _max_image_pixels
    _max_image_pixels = int(limit)


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the header of a PNG, JPEG, GIF, BMP, WebP or TIFF, without decoding; None if unknown."""
    try:
        if data[:8] == b"\x89PNG\r\n\x1a\n":
            return struct.unpack(">II", data[16:24])
        if data[:6] in (b"GIF87a", b"GIF89a"):
            return struct.unpack("<HH", data[6:10])
        if data[:2] == b"BM":
            width, height = struct.unpack("<ii", data[18:26])
            return abs(width), abs(height)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            chunk = data[12:16]
            if chunk == b"VP8X":
                return (int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1)
            if chunk == b"VP8L":
                bits = int.from_bytes(data[21:25], "little")
                return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
            if chunk == b"VP8 ":
                width, height = struct.unpack("<HH", data[26:30])
                return width & 0x3FFF, height & 0x3FFF
            return None
        if data[:2] == b"\xff\xd8":
            offset = 2
            while offset + 9 < len(data):
                if data[offset] != 0xFF:
                    return None
                marker = data[offset + 1]
                if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7 or marker == 0xFF:
                    offset += 1 if marker == 0xFF else 2
                    continue
                length = struct.unpack(">H", data[offset + 2:offset + 4])[0]
                if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                    height, width = struct.unpack(">HH", data[offset + 5:offset + 9])
                    return width, height
                offset += 2 + length
            return None
        if data[:4] in (b"II*\x00", b"MM\x00*"):
            order = "<" if data[:2] == b"II" else ">"
            ifd = struct.unpack(order + "I", data[4:8])[0]
            count = struct.unpack(order + "H", data[ifd:ifd + 2])[0]
            found = {}
            for i in range(count):
                entry = data[ifd + 2 + 12 * i: ifd + 14 + 12 * i]
                tag, kind = struct.unpack(order + "HH", entry[:4])
                if tag in (256, 257):
                    found[tag] = struct.unpack(order + ("H" if kind == 3 else "I"), entry[8:10] if kind == 3 else entry[8:12])[0]
            return (found[256], found[257]) if len(found) == 2 else None
    except (struct.error, IndexError, KeyError):
        return None
    return None


def check_pixel_limit(path: Path, data: bytes) -> None:
    size = header_size(data)
    if size is not None and size[0] * size[1] > _max_image_pixels:
        raise UnusableInputError(f"{path}: image is {size[0]}x{size[1]} ({size[0] * size[1] / 1e6:.0f} megapixels), "
                                 f"above the limit of {_max_image_pixels / 1e6:g} megapixels "
                                 "(pipeline.max_image_pixels); downscale it or raise the limit")


def refuse_symlinks(refuse: bool) -> None:
    global _refuse_symlinks
    _refuse_symlinks = refuse


def read_file_bytes(path: Path, limit: int = -1) -> bytes:
    """The bytes of a regular file (at most `limit`), opened as every image is (no symlink where they are
    refused, no waiting on a FIFO); one-line errors."""
    flags = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | (os.O_NOFOLLOW if _refuse_symlinks else 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and _refuse_symlinks:
            raise FacedeblurError(f"{path}: is a symbolic link; symlinks are not followed "
                                  "(daemon.follow_symlinks: false)") from None
        raise FacedeblurError(f"{path}: not readable ({exc.strerror}); fix its permissions") from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            raise UnusableInputError(f"{path}: not a regular file; supply an image file")
        return handle.read(limit)


def is_image_path(path: Path) -> bool:
    return is_image_name(Path(path).name)


def image_size(path: str | Path, header_bytes: int = 256 * 1024) -> tuple[int, int]:
    """(width, height) from the file's header (opened as read_image opens it); the image is decoded only
    when the header is not understood. The default reach covers a JPEG's size marker after EXIF and an
    embedded thumbnail."""
    size = header_size(read_file_bytes(Path(path), header_bytes))
    if size is None:
        image = read_image(path)
        size = (image.shape[1], image.shape[0])
    return int(size[0]), int(size[1])


def read_image(path: str | Path) -> np.ndarray:
    """Read a BGR uint8 image; greyscale and alpha inputs are converted to three channels."""
    path = Path(path)
    if not path.exists():
        raise FacedeblurError(f"{path}: file not found; check the path")
    if not os.access(path, os.R_OK):
        raise FacedeblurError(f"{path}: not readable; fix its permissions")
    raw = read_file_bytes(path)
    check_pixel_limit(path, raw)
    data = np.frombuffer(raw, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if image is None:
        raise UnusableInputError(f"{path}: not a readable image (png, jpg, webp, bmp, tiff); replace or remove it")
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


def write_image_atomic(path: str | Path, image: np.ndarray, label: str | None = None) -> None:
    """Encode in memory, write to a temporary file beside the target, then rename over it. `label` (PNG only)
    goes into the file's metadata (labelled_png)."""
    path = Path(path)
    ext = path.suffix.lower() or ".png"
    ok, encoded = cv2.imencode(ext, image)
    if not ok:
        raise FacedeblurError(f"{path}: cannot encode image as {ext}")
    data = encoded.tobytes()
    if label is not None:
        if ext != ".png":
            raise ValueError(f"{path}: a label is written into PNG files only")
        data = labelled_png(data, label)
    write_bytes_atomic(path, data)


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _exif_description(description: str, software: str) -> bytes:
    """A big-endian TIFF header with one IFD: ImageDescription (0x010E) and Software (0x0131), both ASCII."""
    texts = [description.encode("ascii", "replace") + b"\0", software.encode("ascii", "replace") + b"\0"]
    offset = 8 + 2 + 12 * len(texts) + 4
    entries, data = b"", b""
    for tag, text in zip((0x010E, 0x0131), texts):
        entries += struct.pack(">HHII", tag, 2, len(text), offset + len(data))
        data += text
    return b"MM\x00\x2a" + struct.pack(">IH", 8, len(texts)) + entries + struct.pack(">I", 0) + data


def _xmp_description(description: str, software: str) -> bytes:
    packet = ('<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
              '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description rdf:about="" '
              'xmlns:dc="http://purl.org/dc/elements/1.1/" xmlns:xmp="http://ns.adobe.com/xap/1.0/">'
              f'<dc:description><rdf:Alt><rdf:li xml:lang="x-default">{html_escape(description, quote=False)}</rdf:li></rdf:Alt>'
              f'</dc:description><xmp:CreatorTool>{html_escape(software, quote=False)}</xmp:CreatorTool></rdf:Description>'
              '</rdf:RDF></x:xmpmeta><?xpacket end="r"?>')
    return packet.encode("utf-8")


def labelled_png(png: bytes, description: str) -> bytes:
    """The PNG with `description` in every place a viewer or forensic tool looks: the iTXt Description and
    the tEXt Software keywords, an eXIf chunk (EXIF ImageDescription) and an XMP packet (dc:description).

    Written by hand: OpenCV writes no metadata, and Pillow (which could) is not a runtime dependency; these
    are four chunks whose layout the PNG specification fixes. They go right after IHDR (eXIf must precede
    the image data)."""
    from .ai_label import SOFTWARE

    description = description.replace("\0", " ")
    if png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
        raise ValueError("not a PNG produced by the encoder")
    header_end = 8 + 8 + struct.unpack(">I", png[8:12])[0] + 4
    utf8 = description.encode("utf-8")
    chunks = (_png_chunk(b"iTXt", b"Description\0\0\0\0\0" + utf8)
              + _png_chunk(b"tEXt", b"Software\0" + SOFTWARE.encode("latin-1"))
              + _png_chunk(b"eXIf", _exif_description(description, SOFTWARE))
              + _png_chunk(b"iTXt", b"XML:com.adobe.xmp\0\0\0\0\0" + _xmp_description(description, SOFTWARE)))
    return png[:header_end] + chunks + png[header_end:]


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, default_mode())   # mkstemp makes it owner-only; the umask decides, as for any file
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


def current_umask() -> int:
    """The process umask, read without changing it (os.umask would, for a moment, for every thread)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_mode(directory: bool = False) -> int:
    """The mode a plain open()/mkdir() would give: 0666 / 0777 less the umask (systemd's UMask=0027 -> 0640/0750)."""
    return (0o777 if directory else 0o666) & ~current_umask()
