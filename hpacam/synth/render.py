"""Render one synthetic HPA image: geometry, stains, optics, camera noise.

Geometry and textures are built at a render resolution of at most 1024 px (the image size
divided by a whole factor where possible: 2048 -> 1024, 1728 -> 864, 3072 -> 1024), then the
channels are resized with linear interpolation and the label images with nearest-neighbour to
the full size, where the camera noise is added pixel by pixel. The truth label images are the
resized render-resolution labels, so they match the written images' geometry exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from hpacam.classes import CHANNELS, NEGATIVE, MITOTIC_SPINDLE
from hpacam.synth.cell_labels import (assign_cell_labels, check_label_set, draw_image_labels,
                                      mitosis_allowed)
from hpacam.synth.drawing import gaussian_blur, smooth_noise
from hpacam.synth.fields import Fields, build_fields, per_cell
from hpacam.synth.hard import NONE, HardCases
from hpacam.synth.layout import Layout, make_layout
from hpacam.synth.patterns import GREEN_PATTERNS
from hpacam.synth.stains import Structures, blue_stain, build_structures, red_stain, yellow_stain
from hpacam.synth.stats import load_label_stats

MAX_RENDER_SIZE = 1024
MIN_IMAGE_SIZE = 64
BIT_DEPTHS = (8, 16)


@dataclass
class SyntheticImage:
    """One rendered image with its per-cell ground truth (cell ids are 1..n in `cells`)."""

    size: int
    bit_depth: int
    channels: dict[str, np.ndarray]  # name -> (size, size) uint16 (or uint8)
    cells: np.ndarray  # int32 (size, size), 0 = background
    nuclei: np.ndarray  # int32 (size, size), nucleus of cell i labelled i
    cell_labels: dict[int, tuple[int, ...]]
    image_labels: tuple[int, ...]  # union of the cells' labels
    mitotic_cells: tuple[int, ...]
    border_cells: tuple[int, ...]  # cells cut by the image border

    @property
    def n_cells(self) -> int:
        return len(self.cell_labels)


def render_size_for(size: int) -> int:
    """The render resolution: the image size divided by the smallest whole factor reaching <= 1024."""
    factor = -(-size // MAX_RENDER_SIZE)
    return int(round(size / factor))


@lru_cache(maxsize=1)
def default_label_stats() -> dict:
    return load_label_stats()


def as_generator(rng_or_seed) -> np.random.Generator:
    if isinstance(rng_or_seed, np.random.Generator):
        return rng_or_seed
    if isinstance(rng_or_seed, (np.random.SeedSequence, int, np.integer)):
        return np.random.default_rng(rng_or_seed)
    raise TypeError(f"expected a numpy Generator, SeedSequence or int seed, got {type(rng_or_seed).__name__}")


def check_size(size) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise TypeError(f"image size must be an integer, got {size!r}")
    if size <= 0:
        raise ValueError(f"image size must be positive, got {size}")
    if size < MIN_IMAGE_SIZE:
        raise ValueError(f"image size {size} is too small to hold cells; use at least {MIN_IMAGE_SIZE} px")
    return int(size)


def check_bit_depth(bit_depth) -> int:
    if bit_depth not in BIT_DEPTHS:
        raise ValueError(f"bit depth must be 8 or 16, got {bit_depth!r}")
    return int(bit_depth)


def render_image(rng_or_seed, size: int, label_set=None, bit_depth: int = 16,
                 label_stats: dict | None = None, hard: HardCases = NONE) -> SyntheticImage:
    """Render one square image of `size` px.

    `label_set` forces the image labels (e.g. `(13,)` for a plasma-membrane image); otherwise they
    are drawn from the real HPA label-set distribution (`label_stats`, the packaged file by default).
    `hard` turns on segmentation hard cases (hpacam.synth.hard); off, the image is unchanged.
    """
    if not isinstance(hard, HardCases):
        raise TypeError(f"hard must be a hpacam.synth.hard.HardCases, got {type(hard).__name__}")
    size, bit_depth = check_size(size), check_bit_depth(bit_depth)
    rng = as_generator(rng_or_seed)
    if label_set is not None:
        labels = check_label_set(label_set)
    else:
        labels = draw_image_labels(rng, label_stats or default_label_stats())
    layout = make_layout(rng, render_size_for(size), min_mitotic=int(MITOTIC_SPINDLE in labels),
                         allow_mitosis=mitosis_allowed(labels), hard=hard)
    cell_labels = assign_cell_labels(rng, labels, layout.mitotic)
    fields = build_fields(layout)
    structures = build_structures(fields, rng)
    signals = {
        "red": red_stain(fields, structures, rng),
        "green": green_signal(fields, structures, rng, cell_labels),
        "blue": blue_stain(fields, rng, hard),
        "yellow": yellow_stain(fields, structures, rng),
    }
    return finish_image(rng, layout, signals, cell_labels, size, bit_depth)


def expression_levels(rng: np.random.Generator, carriers: np.ndarray, n_cells: int) -> np.ndarray:
    """Per-cell expression of one label: an image-level strength times a cell factor, some cells dim."""
    levels = np.zeros(n_cells, dtype=np.float32)
    strength = rng.uniform(0.35, 1.0)
    factor = rng.lognormal(0.0, 0.35, size=len(carriers))
    dim = np.where(rng.random(len(carriers)) < 0.15, rng.uniform(0.3, 0.55, size=len(carriers)), 1.0)
    # the floor keeps a carrier's pattern well above the autofluorescence (<= 0.012): dim, not absent
    levels[carriers - 1] = np.clip(strength * factor * dim, 0.18, 2.2)
    return levels


def green_signal(fields: Fields, structures: Structures, rng: np.random.Generator,
                 cell_labels: list[tuple[int, ...]]) -> np.ndarray:
    """Sum over the image's labels of pattern x per-cell expression, plus faint non-specific signal."""
    layout = fields.layout
    green = np.zeros(fields.shape, np.float32)
    present = sorted({label for labels in cell_labels for label in labels} - {NEGATIVE})
    for label in present:
        carriers = np.array([i + 1 for i, labels in enumerate(cell_labels) if label in labels])
        levels = expression_levels(rng, carriers, layout.n_cells)
        pattern = GREEN_PATTERNS[label](fields, structures, rng, carriers)
        green += pattern * per_cell(levels, layout.cells)
    background = rng.uniform(0.003, 0.012)  # autofluorescence, far below any real pattern
    green += background * (fields.thickness + 0.15 * fields.in_nucleus)
    return green


def illumination(rng: np.random.Generator, size: int) -> np.ndarray:
    """Uneven illumination: a linear gradient and vignetting, 0.6-1.0 of the centre brightness."""
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size - 0.5
    angle = rng.uniform(0, 2 * np.pi)
    gradient = np.float32(np.cos(angle)) * coords[None, :] + np.float32(np.sin(angle)) * coords[:, None]
    radius2 = coords[None, :] ** 2 + coords[:, None] ** 2
    field = 1.0 + rng.uniform(0.0, 0.35) * gradient - rng.uniform(0.0, 0.5) * radius2
    return (field / field.max()).astype(np.float32)


def apply_optics(rng: np.random.Generator, signals: dict[str, np.ndarray], unit: float) -> dict[str, np.ndarray]:
    """Blur, illumination, exposure gain and background offset: signal -> fraction of full scale."""
    shape = next(iter(signals.values())).shape
    light = illumination(rng, shape[0])
    gains = {"red": (0.25, 0.7), "green": (0.2, 0.85), "blue": (0.35, 0.85), "yellow": (0.25, 0.7)}
    out = {}
    for name in CHANNELS:
        blurred = gaussian_blur(signals[name], rng.uniform(0.6, 1.2) * unit)
        gain = rng.uniform(*gains[name])
        offset = rng.uniform(0.002, 0.02) * (1.0 + 0.15 * smooth_noise(rng, shape, 0.1 * shape[0]))
        out[name] = (offset + gain * blurred * light * rng.uniform(0.9, 1.1)).astype(np.float32)
    return out


def upscale_labels(labels: np.ndarray, size: int) -> np.ndarray:
    """Nearest-neighbour resize by pixel centres (the same sampling grid as cv2's linear resize)."""
    index = ((np.arange(size) + 0.5) * (labels.shape[0] / size)).astype(np.int64)
    return np.ascontiguousarray(labels[index][:, index]).astype(np.int32)


def upscale_channel(channel: np.ndarray, size: int) -> np.ndarray:
    import cv2

    if channel.shape[0] == size:
        return channel
    return cv2.resize(channel, (size, size), interpolation=cv2.INTER_LINEAR)


def add_camera_noise(rng: np.random.Generator, image: np.ndarray, photons: float, read_noise: float) -> np.ndarray:
    """Poisson-like shot noise (variance proportional to signal) plus Gaussian read noise."""
    sigma = np.sqrt(np.maximum(image, 0.0) * np.float32(1.0 / photons) + np.float32(read_noise ** 2))
    return image + sigma * rng.standard_normal(image.shape, dtype=np.float32)


def quantise(image: np.ndarray, bit_depth: int) -> np.ndarray:
    top = (1 << bit_depth) - 1
    dtype = np.uint16 if bit_depth == 16 else np.uint8
    return (np.clip(image, 0.0, 1.0) * np.float32(top) + np.float32(0.5)).astype(dtype)


def finish_image(rng: np.random.Generator, layout: Layout, signals: dict[str, np.ndarray],
                 cell_labels: list[tuple[int, ...]], size: int, bit_depth: int) -> SyntheticImage:
    optical = apply_optics(rng, signals, layout.unit)
    photons = rng.uniform(800.0, 5000.0)  # photo-electrons at full scale: sets the shot noise
    read_noise = rng.uniform(0.0008, 0.003)
    channels = {name: quantise(add_camera_noise(rng, upscale_channel(optical[name], size), photons, read_noise),
                               bit_depth) for name in CHANNELS}
    cells = upscale_labels(layout.cells, size)
    union = sorted({label for labels in cell_labels for label in labels})
    return SyntheticImage(
        size=size, bit_depth=bit_depth, channels=channels, cells=cells,
        nuclei=upscale_labels(layout.nuclei, size),
        cell_labels={i + 1: tuple(labels) for i, labels in enumerate(cell_labels)},
        image_labels=tuple(union),
        mitotic_cells=tuple(int(i) + 1 for i in np.flatnonzero(layout.mitotic)),
        border_cells=tuple(int(c) for c in layout.border_cells()),
    )
