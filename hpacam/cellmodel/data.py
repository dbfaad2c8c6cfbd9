"""Cell crops as a training set for the CAM stage's loop: items are (input, target, index).

Augmentation is one of the eight dihedral poses (cells have no "up") and a brightness change per
stain channel, drawn from a generator seeded by (seed, epoch, index) as the CAM dataset does, so
a resumed run sees exactly the crops an uninterrupted one would.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset

from hpacam.cam.config import AugmentConfig
from hpacam.cam.data import sample_rng


def model_input(crop: np.ndarray, mask_mode: str) -> np.ndarray:
    """(5, S, S) uint8 crop -> float32 model input: 4 masked stains, or 4 stains + the mask."""
    planes = crop.astype(np.float32) / 255.0
    if mask_mode == "apply":
        return planes[:4] * planes[4:5]
    if mask_mode == "channel":
        return planes
    raise ValueError(f"unknown mask mode {mask_mode!r}; expected apply or channel")


def input_channels(mask_mode: str) -> int:
    return 5 if mask_mode == "channel" else 4


def dihedral(planes: np.ndarray, pose: int) -> np.ndarray:
    """One of the 8 rotations/reflections of (C, S, S) planes; pose 0 is the identity."""
    out = np.rot90(planes, pose % 4, axes=(1, 2))
    return out[:, :, ::-1] if pose >= 4 else out


def allowed_poses(cfg: AugmentConfig) -> list[int]:
    """The dihedral poses the augmentation settings allow (see `dihedral`: 4 = h-flip, 6 = v-flip, 2 = both)."""
    if cfg.rot90:
        return list(range(8))
    return [0] + [4] * cfg.hflip + [6] * cfg.vflip + [2] * (cfg.hflip and cfg.vflip)


class CellCropDataset(Dataset):
    def __init__(self, crops: np.ndarray, targets: np.ndarray, mask_mode: str = "apply",
                 augment: AugmentConfig | None = None, seed: int = 0):
        if len(crops) != len(targets):
            raise ValueError(f"{len(crops)} crops but {len(targets)} targets")
        self.crops, self.targets = crops, np.asarray(targets, dtype=np.float32)
        self.mask_mode, self.augment, self.seed = mask_mode, augment, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.crops)

    def __getitem__(self, index: int):
        planes = model_input(np.asarray(self.crops[index]), self.mask_mode)
        if self.augment is not None and self.augment.enabled:
            planes = self._augmented(planes, sample_rng(self.seed, self.epoch, index))
        return torch.from_numpy(np.ascontiguousarray(planes)), torch.from_numpy(self.targets[index]), index

    def _augmented(self, planes: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        cfg = self.augment
        planes = dihedral(planes, int(rng.choice(allowed_poses(cfg))))
        if cfg.brightness > 0:
            scale = 1.0 + rng.uniform(-cfg.brightness, cfg.brightness, size=4).astype(np.float32)
            planes = planes.copy()
            planes[:4] = np.clip(planes[:4] * scale[:, None, None], 0.0, 1.0)
        return planes
