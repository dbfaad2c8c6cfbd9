"""Training the cell-level classifier: crops of segmented training cells, weak labels from the image.

The loop is the CAM stage's (`hpacam.cam.train`), given another data builder: the training
images are split into folds as for the CAM stage, every cell of every image is cropped once into
the crop cache, and each crop's target is its image's labels (lowered by the CAM evidence when
`cells.pseudo.threshold` > 0, and by the cell model's own out-of-fold predictions when
`cells.pseudo.rounds` > 0: `hpacam.cellmodel.rounds`). Under `torchrun`, rank 0 builds the crop
cache and the others wait for it and read it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
import torch.distributed as dist

from hpacam.cam.data import LabelledImages, read_sources, split_folds, summarise_images
from hpacam.cam.train import Processes, TrainingData, TrainResult, run_training, train
from hpacam.cellmodel.config import TrainCellConfig, check_cell_config
from hpacam.cellmodel.crops import ChainedCrops, CropSet, CropSettings, build_crop_set
from hpacam.cellmodel.data import CellCropDataset, input_channels
from hpacam.cellmodel.pseudo import cam_standing, checkpoints_key, soft_targets
from hpacam.classes import NUM_CLASSES
from hpacam.segmentation import Segmenter

log = logging.getLogger(__name__)


def crop_settings(cfg: TrainCellConfig) -> CropSettings:
    return CropSettings(size=cfg.data.image_size, margin=cfg.cells.crops.margin)


def crops_of_source(cfg: TrainCellConfig, images: LabelledImages, folder: Path, segmenter: Segmenter,
                    progress: bool) -> CropSet:
    cache_root = cfg.cells.crops.cache_dir or Path(cfg.run_dir) / "crops"
    ids = [image_id for image_id, f in zip(images.ids, images.folders) if Path(f) == folder]
    return build_crop_set(Path(cache_root), folder, ids, segmenter, crop_settings(cfg), cfg.data.read,
                          progress=progress)


def targets_of(cfg: TrainCellConfig, crop_set: CropSet, labels_by_id: dict, folder: Path,
               segmenter: Segmenter, device: str, progress: bool) -> np.ndarray:
    """(crops, 19): each crop's image labels, refined by the CAM evidence when asked for."""
    labels = np.stack([labels_by_id[image_id] for image_id in crop_set.index["ID"]]) if len(crop_set.index) \
        else np.zeros((0, NUM_CLASSES), np.float32)
    pseudo = cfg.cells.pseudo
    if pseudo.threshold <= 0:
        return labels.astype(np.float32)
    standing = cam_standing(crop_set, folder, segmenter, pseudo.cam_checkpoints, pseudo.activation, pseudo.scales,
                            device, progress)
    return soft_targets(labels, standing, pseudo.threshold)


@dataclass
class CellCrops:
    """Every crop of a set of images (all sources), its (ID, cell) and its target, in one order."""

    crops: object  # np.ndarray or ChainedCrops: crops[i] is (5, S, S) uint8
    index: pd.DataFrame  # ID, cell (one row per crop)
    targets: np.ndarray  # (crops, 19)


def cell_crops_of(cfg: TrainCellConfig, images: LabelledImages, segmenter: Segmenter,
                  procs: Processes) -> CellCrops:
    """The crops of `images` from the crop cache (built now where missing) and their weak targets."""
    progress = procs.is_main and cfg.train.progress
    crops, index, targets = [], [], []
    labels_by_id = dict(zip(images.ids, images.targets))
    for folder in dict.fromkeys(Path(f) for f in images.folders):
        crop_set = crops_of_source(cfg, images, folder, segmenter, progress)
        crops.append(crop_set.crops)
        index.append(crop_set.index[["ID", "cell"]])
        targets.append(targets_of(cfg, crop_set, labels_by_id, folder, segmenter, str(procs.device), progress))
    return CellCrops(crops[0] if len(crops) == 1 else ChainedCrops(crops), pd.concat(index, ignore_index=True),
                     np.concatenate(targets))


class SubsetCrops:
    """The crops of some rows of a crop array, indexed from 0, without copying them."""

    def __init__(self, crops, rows: np.ndarray):
        self.crops, self.rows = crops, np.asarray(rows)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> np.ndarray:
        return self.crops[int(self.rows[index])]


def dataset_of(cfg: TrainCellConfig, cells: CellCrops, training: bool,
               rows: Optional[np.ndarray] = None) -> CellCropDataset:
    crops = cells.crops if rows is None else SubsetCrops(cells.crops, rows)
    targets = cells.targets if rows is None else cells.targets[rows]
    return CellCropDataset(crops, targets, cfg.cells.crops.mask, cfg.augment if training else None, cfg.train.seed)


def cell_training_data(cfg: TrainCellConfig, procs: Processes, refine=None, keep_ids=None) -> TrainingData:
    """The crops of the training split (and the validation split), with their targets.

    `refine(cells) -> targets` lowers the training targets further (an out-of-fold round's
    predictions); `keep_ids`, a set of image IDs, trains on those images' cells only and
    validates on none (a fold model of such a round).
    """
    train_images, val_images = split_folds(read_sources(cfg.data), cfg.data)
    segmenter = Segmenter(cfg.cells.segmentation, read_options=cfg.data.read)
    if procs.distributed and not procs.is_main:
        dist.barrier()  # rank 0 builds the crop cache; the others then read it
    cells = cell_crops_of(cfg, train_images, segmenter, procs)
    val_cells = cell_crops_of(cfg, val_images, segmenter, procs) if val_images is not None and keep_ids is None \
        else None
    if procs.distributed and procs.is_main:
        dist.barrier()
    if refine is not None:
        cells.targets = refine(cells)
    rows = None if keep_ids is None else np.flatnonzero(cells.index["ID"].isin(keep_ids).to_numpy())
    train_set = dataset_of(cfg, cells, True, rows)
    val_set = dataset_of(cfg, val_cells, False) if val_cells is not None else None
    if procs.is_main:
        log_targets(cfg, train_images, train_set, val_images, val_set, keep_ids)
    return TrainingData(train_set, val_set, input_channels(cfg.cells.crops.mask))


def log_targets(cfg: TrainCellConfig, train_images, train_set, val_images, val_set, keep_ids) -> None:
    subset = f"; this fold model learns from the {len(keep_ids)} images of the other folds" if keep_ids is not None \
        else ""
    log.info("train: %s%s -> %d cell crops", summarise_images(train_images), subset, len(train_set))
    log.info("validation: %s", f"{summarise_images(val_images)} -> {len(val_set)} cell crops" if val_set is not None
             else "none")
    if cfg.cells.pseudo.threshold > 0:
        log.info("targets: image labels lowered below CAM standing %.2f (models %s, key %s)",
                 cfg.cells.pseudo.threshold, [str(p) for p in cfg.cells.pseudo.cam_checkpoints],
                 checkpoints_key(cfg.cells.pseudo.cam_checkpoints))
    mean = float(train_set.targets.sum() / max(1, (train_set.targets > 0).sum()))
    log.info("targets: mean %.3f over the labels the cells' images carry", mean)


def run_with_rounds(cfg: TrainCellConfig, procs: Processes, data_builder=cell_training_data) -> TrainResult:
    """The out-of-fold rounds (`cells.pseudo.rounds`, none by default), then the model itself."""
    from hpacam.cellmodel.rounds import oof_rounds

    refine = oof_rounds(cfg, procs)
    return run_training(cfg, procs, lambda c, p: data_builder(c, p, refine=refine))


def train_cell_model(cfg: TrainCellConfig) -> TrainResult:
    return train(cfg, data_builder=cell_training_data, check=check_cell_config, runner=run_with_rounds)
