"""The default, weight-free backend: nuclei from blue, cells grown from them over the cytoplasm.

Everything runs at a reduced working resolution (the longer side resized to `work_size`, 512
px by default), so a 1728, 2048, 3072 or 4096 px image costs about the same; the labels are
restored to full size by nearest-neighbour resizing.

1. Each channel is area-resized and divided by its `percentile` (bit depth and gain free).
2. Scale: the typical nucleus diameter is measured on the working blue plane
   (`hpacam.segmentation.nucleus_scale`) unless `nucleus_diameter` sets it; every length and
   area below follows from it.
3. Nuclei: candidates are the smoothed blue above a low floor (`floor_level` of the way from
   the background to Otsu's level). Seeds are the relative h-maxima (`seed_depth`) of log blue
   plus the distance to the candidates' edge (`seed_shape_weight`), and a watershed of that
   surface gives one region per seed; each region keeps the pixels above `region_cut` x its
   own bright level, so a dim nucleus keeps its outline beside a bright one. Objects that stand
   less than `min_nucleus_contrast` background spreads above the background are noise; objects
   smaller than `min_nucleus_area` are debris, unless they are condensed mitotic chromatin
   (small, and `chromatin_brightness` x brighter than the median nucleus). Touching nuclei left
   joined are split by a watershed on the distance map seeded by its h-maxima (`split_depth`),
   each object on its own.
   The two chromatin sets of an anaphase cell (mutually nearest condensed pieces closer than
   `chromatin_pair_distance`) become one nucleus, so the dividing cell stays one cell.
4. Cytoplasm signal: a weighted sum of red (microtubules), yellow (ER) and blue, smoothed, minus
   its background (a low percentile: camera offset and glow). Foreground: above
   `foreground_level` of the way from background to Otsu's level, or nucleus.
5. Cells: a watershed of the inverted signal seeded by the nuclei, plus seeds at cytoplasm
   peaks far from every nucleus (cells whose nucleus was missed, dropped afterwards so they do
   not go to a neighbour), confined to the foreground, so neighbouring cells part along the dim
   seam between them. Each cell then drops pixels under `cell_cut` x its own median signal and
   keeps only the piece holding its nucleus; cells under `min_cell_area` go. One nucleus per
   cell by construction.

Lengths in the settings are in nucleus diameters; the diameter is measured per image, or, when
`nucleus_diameter` is set, a fraction of the longer side.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Sequence

import cv2
import numpy as np
from scipy import ndimage
from skimage import measure
from skimage.filters import threshold_otsu
from skimage.morphology import h_maxima
from skimage.segmentation import watershed

from hpacam.segmentation.core import Channels, LabelPair
from hpacam.segmentation.nucleus_scale import estimate_nucleus_px
from hpacam.segmentation.settings import ClassicSettings, SegmentationConfig

LOG = logging.getLogger(__name__)
FALLBACK_DIAMETER = 0.09  # of the longer side, for an image without a blob to measure (HPA's typical size)


@dataclass(frozen=True)
class Scale:
    """Working-resolution geometry of one image."""

    work_shape: tuple[int, int]
    nucleus_px: float  # typical nucleus diameter in working pixels

    @property
    def nucleus_area(self) -> float:
        return np.pi / 4.0 * self.nucleus_px ** 2


def working_shape(shape: tuple[int, int], settings: ClassicSettings) -> tuple[int, int]:
    """Shrink so the longer side is `work_size` (never enlarge)."""
    height, width = shape
    factor = min(1.0, settings.work_size / max(height, width))
    return max(1, round(height * factor)), max(1, round(width * factor))


def nucleus_scale(work_shape: tuple[int, int], blue: np.ndarray, settings: ClassicSettings) -> Scale:
    """The nucleus diameter: `nucleus_diameter` when set, else measured on the working blue plane.

    An image with no blob to measure (blank, pure noise) falls back to FALLBACK_DIAMETER; nothing
    will be found in it anyway.
    """
    if settings.nucleus_diameter is not None:
        return Scale(work_shape, settings.nucleus_diameter * max(work_shape))
    measured = estimate_nucleus_px(blue)
    if measured is None:
        measured = FALLBACK_DIAMETER * max(work_shape)
    LOG.info("classic segmentation: estimated nucleus diameter %.1f px of a %d px working image (%.3f)",
             measured, max(work_shape), measured / max(work_shape))
    return Scale(work_shape, measured)


def to_working(channel: np.ndarray, work_shape: tuple[int, int], percentile: float) -> np.ndarray:
    """Area-resize one channel and divide it by its percentile (0 stays 0 for a blank channel).

    8- and 16-bit channels are resized as they are (no full-size float copy: that conversion
    alone would cost more than the rest at 4096 px); the working image is float32.
    """
    plane = np.asarray(channel)
    if plane.dtype not in (np.uint8, np.uint16, np.float32):
        plane = plane.astype(np.float32)
    if plane.shape != work_shape:
        plane = cv2.resize(plane, work_shape[::-1], interpolation=cv2.INTER_AREA)
    plane = plane.astype(np.float32)
    top = float(np.percentile(plane, percentile))
    return plane / top if top > 0 else np.zeros_like(plane)


def smooth(image: np.ndarray, sigma_px: float) -> np.ndarray:
    if sigma_px <= 0:
        return image
    return cv2.GaussianBlur(image, (0, 0), sigmaX=sigma_px, sigmaY=sigma_px, borderType=cv2.BORDER_REFLECT)


def otsu_level(image: np.ndarray) -> float | None:
    """Otsu's threshold, or None when the image is flat (nothing to separate)."""
    if float(image.max()) <= float(image.min()):
        return None
    return float(threshold_otsu(image))


def background_and_spread(smoothed: np.ndarray, level: float) -> tuple[float, float]:
    """Median and robust spread (1.4826 MAD) of the pixels below Otsu's level.

    Robust because dim nuclei fall below a level set by bright ones: a plain standard deviation
    would count them as background noise and raise every noise bound with the brightness spread.
    """
    below = smoothed[smoothed <= level]
    if not below.size:
        return 0.0, 0.0
    background = float(np.median(below))
    return background, 1.4826 * float(np.median(np.abs(below - background)))


def intensity_regions(above: np.ndarray, floor: float, scale: Scale, settings: ClassicSettings) -> np.ndarray:
    """One watershed region per blue peak, inside the pixels above `floor`.

    Peaks are the h-maxima of the logarithm of the blue smoothed at `seed_sigma` nucleus
    diameters (about a nucleus's core: chromatin texture and nucleoli smooth away): a peak must
    stand `seed_depth` (relative) above the saddle to any brighter one, the same for a dim
    nucleus as for a bright one, so a dim nucleus touching a bright one keeps its own peak (a
    fixed-size maximum filter would hand it to the bright one). The distance to the edge of the
    candidates (`seed_shape_weight`, capped at half a diameter) adds a dome per round nucleus, so
    a dim nucleus in a clump has a peak at its centre and chromatin texture adds none. The
    regions are a watershed of that same surface: on raw intensity the noisy plateau of a dim
    nucleus drains into the bright neighbour's blur tail and its seed keeps a few pixels.
    """
    mask = above > floor
    if not mask.any():
        return np.zeros(above.shape, dtype=np.int32)
    blurred = smooth(above, settings.seed_sigma * scale.nucleus_px)
    logged = np.log(np.maximum(blurred, floor) / floor).astype(np.float32)
    distance = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    surface = logged + settings.seed_shape_weight * np.minimum(distance / scale.nucleus_px, 0.5)
    peaks = object_maxima(surface, ndimage.label(mask)[0], float(np.log1p(settings.seed_depth)))
    return watershed(-surface, ndimage.label(peaks)[0], mask=mask).astype(np.int32)


def cut_each_region(regions: np.ndarray, above: np.ndarray, settings: ClassicSettings) -> np.ndarray:
    """Keep, per region, the pixels above `region_cut` x the region's bright level (its 95th percentile).

    The threshold of each nucleus follows its own brightness (a half-maximum-like contour), so
    a nucleus 10x dimmer than its neighbour keeps its full outline and a bright one loses its
    blur halo. Holes left by nucleoli are filled and the filled pixels given to the surrounding
    region.
    """
    n = int(regions.max())
    if n == 0:
        return regions
    bright = region_percentile(above, regions, n, 95.0)
    limits = np.concatenate([[np.inf], settings.region_cut * bright]).astype(np.float32)
    kept = np.where(above >= limits[regions], regions, 0)
    filled = ndimage.binary_fill_holes(kept > 0)
    return watershed(-above, kept, mask=filled).astype(np.int32)


def region_percentile(values: np.ndarray, regions: np.ndarray, n: int, q: float) -> np.ndarray:
    """Per-region q-th percentile of `values` (regions 1..n), by one sort of the labelled pixels."""
    inside = regions > 0
    labels, vals = regions[inside], values[inside]
    order = np.lexsort((vals, labels))
    labels, vals = labels[order], vals[order]
    starts = np.searchsorted(labels, np.arange(1, n + 1))
    ends = np.searchsorted(labels, np.arange(1, n + 1), side="right")
    out = np.zeros(n, dtype=np.float32)
    has = ends > starts
    picks = starts[has] + ((ends[has] - 1 - starts[has]) * q / 100.0).astype(np.int64)
    out[has] = vals[picks]
    return out


def nucleus_objects(blue: np.ndarray, scale: Scale, settings: ClassicSettings) -> tuple[np.ndarray, np.ndarray]:
    """Blue objects, one per nucleus as far as brightness tells, and each one's contrast.

    The candidates are everything above a low floor (`floor_level` of the way from the
    background to Otsu's level, and `min_nucleus_contrast` background spreads), so nuclei far
    dimmer than the bright ones that set Otsu's level are kept; each is then cut at its own
    level (`cut_each_region`). Contrast = (mean smoothed blue of the object - background) /
    background spread: nuclei stand 8+ spreads above their background; the blobs cut out of
    a field of pure noise stand about 3.
    """
    smoothed = smooth(blue, settings.blue_sigma * scale.nucleus_px)
    level = otsu_level(smoothed)
    if level is None:
        return np.zeros(blue.shape, dtype=np.int32), np.zeros(0)
    background, spread = background_and_spread(smoothed, level)
    above = np.maximum(smoothed - background, 0.0).astype(np.float32)
    floor = max(settings.floor_level * (level - background), settings.min_nucleus_contrast * spread)
    regions = intensity_regions(above, floor, scale, settings)
    objects = cut_each_region(regions, smooth(above, settings.cut_sigma * scale.nucleus_px), settings)
    objects = measure.label(objects, background=0, connectivity=1).astype(np.int32)
    n = int(objects.max())
    sums = np.bincount(objects.ravel(), weights=above.ravel(), minlength=n + 1)[1:]
    means = sums / np.maximum(np.bincount(objects.ravel(), minlength=n + 1)[1:], 1)
    contrast = means / spread if spread > 0 else np.full(n, np.inf)
    return objects, contrast


@dataclass(frozen=True)
class ObjectStats:
    """Area (in typical nucleus areas), brightness (x the median of full-size nuclei), centroid."""

    area: np.ndarray
    brightness: np.ndarray
    centroid: np.ndarray  # (n, 2) y, x

    def condensed(self, settings: ClassicSettings) -> np.ndarray:
        """Mitotic chromatin: small but brighter than interphase nuclei."""
        return (self.brightness >= settings.chromatin_brightness) & (self.area < settings.chromatin_max_area)


def object_stats(labels: np.ndarray, blue: np.ndarray, scale: Scale, settings: ClassicSettings) -> ObjectStats:
    n = int(labels.max())
    index = labels.ravel()
    pixels = np.bincount(index, minlength=n + 1)[1:].astype(np.float64)
    safe = np.maximum(pixels, 1.0)
    total = np.bincount(index, weights=blue.ravel(), minlength=n + 1)[1:]
    ys, xs = np.indices(labels.shape)
    centroid = np.stack([np.bincount(index, weights=ys.ravel(), minlength=n + 1)[1:] / safe,
                         np.bincount(index, weights=xs.ravel(), minlength=n + 1)[1:] / safe], axis=1)
    mean = total / safe
    area = pixels / scale.nucleus_area
    full = mean[area >= settings.min_nucleus_area]
    reference = float(np.median(full)) if len(full) else float(np.median(mean)) if n else 1.0
    return ObjectStats(area, mean / (reference or 1.0), centroid)


def keep_nuclei(objects: np.ndarray, stats: ObjectStats, contrast: np.ndarray, settings: ClassicSettings) -> np.ndarray:
    """Drop debris (objects below `min_nucleus_area`, unless condensed mitotic chromatin) and noise."""
    keep = (stats.area >= settings.min_nucleus_area) | (
        stats.condensed(settings) & (stats.area >= settings.min_chromatin_area))
    keep &= contrast >= settings.min_nucleus_contrast
    return np.where(np.concatenate([[False], keep])[objects], objects, 0).astype(np.int32)


def object_maxima(distance: np.ndarray, objects: np.ndarray, depth: float) -> np.ndarray:
    """h-maxima of the distance map, computed object by object on its bounding box.

    The same result as one call on the whole image (objects do not interact), at a fraction of
    the cost: the grey reconstruction behind `h_maxima` sorts every pixel it is given, and
    nuclei cover a small part of the image.
    """
    maxima = np.zeros(objects.shape, dtype=bool)
    for index, box in enumerate(ndimage.find_objects(objects), start=1):
        if box is None:
            continue
        own = objects[box] == index
        crop = np.where(own, distance[box], 0.0)
        padded = np.pad(crop, 1)  # a frame of 0 so a maximum on the box edge is still regional
        maxima[box] |= h_maxima(padded, depth)[1:-1, 1:-1].astype(bool) & own
    return maxima


def label_edges(labels: np.ndarray) -> np.ndarray:
    """Pixels of a label that touch (4-connectivity) a pixel of another nonzero label."""
    edge = np.zeros(labels.shape, dtype=bool)
    for axis in (0, 1):
        a, b = np.moveaxis(labels, axis, 0)[1:], np.moveaxis(labels, axis, 0)[:-1]
        differ = (a > 0) & (b > 0) & (a != b)
        np.moveaxis(edge, axis, 0)[1:] |= differ
        np.moveaxis(edge, axis, 0)[:-1] |= differ
    return edge


def split_nuclei(objects: np.ndarray, scale: Scale, settings: ClassicSettings) -> np.ndarray:
    """Split touching nuclei at the saddles of their distance map (each object keeps >= 1 seed).

    Objects already parted by brightness stay parted: the edge between two touching objects
    counts as background for the distance map and is a barrier the watershed floods last, so a
    seed of one object cannot take pixels of its neighbour (on one distance map of their union
    it did, and redrew good outlines along the union's neck).
    """
    mask = objects > 0
    if not mask.any():
        return np.zeros(mask.shape, dtype=np.int32)
    edges = label_edges(objects)
    distance = cv2.distanceTransform((mask & ~edges).astype(np.uint8), cv2.DIST_L2, 5)
    distance = smooth(distance, 0.05 * scale.nucleus_px)
    seeds, n_seeds = ndimage.label(object_maxima(distance, objects, settings.split_depth * scale.nucleus_px))
    seeded = np.zeros(int(objects.max()) + 1, dtype=bool)
    seeded[objects[seeds > 0]] = True
    unseeded = ~seeded[objects] & mask & ~edges  # objects too thin for an h-maximum: one seed each
    seeds = np.where(unseeded, objects + n_seeds, seeds)
    surface = np.where(edges, 1.0, -distance).astype(np.float32)
    return watershed(surface, seeds, mask=mask).astype(np.int32)


def pair_chromatin(nuclei: np.ndarray, stats: ObjectStats, scale: Scale, settings: ClassicSettings) -> np.ndarray:
    """Give the two chromatin sets of an anaphase cell one label: mutual nearest condensed pieces."""
    candidates = np.flatnonzero(stats.condensed(settings))
    if len(candidates) < 2:
        return nuclei
    points = stats.centroid[candidates]
    gaps = np.hypot(*(points[:, None, :] - points[None, :, :]).transpose(2, 0, 1))
    np.fill_diagonal(gaps, np.inf)
    nearest = gaps.argmin(axis=1)
    lookup = np.arange(int(nuclei.max()) + 1, dtype=np.int32)
    for i, j in enumerate(nearest):
        close = gaps[i, j] <= settings.chromatin_pair_distance * scale.nucleus_px
        if close and nearest[j] == i and i < j:
            lookup[candidates[j] + 1] = candidates[i] + 1
    return lookup[nuclei]


def find_nuclei(blue: np.ndarray, scale: Scale, settings: ClassicSettings) -> np.ndarray:
    """Labelled nuclei at the working resolution: thresholded, filtered, split, chromatin paired."""
    objects, contrast = nucleus_objects(blue, scale, settings)
    if objects.max() == 0:
        return objects
    objects = keep_nuclei(objects, object_stats(objects, blue, scale, settings), contrast, settings)
    nuclei = split_nuclei(objects, scale, settings)
    if nuclei.max() == 0:
        return nuclei
    return pair_chromatin(nuclei, object_stats(nuclei, blue, scale, settings), scale, settings)


def cytoplasm_signal(planes: dict[str, np.ndarray], scale: Scale, settings: ClassicSettings) -> np.ndarray:
    weights = {"red": settings.cyto_red, "yellow": settings.cyto_yellow, "blue": settings.cyto_blue}
    total = sum(w for w in weights.values()) or 1.0
    signal = sum(w * planes[name] for name, w in weights.items() if w) / total
    return smooth(np.asarray(signal, dtype=np.float32), settings.cyto_sigma * scale.nucleus_px)


def above_background(signal: np.ndarray, settings: ClassicSettings) -> tuple[np.ndarray, float | None]:
    """The signal minus the background level, and the Otsu level of what remains.

    Background = a low percentile of the signal (HPA images nearly always show some background).
    Camera offsets and glow lift it well above 0, and cells fade into it at their edges, so the
    foreground threshold is set between it and Otsu's level rather than as a fraction of Otsu's.
    """
    level = otsu_level(signal)
    if level is None:
        return np.zeros_like(signal), None
    background = float(np.percentile(signal, settings.background_percentile))
    return np.maximum(signal - background, 0.0), max(level - background, 0.0)


def grow_cells(nuclei: np.ndarray, signal: np.ndarray, scale: Scale, settings: ClassicSettings) -> np.ndarray:
    """Cells by a seeded watershed of the inverted signal inside the foreground."""
    signal, level = above_background(signal, settings)
    foreground = nuclei > 0
    if level is not None:
        foreground |= signal > level * settings.foreground_level
    seeds = add_orphan_seeds(nuclei, signal, foreground, level, scale, settings)
    cells = watershed(-signal, seeds, mask=foreground, compactness=settings.compactness)
    cells[cells > nuclei.max()] = 0  # the cells of missed nuclei: no nucleus, no cell
    cells = trim_dim_pixels(cells, signal, settings.cell_cut)
    cells[nuclei > 0] = nuclei[nuclei > 0]
    return keep_nucleus_pieces(cells, nuclei)


def add_orphan_seeds(nuclei: np.ndarray, signal: np.ndarray, foreground: np.ndarray, level: float | None,
                     scale: Scale, settings: ClassicSettings) -> np.ndarray:
    """The nuclei plus seeds (labels above theirs) at cytoplasm peaks far from every nucleus.

    A cell whose nucleus was missed still shows as a bright patch of cytoplasm with a dim seam
    around it. Without a seed of its own the watershed hands all of it to a neighbour; with one
    it stops at the seam, and the orphan's region is then dropped. A peak counts when it stands
    `orphan_depth` (relative) above the saddle to any brighter one, on the cytoplasm smoothed
    at `orphan_sigma` diameters, and lies `orphan_distance` diameters or more from any nucleus
    (a cell's own cytoplasm peaks near its nucleus).
    """
    if settings.orphan_distance <= 0 or level is None or not level > 0:
        return nuclei
    blurred = smooth(signal, settings.orphan_sigma * scale.nucleus_px)
    floor = settings.foreground_level * level
    surface = np.log(np.maximum(blurred, floor) / floor).astype(np.float32)
    peaks = object_maxima(surface, ndimage.label(foreground)[0], float(np.log1p(settings.orphan_depth)))
    gaps = cv2.distanceTransform((nuclei == 0).astype(np.uint8), cv2.DIST_L2, 5)
    peaks &= (gaps >= settings.orphan_distance * scale.nucleus_px) & (blurred > floor)
    if not peaks.any():
        return nuclei
    orphans = ndimage.label(peaks)[0]
    return np.where(orphans > 0, orphans + int(nuclei.max()), nuclei).astype(np.int32)


def trim_dim_pixels(cells: np.ndarray, signal: np.ndarray, cut: float) -> np.ndarray:
    """Remove, per cell, pixels dimmer than `cut` x the cell's median signal."""
    n = int(cells.max())
    if n == 0 or cut <= 0:
        return cells
    medians = np.asarray(ndimage.median(signal, cells, index=np.arange(1, n + 1)), dtype=np.float32)
    limits = np.concatenate([[np.inf], cut * medians]).astype(np.float32)
    out = cells.copy()
    out[signal < limits[cells]] = 0
    return out


def keep_nucleus_pieces(cells: np.ndarray, nuclei: np.ndarray) -> np.ndarray:
    """Keep only the connected piece of each cell that holds its nucleus (one piece per label)."""
    pieces = measure.label(cells, background=0, connectivity=1)  # regions of one label each
    holds_nucleus = np.zeros(int(pieces.max()) + 1, dtype=bool)
    holds_nucleus[pieces[(nuclei > 0) & (cells == nuclei)]] = True
    holds_nucleus[0] = False
    return np.where(holds_nucleus[pieces], cells, 0).astype(np.int32)


def drop_small_cells(cells: np.ndarray, min_area: float) -> np.ndarray:
    n = int(cells.max())
    if n == 0:
        return cells
    areas = np.bincount(cells.ravel(), minlength=n + 1)
    keep = areas >= min_area
    keep[0] = False
    lookup = np.zeros(n + 1, dtype=np.int32)
    lookup[keep] = np.arange(1, int(keep.sum()) + 1, dtype=np.int32)
    return lookup[cells]


def to_full_size(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if labels.shape == shape:
        return labels.astype(np.int32, copy=False)
    return cv2.resize(labels.astype(np.int32), shape[::-1], interpolation=cv2.INTER_NEAREST)


def label_working(planes: dict[str, np.ndarray], scale: Scale, settings: ClassicSettings) -> LabelPair:
    """Cells and nuclei at the working resolution."""
    nuclei = find_nuclei(planes["blue"], scale, settings)
    signal = cytoplasm_signal(planes, scale, settings)
    cells = grow_cells(nuclei, signal, scale, settings)
    cells = drop_small_cells(cells, settings.min_cell_area * scale.nucleus_area)
    return cells, np.where(nuclei > 0, cells, 0).astype(np.int32)


def check_settings(settings: ClassicSettings) -> None:
    """ValueError naming the key for settings that cannot work."""
    problems = []
    if settings.work_size < 32:
        problems.append(f"work_size must be >= 32, got {settings.work_size}")
    if settings.nucleus_diameter is not None and not 0 < settings.nucleus_diameter < 1:
        problems.append(f"nucleus_diameter is a fraction of the longer side, in (0, 1), got {settings.nucleus_diameter}")
    for name in ("percentile", "background_percentile"):
        if not 0 <= getattr(settings, name) <= 100:
            problems.append(f"{name} must be in [0, 100], got {getattr(settings, name)}")
    if min(settings.cyto_red, settings.cyto_yellow, settings.cyto_blue) < 0:
        problems.append("cyto_red, cyto_yellow and cyto_blue must be >= 0")
    if problems:
        raise ValueError("; ".join(f"segmentation.classic.{p}" for p in problems))


class ClassicBackend:
    """Weight-free nuclei-seeded watershed (the default)."""

    name = "classic"
    channels = ("red", "yellow", "blue")

    def __init__(self, settings: ClassicSettings = ClassicSettings()):
        check_settings(settings)
        self.config = settings

    @classmethod
    def from_config(cls, cfg: SegmentationConfig) -> "ClassicBackend":
        return cls(cfg.classic)

    def settings(self) -> dict:
        return asdict(self.config)

    def label(self, channels: Channels) -> LabelPair:
        shape = np.shape(channels["blue"])
        work_shape = working_shape(shape, self.config)
        planes = {name: to_working(channels[name], work_shape, self.config.percentile) for name in self.channels}
        scale = nucleus_scale(work_shape, planes["blue"], self.config)
        cells, nuclei = label_working(planes, scale, self.config)
        return to_full_size(cells, shape), to_full_size(nuclei, shape)

    def label_many(self, images: Sequence[Channels]) -> list[LabelPair]:
        return [self.label(channels) for channels in images]
