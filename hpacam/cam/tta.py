"""Class maps and image probabilities of trained CAM models, with test-time augmentation.

Shared by the regressor stage (`extract_intensities.py`) and inference, so the maps the regressor
is fitted on are computed exactly as the ones it is later applied to. Each model sees the image at
several scales (default 1.0, 1.3, 1.6 of its training size) and in the four flips; the flips are
undone on the maps, every map is resized to one working size, and the raw maps and the
probabilities are averaged before the activation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from hpacam.config import check_at_least
from hpacam.devices import resolve_device
from hpacam.images import resize_image

if TYPE_CHECKING:  # torch is imported where it is used, so configs can be read without it
    import torch

    from hpacam.cam.models import CamClassifier

FLIPS = ((), (3,), (2,), (2, 3))  # none, horizontal, vertical, both (dims of a BCHW tensor)


@dataclass
class TTAConfig:
    scales: list[float] = field(default_factory=lambda: [1.0, 1.3, 1.6])
    flips: bool = True
    map_size: int = 0  # side of the working maps; 0: the model's training size

    def __post_init__(self):
        if not self.scales or not all(0.0 < s <= 8.0 for s in self.scales):
            raise ValueError(f"scales must be a non-empty list of numbers in (0, 8], got {self.scales}")
        check_at_least(0, map_size=self.map_size)


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


def scaled_size(image_size: int, scale: float, stride: int) -> int:
    """The input side at `scale`, rounded to a multiple of the stride so maps tile exactly."""
    return max(stride, int(round(image_size * scale / stride)) * stride)


def predict_maps(cam: LoadedCamModel, image: np.ndarray, tta: TTAConfig = TTAConfig(),
                 device: str | torch.device = "cpu") -> tuple[np.ndarray, np.ndarray]:
    """Image probabilities (C,) and raw class maps (C, m, m) of one (H, W, channels) image in [0, 1].

    The image is resized to a square at each scale, as in training; the maps are averaged over
    scales and flips at the working size m. Returning raw maps lets each caller choose the
    activation.
    """
    import torch

    device = resolve_device(device) if isinstance(device, str) else device  # "auto" as in every stage
    with torch.inference_mode():
        return _predict_maps(cam, image, tta, device)


def _predict_maps(cam: LoadedCamModel, image: np.ndarray, tta: TTAConfig, device: Any):
    import torch
    import torch.nn.functional as F

    map_size = tta.map_size or cam.image_size
    flips = FLIPS if tta.flips else FLIPS[:1]
    probs, maps = [], []
    for scale in tta.scales:
        side = scaled_size(cam.image_size, scale, cam.stride)
        tensor = torch.from_numpy(np.ascontiguousarray(resize_image(image, side).transpose(2, 0, 1)))[None]
        batch = torch.cat([tensor.flip(dims) if dims else tensor for dims in flips]).to(device)
        logits, cams = cam.model(batch, with_cam=True)
        cams = torch.stack([c.flip([d - 1 for d in dims]) if dims else c for c, dims in zip(cams, flips)])
        cams = F.interpolate(cams.float(), size=(map_size, map_size), mode="bilinear", align_corners=False)
        probs.append(torch.sigmoid(logits.float()).mean(0))
        maps.append(cams.mean(0))
    return (torch.stack(probs).mean(0).cpu().numpy().astype(np.float32),
            torch.stack(maps).mean(0).cpu().numpy().astype(np.float32))
