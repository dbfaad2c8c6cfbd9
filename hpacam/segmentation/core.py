"""The segmentation interface: channels of one image in, cell and nucleus label images out.

Every backend turns the channels of one image (a mapping `{"red": HxW, "yellow": HxW,
"blue": HxW, ...}` of uint8/uint16/float arrays, or an (H, W, 4) RGBY array) into two int32
label images of the original size: cells 1..N (0 = background) and the nucleus of cell i
labelled i. `segment` adds the per-cell border flags and returns a `Segmentation`.

Backends are chosen by name in the config (`segmentation.backend`); `register_backend` adds one.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np

from hpacam.classes import CHANNELS
from hpacam.segmentation.border import BorderFlags, border_flags
from hpacam.segmentation.settings import SegmentationConfig

Channels = Mapping[str, np.ndarray]
LabelPair = tuple[np.ndarray, np.ndarray]  # (cells, nuclei)


class SegmentationError(RuntimeError):
    """A backend cannot run (missing package, weights, trust switch) or was given bad input."""


@dataclass(frozen=True)
class Segmentation:
    """The result for one image; every later stage reads its cells from here."""

    cells: np.ndarray  # int32 (H, W): 0 = background, cells 1..N
    nuclei: np.ndarray  # int32 (H, W): the nucleus of cell i is labelled i
    border: BorderFlags  # per-cell border measurements, index i = cell i + 1
    backend: str

    @property
    def n_cells(self) -> int:
        return len(self.border)

    @property
    def shape(self) -> tuple[int, int]:
        return self.cells.shape


class Backend(Protocol):
    """What a segmentation backend provides."""

    name: str
    channels: tuple[str, ...]  # the channels it reads; the cache hashes only these

    def settings(self) -> dict:
        """The resolved settings that change its output (they go into the cache key)."""

    def label(self, channels: Channels) -> LabelPair:
        """Cells and nuclei of one image at its original size."""

    def label_many(self, images: Sequence[Channels]) -> list[LabelPair]:
        """Several images at once (a backend may batch them); same order as `images`."""


BackendFactory = Callable[[SegmentationConfig], Backend]
_BUILTIN: dict[str, str] = {
    "classic": "hpacam.segmentation.classic:ClassicBackend",
    "hpa": "hpacam.segmentation.hpa:HpaBackend",
}
_REGISTERED: dict[str, BackendFactory] = {}


def register_backend(name: str, factory: BackendFactory) -> None:
    """Make `segmentation.backend=name` build its backend with `factory(cfg)`."""
    _REGISTERED[name] = factory


def backend_names() -> list[str]:
    return sorted(set(_BUILTIN) | set(_REGISTERED))


def make_backend(cfg: SegmentationConfig) -> Backend:
    """The backend the config names (built-ins are imported only when chosen)."""
    name = cfg.backend
    if name in _REGISTERED:
        return _REGISTERED[name](cfg)
    if name not in _BUILTIN:
        raise SegmentationError(f"segmentation.backend={name!r} is unknown; choose one of {backend_names()}")
    module_name, class_name = _BUILTIN[name].split(":")
    return getattr(importlib.import_module(module_name), class_name).from_config(cfg)


def as_channels(image: Channels | np.ndarray) -> dict[str, np.ndarray]:
    """A channel mapping, from a mapping or an (H, W, 4) array in RGBY order (`read_image`'s)."""
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != len(CHANNELS):
            raise SegmentationError(f"an image array must be (H, W, 4) in RGBY order, got {image.shape}")
        return {name: image[..., i] for i, name in enumerate(CHANNELS)}
    return dict(image)


def check_channels(channels: Channels, needed: Sequence[str]) -> tuple[int, int]:
    """The common (H, W) of the needed channels; SegmentationError naming what is wrong."""
    missing = [name for name in needed if name not in channels]
    if missing:
        raise SegmentationError(f"missing channel(s) {missing}; the backend reads {list(needed)}")
    shapes = {name: np.shape(channels[name]) for name in needed}
    if any(len(s) != 2 for s in shapes.values()) or len(set(shapes.values())) != 1:
        raise SegmentationError(f"channels must be 2-D and of one size, got {shapes}")
    height, width = next(iter(shapes.values()))
    if height == 0 or width == 0:
        raise SegmentationError(f"empty image of shape {(height, width)}")
    return height, width


def finish_segmentation(cells: np.ndarray, nuclei: np.ndarray, cfg: SegmentationConfig, backend: str) -> Segmentation:
    """Check a backend's labels, make them consecutive, tie nuclei to cells, add border flags."""
    if cells.shape != nuclei.shape or cells.ndim != 2:
        raise SegmentationError(f"{backend}: cells {cells.shape} and nuclei {nuclei.shape} must be one 2-D shape")
    cells = np.asarray(cells).astype(np.int32, copy=False)
    if cells.size and cells.min() < 0:
        raise SegmentationError(f"{backend}: label images must not hold negative labels")
    areas = np.bincount(cells.ravel())  # one pass over the full-size image, shared below
    cells, areas = consecutive_labels(cells, areas)
    nuclei = np.where(np.asarray(nuclei) > 0, cells, 0).astype(np.int32, copy=False)
    flags = border_flags(cells, cfg.border, areas=areas[1:])
    return Segmentation(cells=cells, nuclei=nuclei, border=flags, backend=backend)


def consecutive_labels(labels: np.ndarray, areas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Relabel to 1..N in the order of the old labels (a no-op when already consecutive).

    `areas` is `np.bincount(labels.ravel())`; the areas of the new labels are returned with them.
    """
    present = areas > 0
    present[0] = True
    if present.all():
        return labels, areas
    present[0] = False
    lookup = np.zeros(len(present), dtype=np.int32)
    lookup[present] = np.arange(1, int(present.sum()) + 1, dtype=np.int32)
    return lookup[labels], np.concatenate([[areas[0]], areas[present]])


def segment(image: Channels | np.ndarray, cfg: SegmentationConfig = SegmentationConfig(),
            backend: Backend | None = None) -> Segmentation:
    """Segment one image held in memory (no cache; see `segment_image` for files and the cache)."""
    backend = backend or make_backend(cfg)
    channels = as_channels(image)
    check_channels(channels, backend.channels)
    cells, nuclei = backend.label(channels)
    return finish_segmentation(cells, nuclei, cfg, backend.name)


def segment_many(images: Sequence[Channels | np.ndarray], cfg: SegmentationConfig = SegmentationConfig(),
                 backend: Backend | None = None) -> list[Segmentation]:
    """Segment several in-memory images, letting the backend batch them."""
    backend = backend or make_backend(cfg)
    prepared = [as_channels(image) for image in images]
    for channels in prepared:
        check_channels(channels, backend.channels)
    return [finish_segmentation(cells, nuclei, cfg, backend.name)
            for cells, nuclei in backend.label_many(prepared)]


def content_settings(backend: Backend, cfg: SegmentationConfig) -> dict[str, Any]:
    """Everything that changes a segmentation's content: the cache's settings key is its hash."""
    from dataclasses import asdict

    return {"backend": backend.name, "settings": backend.settings(), "border": asdict(cfg.border)}
