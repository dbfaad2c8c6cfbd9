"""Trained CAM models as the later stages use them: loaded once, with their training size and colour mode.

The regressor stage, the cell model's weak labels and inference all load CAM checkpoints this way,
so a model is fed images exactly as it was trained on them (`hpacam.cam.tta` runs the passes).
torch is imported only when a checkpoint is loaded, so configs can be read without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from hpacam.devices import resolve_device

if TYPE_CHECKING:
    import torch

    from hpacam.cam.models import CamClassifier


@dataclass
class LoadedCamModel:
    """A CAM model with what inference needs to feed it: its training size and colour mode."""

    name: str
    model: CamClassifier
    image_size: int
    mode: str
    stride: int


def load_cam_models(paths: Sequence[str | Path], device: str | torch.device = "cpu") -> list[LoadedCamModel]:
    """Load checkpoints once (weights_only) and keep each one's training size and colour mode."""
    from hpacam.cam.checkpoint import load_for_inference

    device = resolve_device(device) if isinstance(device, str) else device
    loaded = []
    for path in paths:
        checkpoint, model, name = load_for_inference(path, "cam", device)
        data = checkpoint["config"]["data"]
        stride = int(checkpoint["arch"].get("output_stride", 16))
        loaded.append(LoadedCamModel(name=name, model=model, image_size=int(data["image_size"]),
                                     mode=str(data["mode"]), stride=stride))
    return loaded
