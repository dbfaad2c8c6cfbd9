"""Class maps and image probabilities of trained CAM models, with test-time augmentation.

The models come from `hpacam.cam.loading.load_cam_models`; this module only runs the passes.

Shared by the regressor stage (`extract_intensities.py`) and inference, so the maps the regressor
is fitted on are computed exactly as the ones it is later applied to. Each model sees the image at
several scales (default 1.0, 1.3, 1.6 of its training size) and in the four flips; the flips are
undone on the maps, every map is resized to one working size, and the raw maps and the
probabilities are averaged before the activation (`tta.combine=mean_then_activate`, the default).
The seed instead applied the activation to every pass's maps and summed them
(`tta.combine=activate_then_sum`): swish is not linear, so the two differ beyond a factor, and the
sum grows with the number of passes. Extraction and inference read the same setting, so the
regressor is always fitted on maps combined the way it is applied to.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from hpacam.config import check_at_least
from hpacam.devices import resolve_device
from hpacam.images import resize_image
from hpacam.regressor.intensities import Activation, activate

if TYPE_CHECKING:  # torch is imported where it is used, so configs can be read without it
    import torch

    from hpacam.cam.loading import LoadedCamModel

FLIPS = ((), (3,), (2,), (2, 3))  # none, horizontal, vertical, both (dims of a BCHW tensor)
Combine = Literal["mean_then_activate", "activate_then_sum"]
COMBINES = ("mean_then_activate", "activate_then_sum")


@dataclass
class TTAConfig:
    scales: list[float] = field(default_factory=lambda: [1.0, 1.3, 1.6])
    flips: bool = True
    map_size: int = 0  # side of the working maps; 0: the model's training size
    # mean_then_activate: average the raw maps of all passes, then activate (ours). activate_then_sum:
    # activate each pass's maps, then sum them (the seed's 21st-place notebook).
    combine: Combine = "mean_then_activate"

    def __post_init__(self):
        if self.combine not in COMBINES:
            raise ValueError(f"tta.combine must be one of {COMBINES}, got {self.combine!r}")
        if not self.scales or not all(0.0 < s <= 8.0 for s in self.scales):
            raise ValueError(f"scales must be a non-empty list of numbers in (0, 8], got {self.scales}")
        check_at_least(0, map_size=self.map_size)


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


def predict_activated_maps(cam: LoadedCamModel, image: np.ndarray, tta: TTAConfig, activation: Activation,
                           device: str | torch.device = "cpu") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image probabilities (C,), activated maps (C, m, m) combined as `tta.combine` says, raw maps).

    The raw maps (averaged over passes) are what pictures show; the activated ones feed the cells.
    """
    import torch

    device = resolve_device(device) if isinstance(device, str) else device
    with torch.inference_mode():
        if tta.combine == "mean_then_activate":
            probs, raw = _predict_maps(cam, image, tta, device)
            return probs, activate(raw, activation), raw
        probs, raw, activated = _predict_maps(cam, image, tta, device, activation)
        return probs, activated, raw


def combine_passes(pass_maps: np.ndarray, activation: Activation, combine: Combine) -> np.ndarray:
    """(P, C, h, w) raw maps of P test-time passes -> (C, h, w), combined as `combine` says.

    The reference for what `predict_activated_maps` computes pass by pass on the device.
    """
    pass_maps = np.asarray(pass_maps, dtype=np.float32)
    if combine == "mean_then_activate":
        return activate(pass_maps.mean(0), activation)
    if combine == "activate_then_sum":
        return activate(pass_maps, activation).sum(0)
    raise ValueError(f"unknown combine {combine!r}; expected one of {COMBINES}")


def activate_tensor(maps: torch.Tensor, activation: Activation) -> torch.Tensor:
    """`hpacam.regressor.intensities.activate` on a tensor, so each pass is activated where it was computed."""
    if activation == "swish":
        return maps * maps.sigmoid()
    if activation == "relu":
        return maps.clamp_min(0.0)
    if activation == "raw":
        return maps
    raise ValueError(f"unknown activation {activation!r}; expected swish, relu or raw")


def _predict_maps(cam: LoadedCamModel, image: np.ndarray, tta: TTAConfig, device: Any,
                  activation: Activation | None = None):
    """Probabilities and raw maps averaged over passes; with `activation`, also the activated sum."""
    import torch
    import torch.nn.functional as F

    map_size = tta.map_size or cam.image_size
    flips = FLIPS if tta.flips else FLIPS[:1]
    probs, maps, activated = [], [], []
    for scale in tta.scales:
        side = scaled_size(cam.image_size, scale, cam.stride)
        tensor = torch.from_numpy(np.ascontiguousarray(resize_image(image, side).transpose(2, 0, 1)))[None]
        batch = torch.cat([tensor.flip(dims) if dims else tensor for dims in flips]).to(device)
        logits, cams = cam.model(batch, with_cam=True)
        cams = torch.stack([c.flip([d - 1 for d in dims]) if dims else c for c, dims in zip(cams, flips)])
        cams = F.interpolate(cams.float(), size=(map_size, map_size), mode="bilinear", align_corners=False)
        probs.append(torch.sigmoid(logits.float()).mean(0))
        maps.append(cams.mean(0))
        if activation is not None:
            activated.append(activate_tensor(cams, activation).sum(0))
    result = (torch.stack(probs).mean(0).cpu().numpy().astype(np.float32),
              torch.stack(maps).mean(0).cpu().numpy().astype(np.float32))
    if activation is None:
        return result
    return (*result, torch.stack(activated).sum(0).cpu().numpy().astype(np.float32))
