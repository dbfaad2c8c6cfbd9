"""Per-cell CAM intensities of labelled images, as a tidy CSV for the calibration regressor.

For each image: segment it (through the mask cache), run every CAM checkpoint with the same
test-time augmentation as inference, and compute every cell's intensity for every class with
`hpacam.regressor.intensities.cell_intensities`. The target of a (cell, class) row is the image-level
label: all a real user has. It is only a fair per-cell target for single-label images (every
cell of a single-label image shows that label), hence `select=single` by default, as the
original solution did.

`targets=cell_truth_oracle` instead reads the synthetic benchmark's per-cell truth (`truth.csv`
and `cells/` beside the images): an *oracle analysis* of what a regressor could learn with
labels no real training set has. It is never a default, the demo's pipeline never uses it, and
it refuses to run unless both files are there, so it cannot switch itself on.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from tqdm import tqdm

from hpacam.cam.tta import TTAConfig
from hpacam.classes import NUM_CLASSES
from hpacam.config import check_at_least, check_unit_interval
from hpacam.devices import check_device
from hpacam.fileio import atomic_path
from hpacam.images import ReadOptions, id_file, read_image
from hpacam.labels import multi_hot, read_labels
from hpacam.regressor.calibration import INTENSITY_COLUMNS, feature_frame
from hpacam.regressor.intensities import Activation, cell_intensities
from hpacam.segmentation import SegmentationConfig, Segmenter

log = logging.getLogger(__name__)


@dataclass
class ExtractConfig:
    images: Path = Path("data/synth/train/images")
    labels: Path = Path("data/synth/train/labels.csv")
    checkpoints: list[Path] = field(default_factory=list)  # CAM checkpoints (best.pt of each run)
    out_dir: Path = Path("data/intensities")
    select: Literal["single", "all"] = "single"  # which labelled images to use
    # image_labels: what a real training set has. cell_truth_oracle: the synthetic per-cell truth,
    # for an oracle analysis only (never a default; see the module docstring).
    targets: Literal["image_labels", "cell_truth_oracle"] = "image_labels"
    match_iou: float = 0.5  # segmented-to-truth cell matching threshold (oracle targets only)
    activation: Activation = "swish"
    tta: TTAConfig = field(default_factory=TTAConfig)
    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)
    read: ReadOptions = field(default_factory=ReadOptions)  # the same limits and RGB policy as inference
    device: str = "cpu"
    max_images: int = 0  # 0: all selected images

    def __post_init__(self):
        check_device("device", self.device)
        check_unit_interval(match_iou=self.match_iou)
        check_at_least(0, max_images=self.max_images)


def select_images(labels: pd.DataFrame, select: str) -> pd.DataFrame:
    if select == "single":
        return labels[labels["labels"].map(len) == 1].reset_index(drop=True)
    return labels


@dataclass
class CellTruth:
    """Per-cell truth of a synthetic set: {image ID: {mask: [labels]}} and the truth label images."""

    labels_by_mask: dict
    cells_dir: Path

    @classmethod
    def beside(cls, images: Path) -> "CellTruth":
        truth_csv, cells_dir = images.parent / "truth.csv", images.parent / "cells"
        if not (truth_csv.is_file() and cells_dir.is_dir()):
            raise FileNotFoundError(f"targets=cell_truth_oracle needs per-cell truth beside {images}: "
                                    f"{truth_csv} and {cells_dir}/ (only the synthetic benchmark has them)")
        from hpacam.cam.localisation import read_cell_truth

        return cls(read_cell_truth(truth_csv), cells_dir)

    def targets(self, image_id: str, cells: np.ndarray, match_iou: float) -> np.ndarray:
        """(max cell id + 1, 19) targets of the segmented cells; NaN rows for unmatched cells."""
        from hpacam.cam.localisation import cell_label_matrix
        from hpacam.images import read_label_png
        from hpacam.segmentation.quality import match_labels

        truth_cells = read_label_png(id_file(self.cells_dir, image_id))
        truth_labels = cell_label_matrix(truth_cells, self.labels_by_mask.get(image_id, {}),
                                         f"{self.cells_dir / image_id}.png")
        targets = np.full((int(cells.max(initial=0)) + 1, NUM_CLASSES), np.nan, dtype=np.float32)
        for truth_id, pred_id, _ in match_labels(truth_cells, cells, match_iou).matched_pairs:
            targets[pred_id] = truth_labels[truth_id]
        return targets


def image_rows(image_id: str, model_name: str, result, probs: np.ndarray, border: np.ndarray,
               targets: np.ndarray) -> pd.DataFrame:
    """The tidy rows (cells x classes) of one image and one model; cells without a target dropped."""
    keep = ~np.isnan(targets[result.cell_ids, 0])
    frame = feature_frame(result, probs, border[result.cell_ids - 1]).assign(
        image=image_id, model=model_name, target=targets[result.cell_ids].ravel())
    return frame[np.repeat(keep, NUM_CLASSES)]


def extract(cfg: ExtractConfig) -> pd.DataFrame:
    """Run segmentation and every CAM model over the selected images; return the tidy table."""
    from hpacam.cam.loading import load_cam_models
    from hpacam.cam.tta import predict_activated_maps

    if not cfg.checkpoints:
        raise ValueError("no CAM checkpoints given (checkpoints=[path/best.pt, ...])")
    labels = select_images(read_labels(cfg.labels), cfg.select)
    if cfg.max_images:
        labels = labels.head(cfg.max_images)
    if labels.empty:
        raise ValueError(f"{cfg.labels}: no images selected (select={cfg.select})")
    truth = CellTruth.beside(cfg.images) if cfg.targets == "cell_truth_oracle" else None
    log.info("%d images, %d models, targets from %s", len(labels), len(cfg.checkpoints),
             "per-cell truth (ORACLE analysis, not a real user's setting)" if truth else "image labels")
    models = load_cam_models(cfg.checkpoints, cfg.device)
    segmenter = Segmenter(cfg.segmentation, read_options=cfg.read)
    image_targets = multi_hot(labels["labels"])
    frames = []
    for row, image_id in enumerate(tqdm(labels["ID"], desc="intensities", unit="img")):
        seg = segmenter.segment_file(cfg.images, image_id)
        if seg.n_cells == 0:
            log.warning("%s: no cells found; skipped", image_id)
            continue
        if truth is not None:
            targets = truth.targets(image_id, seg.cells, cfg.match_iou)
        else:
            targets = np.tile(image_targets[row], (seg.n_cells + 1, 1))
        images = {mode: read_image(cfg.images, image_id, mode, options=cfg.read) for mode in {cam.mode for cam in models}}
        for cam in models:
            probs, activated, _ = predict_activated_maps(cam, images[cam.mode], cfg.tta, cfg.activation, cfg.device)
            result = cell_intensities(seg.cells, activated, probs)
            frames.append(image_rows(image_id, cam.name, result, probs, seg.border.is_border, targets))
    if not frames:
        raise ValueError("no cells with targets were found in any selected image")
    return pd.concat(frames, ignore_index=True)[list(INTENSITY_COLUMNS)]


def write_table(frame: pd.DataFrame, path: Path) -> Path:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")
    return path
