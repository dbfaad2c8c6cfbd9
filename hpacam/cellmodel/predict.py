"""Per-cell probabilities of trained cell-level classifiers, with flips as test-time augmentation.

A checkpoint carries its training config, so the crop size, margin and mask mode inference uses
are the ones the model learned with; nothing has to be repeated in the inference config.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from hpacam.cellmodel.crops import CropSettings, cell_crops
from hpacam.cellmodel.data import model_input
from hpacam.classes import NUM_CLASSES


@dataclass
class LoadedCellModel:
    name: str
    model: torch.nn.Module
    crop: CropSettings
    mask_mode: str


def load_cell_models(paths: Sequence[str | Path], device: str | torch.device = "cpu") -> list[LoadedCellModel]:
    """Load cell-model checkpoints once (weights_only), with the crop settings each was trained on."""
    from hpacam.cam.checkpoint import load_for_inference

    loaded = []
    for path in paths:
        checkpoint, model, name = load_for_inference(path, "cell", device)
        config = checkpoint["config"]
        crops = config["cells"]["crops"]
        crop = CropSettings(size=int(config["data"]["image_size"]), margin=float(crops["margin"]))
        loaded.append(LoadedCellModel(name, model, crop, str(crops["mask"])))
    return loaded


@torch.no_grad()
def predict_crops(member: LoadedCellModel, crops: np.ndarray, device: str | torch.device = "cpu",
                  flips: bool = True, batch_size: int = 256) -> np.ndarray:
    """(cells, 19) sigmoid probabilities of (cells, 5, S, S) uint8 crops, averaged over the four flips."""
    if len(crops) == 0:
        return np.zeros((0, NUM_CLASSES))
    out = []
    for start in range(0, len(crops), batch_size):
        planes = np.stack([model_input(c, member.mask_mode) for c in crops[start:start + batch_size]])
        x = torch.from_numpy(planes).to(device)
        views = [x, x.flip(3), x.flip(2), x.flip(2).flip(3)] if flips else [x]
        probs = torch.stack([torch.sigmoid(member.model(v).float()) for v in views]).mean(dim=0)
        out.append(probs.cpu().numpy().astype(np.float64))
    return np.concatenate(out)


def cell_model_probs(members: Sequence[LoadedCellModel], weights: Sequence[float], image: np.ndarray,
                     cells: np.ndarray, device: str | torch.device = "cpu", flips: bool = True) -> np.ndarray:
    """(cells, 19): the weighted mean over cell models of each cell's probabilities; `image` is RGBY in [0, 1]."""
    per_model, crops_by_setting = [], {}
    for member in members:
        if member.crop not in crops_by_setting:  # models trained on the same crops share them
            crops_by_setting[member.crop] = cell_crops(image, cells, member.crop)
        per_model.append(predict_crops(member, crops_by_setting[member.crop], device, flips))
    w = np.asarray(weights, dtype=np.float64)
    return np.tensordot(w / w.sum(), np.stack(per_model), axes=1)
