"""Training the cell-level classifier: crops of segmented training cells, weak labels from the image.

The loop is the CAM stage's (`hpacam.cam.train`), given another data builder: the training
images are split into folds as for the CAM stage, every cell of every image is cropped once into
the crop cache, and each crop's target is its image's labels (lowered by the CAM evidence when
`cells.pseudo.threshold` > 0). Under `torchrun`, rank 0 builds the crop cache and the others wait
for it and read it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch.distributed as dist

from hpacam.cam.data import LabelledImages, describe, read_sources, split_folds
from hpacam.cam.train import Processes, TrainingData, TrainResult, train
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


def crop_dataset(cfg: TrainCellConfig, images: LabelledImages, segmenter: Segmenter, procs: Processes,
                 training: bool) -> CellCropDataset:
    """Every cell of `images` (all sources) as one dataset; the crop cache is built by rank 0 first."""
    progress = procs.is_main and cfg.train.progress
    crops, targets = [], []
    labels_by_id = dict(zip(images.ids, images.targets))
    for folder in dict.fromkeys(Path(f) for f in images.folders):
        crop_set = crops_of_source(cfg, images, folder, segmenter, progress)
        crops.append(crop_set.crops)
        targets.append(targets_of(cfg, crop_set, labels_by_id, folder, segmenter, str(procs.device), progress))
    return CellCropDataset(crops[0] if len(crops) == 1 else ChainedCrops(crops), np.concatenate(targets), cfg.cells.crops.mask,
                           cfg.augment if training else None, cfg.train.seed)


def cell_training_data(cfg: TrainCellConfig, procs: Processes) -> TrainingData:
    train_images, val_images = split_folds(read_sources(cfg.data), cfg.data)
    segmenter = Segmenter(cfg.cells.segmentation, read_options=cfg.data.read)
    if procs.distributed and not procs.is_main:
        dist.barrier()  # rank 0 builds the crop cache; the others then read it
    train_set = crop_dataset(cfg, train_images, segmenter, procs, training=True)
    val_set = crop_dataset(cfg, val_images, segmenter, procs, training=False) if val_images is not None else None
    if procs.distributed and procs.is_main:
        dist.barrier()
    if procs.is_main:
        log.info("train: %s -> %d cell crops", describe(train_images), len(train_set))
        log.info("validation: %s", f"{describe(val_images)} -> {len(val_set)} cell crops" if val_set is not None
                 else "none (data.fold=-1)")
        if cfg.cells.pseudo.threshold > 0:
            log.info("targets: image labels lowered below CAM standing %.2f (models %s, key %s)",
                     cfg.cells.pseudo.threshold, [str(p) for p in cfg.cells.pseudo.cam_checkpoints],
                     checkpoints_key(cfg.cells.pseudo.cam_checkpoints))
    return TrainingData(train_set, val_set, input_channels(cfg.cells.crops.mask))


def train_cell_model(cfg: TrainCellConfig) -> TrainResult:
    return train(cfg, data_builder=cell_training_data, check=check_cell_config)
