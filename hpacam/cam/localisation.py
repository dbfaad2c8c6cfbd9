"""Do the class maps find the cells? Measured on the synthetic benchmark, which knows every cell's labels.

For each class c and each cell, the score is the mean of class map c inside the cell (the map
upsampled to the cell image). A class localises when the cells that carry c score higher than
the cells that do not, measured by ROC-AUC. Two pools of "other cells" are reported:

    within  the other cells of images labelled c: pure localisation, since the image-level label
            is known there; this is what per-cell scores add to an image-level classifier
    all     the cells of every image: localisation and classification together

Averages are over the classes that have both positive and negative cells in the pool.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from hpacam.classes import NUM_CLASSES
from hpacam.images import read_image, read_label_png
from hpacam.masks import encode_label_image
from hpacam.submission import parse_prediction_string, read_submission


@dataclass
class CellScores:
    """Per cell of one image: its labels (multi-hot) and its mean class-map value per class."""

    image_id: str
    image_labels: np.ndarray  # (19,) multi-hot, the union of the cell labels
    cell_labels: np.ndarray  # (cells, 19) multi-hot
    scores: np.ndarray  # (cells, 19)


@dataclass
class LocalisationResult:
    within: dict[int, float] = field(default_factory=dict)  # class -> AUC among cells of images labelled c
    all: dict[int, float] = field(default_factory=dict)  # class -> AUC among all cells
    n_images: int = 0
    n_cells: int = 0

    @property
    def mean_within(self) -> float:
        return float(np.mean(list(self.within.values()))) if self.within else float("nan")

    @property
    def mean_all(self) -> float:
        return float(np.mean(list(self.all.values()))) if self.all else float("nan")


def read_cell_truth(truth_csv: str | Path) -> dict[str, dict[str, list[int]]]:
    """truth.csv (submission format) -> {image ID: {mask RLE: [labels]}}."""
    frame = read_submission(truth_csv)
    truth = {}
    for image_id, text in zip(frame["ID"], frame["PredictionString"]):
        cells: dict[str, list[int]] = {}
        for item in parse_prediction_string(text, f"{truth_csv}: ID {image_id}"):
            cells.setdefault(item.mask, []).append(item.label)
        truth[image_id] = cells
    return truth


def cell_label_matrix(cells: np.ndarray, masks_to_labels: dict[str, list[int]], where: str) -> np.ndarray:
    """(max cell id + 1, 19) multi-hot labels per cell id, matching truth masks to the label image."""
    encoded = encode_label_image(cells)
    by_mask = {mask: cell for cell, mask in encoded.items()}
    labels = np.zeros((int(cells.max()) + 1, NUM_CLASSES), dtype=np.float32)
    for mask, classes in masks_to_labels.items():
        if mask not in by_mask:
            raise ValueError(f"{where}: a truth mask matches no cell of the cell label image")
        labels[by_mask[mask], classes] = 1.0
    return labels


@torch.no_grad()
def class_maps(model: torch.nn.Module, image: np.ndarray, out_size: tuple[int, int], device) -> np.ndarray:
    """(19, H, W) class maps of one (S, S, C) image, upsampled bilinearly to `out_size`."""
    tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None].to(device)
    _, cams = model(tensor, with_cam=True)
    cams = F.interpolate(cams.float(), size=out_size, mode="bilinear", align_corners=False)
    return cams[0].cpu().numpy()


def mean_per_cell(maps: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """(cells + 1, classes) mean of each map inside each cell id (row 0: background)."""
    flat = cells.ravel()
    counts = np.bincount(flat, minlength=int(cells.max()) + 1).astype(np.float64)
    sums = np.stack([np.bincount(flat, weights=m.ravel(), minlength=len(counts)) for m in maps], axis=1)
    return sums / np.maximum(counts, 1)[:, None]


def score_cells(model: torch.nn.Module, dataset_dir: str | Path, image_ids: Sequence[str], image_size: int,
                mode: str = "rgby", device: str | torch.device = "cpu") -> list[CellScores]:
    """Mean class-map value in every truth cell of `image_ids` (reads images/, cells/, truth.csv)."""
    dataset_dir = Path(dataset_dir)
    truth = read_cell_truth(dataset_dir / "truth.csv")
    model.eval()
    out = []
    for image_id in image_ids:
        cells = read_label_png(dataset_dir / "cells" / f"{image_id}.png").astype(np.int64)
        labels = cell_label_matrix(cells, truth[image_id], f"{dataset_dir / 'truth.csv'}: ID {image_id}")
        image = read_image(dataset_dir / "images", image_id, mode, size=image_size)
        scores = mean_per_cell(class_maps(model, image, cells.shape, device), cells)
        present = np.flatnonzero(np.bincount(cells.ravel(), minlength=len(labels)))
        present = present[present > 0]
        out.append(CellScores(image_id, labels[present].max(axis=0), labels[present], scores[present]))
    return out


def localisation_auc(cell_scores: Sequence[CellScores]) -> LocalisationResult:
    """Per-class ROC-AUC of cell scores against cell labels, in both pools (see the module doc)."""
    labels = np.concatenate([s.cell_labels for s in cell_scores])
    scores = np.concatenate([s.scores for s in cell_scores])
    image_labels = np.concatenate([np.repeat(s.image_labels[None], len(s.cell_labels), 0) for s in cell_scores])
    result = LocalisationResult(n_images=len(cell_scores), n_cells=len(labels))
    for c in range(NUM_CLASSES):
        for pool, rows in (("within", image_labels[:, c] > 0), ("all", np.ones(len(labels), bool))):
            truth = labels[rows, c] > 0
            if 0 < truth.sum() < len(truth):
                getattr(result, pool)[c] = float(roc_auc_score(truth, scores[rows, c]))
    return result


def format_result(result: LocalisationResult, title: str = "") -> str:
    from hpacam.classes import CLASS_NAMES

    lines = [title] if title else []
    lines.append(f"{'class':<34} {'within':>7} {'all':>7}")
    for c in sorted(set(result.within) | set(result.all)):
        within = f"{result.within[c]:.3f}" if c in result.within else "-"
        every = f"{result.all[c]:.3f}" if c in result.all else "-"
        lines.append(f"{c:>2} {CLASS_NAMES[c][:31]:<31} {within:>7} {every:>7}")
    lines.append(f"{'mean':<34} {result.mean_within:>7.3f} {result.mean_all:>7.3f}   "
                 f"({result.n_images} images, {result.n_cells} cells)")
    return "\n".join(lines)
