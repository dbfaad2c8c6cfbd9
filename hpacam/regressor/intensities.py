"""Per-cell CAM intensities: the one function shared by the regressor stage and inference.

For an image, its cell label image and a model's class maps (after the activation) at the
working size, the intensity of cell k for class c is the sum of the map over the cell times the
model's image-level probability of c; the mean over the cell is kept too, because the sum grows
with cell area and the regressor can use both.

All cells and classes are computed at once (run-length sums over the flat label image, then one
`np.bincount`), never a Python loop over cells times classes: a 2048 px image with 40 cells and
19 maps of 640 px takes a few milliseconds (see `bench/intensity_speed.py`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np

Activation = Literal["swish", "relu", "raw"]


def activate(maps: np.ndarray, activation: Activation) -> np.ndarray:
    """Apply the activation to raw class maps. Swish keeps a little negative evidence, relu none."""
    maps = np.asarray(maps, dtype=np.float32)
    if activation == "swish":
        return maps / (1.0 + np.exp(-maps))
    if activation == "relu":
        return np.maximum(maps, 0.0)
    if activation == "raw":
        return maps
    raise ValueError(f"unknown activation {activation!r}; expected swish, relu or raw")


def labels_at(labels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Cell label image resized to (height, width) with nearest neighbour (labels must not blend)."""
    height, width = size
    if labels.shape == (height, width):
        return labels
    resized = cv2.resize(labels.astype(np.int32, copy=False), (width, height), interpolation=cv2.INTER_NEAREST)
    return resized.astype(labels.dtype, copy=False)


def present_cells(labels: np.ndarray) -> np.ndarray:
    """Sorted labels (> 0) present in a label image; a bincount, far cheaper than np.unique's sort."""
    counts = np.bincount(np.asarray(labels).ravel().astype(np.int64, copy=False))
    return np.flatnonzero(counts[1:]) + 1


@dataclass(frozen=True)
class CellIntensities:
    """Per-cell, per-class intensities of one image for one model.

    `cell_ids[k]` is the label of row k in the full-size label image; `area[k]` its pixel count
    at the working size (0 when the cell vanished on resizing: its sums and means are then 0).
    """

    cell_ids: np.ndarray  # (N,) int
    sums: np.ndarray  # (N, C) float32: sum of map x image probability
    means: np.ndarray  # (N, C) float32
    area: np.ndarray  # (N,) int64


def cell_intensities(labels: np.ndarray, maps: np.ndarray, image_probs: np.ndarray | None = None,
                     cell_ids: np.ndarray | None = None) -> CellIntensities:
    """Sum and mean of every class map over every cell, scaled by the image-level probabilities.

    labels: (H, W) int cell label image (0 = background), resized here to the maps' size.
    maps: (C, h, w) activated class maps. image_probs: (C,) or None for 1.
    cell_ids: the cells to report (default: every label present in the full-size image).
    """
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim != 3:
        raise ValueError(f"class maps must be (C, h, w), got shape {maps.shape}")
    n_classes, height, width = maps.shape
    if cell_ids is None:
        cell_ids = present_cells(labels)
    small = labels_at(np.asarray(labels), (height, width)).astype(np.int64, copy=False).ravel()
    n_bins = int(max(small.max(initial=0), cell_ids.max(initial=0))) + 1
    totals = _sum_by_label(maps.reshape(n_classes, -1), small, n_bins)[:, cell_ids].T.astype(np.float32)
    area = np.bincount(small, minlength=n_bins)[cell_ids]
    if image_probs is not None:
        totals = totals * np.asarray(image_probs, dtype=np.float32)[None, :]
    means = np.divide(totals, area[:, None], out=np.zeros_like(totals), where=area[:, None] > 0)
    return CellIntensities(cell_ids=np.asarray(cell_ids), sums=totals, means=means, area=area)


def _sum_by_label(values: np.ndarray, labels: np.ndarray, n_bins: int) -> np.ndarray:
    """(C, P) values summed per label of the (P,) flat label image -> (C, n_bins), in float64.

    Cells are contiguous, so the flat label image is a few thousand runs of one label: each
    class is summed run by run with one `np.add.reduceat` pass over contiguous memory, and only
    the small (C, runs) table is then gathered by label.
    """
    starts = np.flatnonzero(np.concatenate(([True], labels[1:] != labels[:-1])))
    run_labels = labels[starts]
    # float32 within a run (at most one map row, so the rounding stays ~1e-7 relative), float64 across runs.
    run_sums = np.add.reduceat(values, starts, axis=1).astype(np.float64)
    n_classes = values.shape[0]
    index = (np.arange(n_classes)[:, None] * n_bins + run_labels[None, :]).ravel()
    return np.bincount(index, weights=run_sums.ravel(), minlength=n_classes * n_bins).reshape(n_classes, n_bins)


def cell_intensities_loop(labels: np.ndarray, maps: np.ndarray, image_probs: np.ndarray | None = None,
                          cell_ids: np.ndarray | None = None):
    """The straightforward per-cell, per-class loop: the reference the fast version is tested against."""
    maps = np.asarray(maps, dtype=np.float64)
    small = labels_at(np.asarray(labels), maps.shape[1:])
    if cell_ids is None:
        cell_ids = present_cells(labels)
    probs = np.ones(maps.shape[0]) if image_probs is None else np.asarray(image_probs, dtype=np.float64)
    sums = np.zeros((len(cell_ids), maps.shape[0]))
    means = np.zeros_like(sums)
    for row, cell in enumerate(cell_ids):
        inside = small == cell
        for c in range(maps.shape[0]):
            sums[row, c] = maps[c][inside].sum() * probs[c]
            means[row, c] = sums[row, c] / inside.sum() if inside.any() else 0.0
    return cell_ids, sums, means
