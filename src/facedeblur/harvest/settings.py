"""The harvester's thresholds and limits, in one place: the CLI options, docs/harvest.md and the tests
read their defaults from here."""
from __future__ import annotations

from dataclasses import dataclass

from ..image_files import DEFAULT_MAX_IMAGE_PIXELS
from ..pipeline.align import DEFAULT_CROP_SIZE

USER_AGENT = "facedeblur-harvester"

# The face rules. Sharpness is the Laplacian variance of the face aligned to the trainer's crop
# (face_crops.sharpness on a DEFAULT_CROP_SIZE crop), so it compares across photo sizes. Measured on real
# photos (docs/harvest.md): the sharp frames of a video-deblurring set have p10 249, their blurred twins
# a median of 133; clean UTKFace crops a median of 234. 150 keeps most clean photos and drops most blurred
# ones. The face size is the detected box's shorter side: 64 px puts the eyes about 29 px apart, above the
# 25 px that `train prepare` needs for its 128 px crops, so every face kept here survives prepare.
DEFAULT_MIN_SHARPNESS = 150.0
DEFAULT_MIN_FACE_SIZE = 64
# select_best.frontalness: 1 frontal and level, 0 when the nose lies outside the eyes (a profile, whose five
# landmarks, and so its alignment, are unreliable). On ../shared/videos the kept frontal faces score 0.48 and
# up, profiles 0.0.
DEFAULT_MIN_FRONTALNESS = 0.3
# Near copies: Hamming distance between 256-bit difference hashes (checks.difference_hash). A resized,
# re-encoded copy lands within a few bits; distinct photos, even of one person, are far apart (measured
# in docs/harvest.md).
DEFAULT_NEAR_DUPLICATE_BITS = 20
DEFAULT_MAX_BYTES = 20 * 1024 * 1024
DEFAULT_DELAY = 1.0
DEFAULT_DEPTH = 1
DEFAULT_MAX_PAGES = 50
DEFAULT_MAX_SCROLLS = 10
DEFAULT_PER_SITE = 500
DEFAULT_PER_TRACK = 3
DEFAULT_TIMEOUT = 30.0
MAX_REDIRECTS = 5
# A robots.txt Crawl-delay above this skips the host (reason "crawl-delay too long"): honouring
# `Crawl-delay: 86400` would stall the whole harvest, local sources after it included, for a day per image.
MAX_CRAWL_DELAY = 60.0


@dataclass
class HarvestSettings:
    max_images: int = 0            # kept images in all; 0 = no limit
    per_site: int = DEFAULT_PER_SITE   # kept images per web host; 0 = no limit
    delay: float = DEFAULT_DELAY   # seconds between two requests to one host (robots Crawl-delay may raise it)
    depth: int = DEFAULT_DEPTH     # same-site links followed from each start page
    max_pages: int = DEFAULT_MAX_PAGES     # pages rendered per start page
    max_scrolls: int = DEFAULT_MAX_SCROLLS
    timeout: float = DEFAULT_TIMEOUT
    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_IMAGE_PIXELS
    min_face_size: int = DEFAULT_MIN_FACE_SIZE
    min_sharpness: float = DEFAULT_MIN_SHARPNESS
    min_frontalness: float = DEFAULT_MIN_FRONTALNESS
    near_duplicate_bits: int = DEFAULT_NEAR_DUPLICATE_BITS
    per_track: int = DEFAULT_PER_TRACK
    crop_size: int = DEFAULT_CROP_SIZE
    frames: bool = False           # folder SOURCEs are frame folders (footage), not photo folders
    progress: bool = True
