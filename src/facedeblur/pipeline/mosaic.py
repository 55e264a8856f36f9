"""Find pixelated (mosaicked) regions and turn their cells back into a smooth, low-resolution picture.

A mosaic replaces each cell of a regular grid with one flat colour. Inside a cell neighbouring pixels are
equal; between cells there is a step, and the steps line up in whole columns and rows. A face detector
sees the block edges, not the face (YuNet finds 1 of 59 pixelated faces). Once the grid is known, the
mosaic is exactly a low-resolution image (one sample per cell): interpolating between the cell centres
gives the picture a face detector expects of a small or distant face, and the detector can then find the
face and its landmarks.

Found without any model: the grid is estimated from where the steps are. Cells need not be whole pixels
wide (resizing a picture down and back up with nearest-neighbour gives cells of alternating widths), so
the boundaries themselves are kept, not just a period and a phase.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

# Two neighbours differing by at most this much (0-255, any channel) count as the same cell colour: slack
# for rounding. (Compressed mosaics are found by their steps instead: COMPRESSED_STEP_MIN.)
FLAT_TOLERANCE = 2
# A difference this large is a step between cells (flat cells next to each other differ by more).
STEP_MIN = 3
# In compressed video a cell's inside varies by a few levels; its edges still stand out by more than this.
COMPRESSED_STEP_MIN = 8
TILE = 16  # px: the map of "looks like a mosaic" is computed on tiles this size


@dataclass
class Mosaic:
    box: tuple[int, int, int, int]  # x1, y1, x2, y2 of the pixelated region (cell-aligned)
    columns: np.ndarray  # x of each cell's first column, plus the region's right edge
    rows: np.ndarray  # y of each cell's first row, plus the region's bottom edge

    @property
    def block(self) -> float:
        """Typical cell side in pixels."""
        return float(np.median(np.concatenate([np.diff(self.columns), np.diff(self.rows)])))


def _neighbour_differences(image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Largest absolute channel difference to the right and to the lower neighbour, as uint8. Done with
    OpenCV because it runs on every frame and must cost a millisecond or two. (Grey levels would be
    cheaper but make smooth natural areas look as flat as cells.)"""

    def largest(difference: np.ndarray) -> np.ndarray:
        if difference.ndim == 2:
            return difference
        channels = cv2.split(difference)
        result = channels[0]
        for channel in channels[1:]:
            result = cv2.max(result, channel)
        return result

    dx = largest(cv2.absdiff(image[:, 1:], image[:, :-1]))  # H x (W-1): between x and x+1
    dy = largest(cv2.absdiff(image[1:], image[:-1]))  # (H-1) x W
    return dx, dy


def _tile_means(mask: np.ndarray, tile: int) -> np.ndarray:
    rows, cols = mask.shape[0] // tile, mask.shape[1] // tile
    return cv2.resize(mask[: rows * tile, : cols * tile].astype(np.float32), (cols, rows),
                      interpolation=cv2.INTER_AREA)


def _grid_like_tiles(differences: np.ndarray, tile: int, min_block: int) -> np.ndarray:
    """Per tile: do the steps along x fall on at least one whole column while most columns stay quiet?"""
    rows, cols = differences.shape[0] // tile, differences.shape[1] // tile
    steps = differences[: rows * tile, : cols * tile] > COMPRESSED_STEP_MIN
    per_column = steps.reshape(rows, tile, cols, tile).sum(axis=1, dtype=np.int16)  # rows x cols x tile
    strong = (per_column >= tile // 2).sum(axis=2)
    quiet = (per_column <= tile // 5).sum(axis=2)
    return (strong >= 1) & (strong <= tile // min_block + 1) & (quiet >= 0.6 * tile)


def _boundaries(steps: np.ndarray, inside: np.ndarray, axis: int, min_block: int, max_block: int) -> np.ndarray | None:
    """Cell boundaries along one axis of a candidate region, or None when the steps are not on a grid.

    `steps` is the step mask (True where a pixel differs from its next neighbour along `axis`), `inside`
    the pixels of the region that look like cells (the rest of its bounding box is ignored). In a mosaic
    whole lines are steps (the boundaries) and the lines between have none; in texture, text or graphics,
    steps scatter over all lines."""
    counts = inside.sum(axis=1 - axis)
    usable = counts >= max(4, 0.25 * counts.max())
    profile = np.where(usable, (steps & inside).sum(axis=1 - axis) / np.maximum(counts, 1), 0.0)
    top = profile.max()
    if top < 0.3:
        return None
    # Compression smears a cell edge over its neighbouring lines (JPEG's and H.264's halved chroma): keep
    # only the line where the steps peak.
    padded = np.concatenate([[0.0], profile, [0.0]])
    peak = (profile >= padded[:-2]) & (profile > padded[2:])
    strong = (profile >= 0.5 * top) & peak
    positions = np.flatnonzero(strong) + 1  # a step between i and i+1 starts a cell at i+1
    gaps = np.diff(positions)
    wide = gaps[(gaps >= min_block) & (gaps <= max_block)]
    if wide.size < 3:
        return None
    period = float(np.median(wide))
    # The region's bounding box is coarse (whole tiles), so it can hold strips of the scene around the
    # mosaic. Keep the longest run of boundaries on one regular grid: gaps of one period (within a pixel,
    # for cells of alternating widths) or a whole multiple of it, where two neighbouring cells share a colour.
    multiples = np.round(gaps / period)
    regular = (multiples >= 1) & (multiples <= 3) & (np.abs(gaps - multiples * period) <= 1.01)
    best_start, best_length, start = 0, 0, None
    for index, ok in enumerate(np.append(regular, False)):
        if ok and start is None:
            start = index
        elif not ok and start is not None:
            if index - start > best_length:
                best_start, best_length = start, index - start
            start = None
    if best_length < 3:
        return None
    run = positions[best_start:best_start + best_length + 1]
    # Inside the run, every line that is not a boundary must be free of steps: that is what tells a
    # mosaic from texture, text or graphics, whose steps scatter over all lines.
    span = np.arange(run[0], run[-1] - 1)  # step lines (between i and i+1) inside the run
    # The lines next to a boundary may carry its compression smear; with cells of 5 px or more there are
    # enough lines further inside to judge by.
    near = (-1, 0, 1) if period >= 5 else (0,)
    boundary = np.isin(span + 1, (run[:, None] + np.array(near)).ravel())
    between = profile[span[~boundary]]
    if between.size == 0 or (between <= 0.2 * top).mean() < 0.9:
        return None
    return run


def _grid(steps_x: np.ndarray, steps_y: np.ndarray, inside: np.ndarray, min_block: int,
          max_block: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Column and row boundaries of a candidate region. Tiles of the scene next to a face-sized mosaic can
    join its region and blur one axis's profile; once the other axis has found the mosaic's span, the
    first is measured again over that span only."""
    columns = _boundaries(steps_x, inside[:, :-1], 1, min_block, max_block)
    rows = _boundaries(steps_y, inside[:-1], 0, min_block, max_block)
    if rows is not None and columns is None:
        band = np.zeros_like(inside)
        band[rows[0]:rows[-1]] = inside[rows[0]:rows[-1]]
        columns = _boundaries(steps_x, band[:, :-1], 1, min_block, max_block)
    elif columns is not None and rows is None:
        band = np.zeros_like(inside)
        band[:, columns[0]:columns[-1]] = inside[:, columns[0]:columns[-1]]
        rows = _boundaries(steps_y, band[:-1], 0, min_block, max_block)
    if columns is None or rows is None:
        return None
    return columns, rows


def _fill_missing(positions: np.ndarray, start: int, end: int) -> np.ndarray:
    """Complete a boundary list: add boundaries hidden by equal neighbouring cells, and cells at the ends."""
    period = float(np.median(np.diff(positions)))
    filled = [int(positions[0])]
    for nxt in positions[1:]:
        count = max(1, round((nxt - filled[-1]) / period))
        step = (nxt - filled[-1]) / count
        filled.extend(int(round(filled[-1] + step * k)) for k in range(1, count))
        filled.append(int(nxt))
    while filled[0] - period > start + 0.5:
        filled.insert(0, int(round(filled[0] - period)))
    while filled[-1] + period < end - 0.5:
        filled.append(int(round(filled[-1] + period)))
    edges = [start] + [p for p in filled if start < p < end] + [end]
    return np.array(sorted(set(edges)), dtype=np.int64)


def find_mosaics(image: np.ndarray, min_block: int = 3, max_block: int = 40, min_cells: int = 6,
                 max_pixels: int = 640 * 480) -> list[Mosaic]:
    """Pixelated regions of a BGR (or grey) image, each with its cell grid; [] when there are none.

    Cheap (a few array passes over the frame, about 2-5 ms for 640 x 480 on one core), so it runs on every
    frame. A larger frame is searched on every k-th pixel (nearest-neighbour subsampling keeps cells flat
    and their edges sharp; cells of a mosaic that matters in a large frame are large too), and the grid
    is scaled back, accurate to k pixels."""
    step = int(np.ceil(np.sqrt(image.shape[0] * image.shape[1] / max_pixels)))
    if step > 1:
        found = _find_mosaics(image[::step, ::step], max(2, min_block // step), max_block, min_cells)
        height, width = image.shape[:2]
        scaled = []
        for mosaic in found:
            columns = np.unique(np.minimum(mosaic.columns * step, width))
            rows = np.unique(np.minimum(mosaic.rows * step, height))
            if mosaic.columns[-1] * step >= width - step:
                columns[-1] = width
            if mosaic.rows[-1] * step >= height - step:
                rows[-1] = height
            scaled.append(Mosaic((int(columns[0]), int(rows[0]), int(columns[-1]), int(rows[-1])), columns, rows))
        return scaled
    return _find_mosaics(image, min_block, max_block, min_cells)


def _find_mosaics(image: np.ndarray, min_block: int, max_block: int, min_cells: int) -> list[Mosaic]:
    height, width = image.shape[:2]
    if height < min_block * min_cells or width < min_block * min_cells:
        return []
    dx, dy = _neighbour_differences(image)
    both = cv2.max(dx[:-1], dy[:, :-1])  # (H-1) x (W-1): the larger step to the right or below
    flat = both <= FLAT_TOLERANCE
    step = both > STEP_MIN
    tile = min(TILE, max(4, min(height, width) // 8))
    flat_share = _tile_means(flat, tile)
    step_share = _tile_means(step, tile)
    # Mostly flat pixels, but with steps in between: cells. (Flat walls and sky have no steps; texture
    # and noise have few flat pixels.) Compression (JPEG, H.264) leaves cells only nearly flat, so a tile
    # also counts when its strong steps fall on a few whole columns and rows with quiet lines between.
    # The grid test below rejects graphics and text.
    candidate = ((flat_share >= 0.3) & (step_share >= 0.04)) | (
        _grid_like_tiles(dx[:-1], tile, min_block) & _grid_like_tiles(dy[:, :-1].T, tile, min_block).T)
    if not candidate.any():
        return []
    raw = candidate
    candidate = cv2.morphologyEx(candidate.astype(np.uint8), cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    count, _, stats, _ = cv2.connectedComponentsWithStats(candidate, connectivity=8)
    mosaics = []
    for label in range(1, count):
        x, y, w, h, tiles = stats[label]
        if tiles < 4:
            continue
        x1, y1 = x * tile, y * tile
        x2, y2 = min(width, (x + w) * tile), min(height, (y + h) * tile)
        inside = np.kron(raw[y:y + h, x:x + w], np.ones((tile, tile), bool))[: y2 - y1, : x2 - x1]
        # A step is a difference above STEP_MIN in a clean mosaic; compression adds a few levels of
        # noise inside the cells, so a region that fails is tried again with higher bars. The middle bar
        # is needed: on an H.264 frame (x264 in PyAV 18) a 10 px mosaic failed at 3 and at 6 but not at 4.
        for step_min in (STEP_MIN, STEP_MIN + 1, COMPRESSED_STEP_MIN - 2):
            grid = _grid(dx[y1:y2, x1:x2 - 1] > step_min, dy[y1:y2 - 1, x1:x2] > step_min, inside, min_block,
                         max_block)
            if grid is not None:
                break
        if grid is None:
            continue
        columns, rows = grid[0] + x1, grid[1] + y1
        # Grow each axis over the span the other axis found, which excludes the scene around the mosaic.
        column_extent = _extent(dx, columns, int(rows[0]), int(rows[-1]), 1, width, step_min)
        row_extent = _extent(dy, rows, int(columns[0]), int(columns[-1]), 0, height, step_min)
        columns = _fill_missing(columns, *column_extent)
        rows = _fill_missing(rows, *row_extent)
        if len(columns) - 1 < min_cells or len(rows) - 1 < min_cells:
            continue
        mosaics.append(Mosaic((int(columns[0]), int(rows[0]), int(columns[-1]), int(rows[-1])), columns, rows))
    return mosaics


def _extent(differences: np.ndarray, positions: np.ndarray, lo: int, hi: int, axis: int, size: int,
            step_min: int) -> tuple[int, int]:
    """Where the mosaic really starts and ends along `axis`: the candidate tiles are coarse, so walk out
    from the outermost boundaries while the next cell is still flat inside (same colour along its
    lines), up to the image edge."""
    period = float(np.median(np.diff(positions)))
    cell = max(1, int(round(period)))

    def flat_run(a: int, b: int) -> bool:
        """Is [a, b) one cell: no step inside it along `axis`, over the mosaic's span of the other axis?"""
        if a < 0 or b > size:
            return False
        if b - a < 2:  # a sliver at the image edge: nothing inside to test, and it cannot hold a face
            return True
        band = differences[lo:hi, a:b - 1] if axis == 1 else differences[a:b - 1, lo:hi]
        return bool((band <= step_min).mean() > 0.8)

    start = int(positions[0])
    while flat_run(start - cell, start):
        start -= cell
    if 0 < start < cell and flat_run(0, start):
        start = 0
    end = int(positions[-1])
    while flat_run(end, end + cell):
        end += cell
    if 0 < size - end < cell and flat_run(end, size):
        end = size
    return start, end


def cell_means(image: np.ndarray, mosaic: Mosaic) -> np.ndarray:
    """One colour per cell (the mosaic's own low-resolution picture), float32."""
    x1, y1, x2, y2 = mosaic.box
    region = image[y1:y2, x1:x2].astype(np.float32)
    sums = np.add.reduceat(np.add.reduceat(region, mosaic.rows[:-1] - y1, axis=0), mosaic.columns[:-1] - x1, axis=1)
    counts = np.outer(np.diff(mosaic.rows), np.diff(mosaic.columns)).astype(np.float32)
    return sums / (counts[:, :, None] if sums.ndim == 3 else counts)


def smooth(image: np.ndarray, mosaic: Mosaic) -> np.ndarray:
    """The image with the mosaic region replaced by a bicubic interpolation between cell centres: what the
    scene looked like at one sample per cell, without the block edges."""
    x1, y1, x2, y2 = mosaic.box
    cells = cell_means(image, mosaic)

    def coordinates(edges: np.ndarray, lo: int, hi: int) -> np.ndarray:
        centres = (edges[:-1] + edges[1:]) / 2.0
        return np.interp(np.arange(lo, hi) + 0.5, centres, np.arange(len(centres)),
                         left=None, right=None).astype(np.float32)

    # Outside the first/last cell centre np.interp clamps; extrapolate half a cell instead so the border
    # cells do not look stretched.
    u = _extrapolate(coordinates(mosaic.columns, x1, x2), mosaic.columns, x1, x2)
    v = _extrapolate(coordinates(mosaic.rows, y1, y2), mosaic.rows, y1, y2)
    map_x, map_y = np.meshgrid(u, v)
    smoothed = cv2.remap(cells, map_x, map_y, interpolation=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    out = image.copy()
    out[y1:y2, x1:x2] = np.clip(np.rint(smoothed), 0, 255).astype(image.dtype)
    return out


def _extrapolate(coords: np.ndarray, edges: np.ndarray, lo: int, hi: int) -> np.ndarray:
    first_centre = (edges[0] + edges[1]) / 2.0
    last_centre = (edges[-2] + edges[-1]) / 2.0
    pixels = np.arange(lo, hi) + 0.5
    before = pixels < first_centre
    after = pixels > last_centre
    coords = coords.copy()
    coords[before] = (pixels[before] - first_centre) / (edges[1] - edges[0])
    coords[after] = len(edges) - 2 + (pixels[after] - last_centre) / (edges[-1] - edges[-2])
    return coords
