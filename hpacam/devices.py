"""The one place a device setting (`auto`, `cpu`, `cuda`, `cuda:N`) becomes a torch device name.

Every stage that runs torch models (training, intensity extraction, pseudo-labels, inference, the
HPA segmentation backend) accepts `auto`; resolving it in one function means they all pick the
same device for the same setting and refuse a missing CUDA device with the same message.
torch is imported inside the function, so configs can check a device name without it.
"""

from __future__ import annotations

import re

DEVICE = re.compile(r"auto|cpu|cuda(:[0-9]+)?")


def check_device(name: str, device: str) -> None:
    """auto, cpu, cuda or cuda:N; anything else would fail only when the first model is moved there."""
    if not DEVICE.fullmatch(device):
        raise ValueError(f"{name}={device!r} is not a device; use auto, cpu, cuda or cuda:N")


def resolve_device(device: str, name: str = "device") -> str:
    """`auto` -> `cuda` when CUDA is available, else `cpu`; a CUDA device on a machine without one fails.

    `name` is the setting's key, for the message (e.g. `train.device`).
    """
    import torch

    check_device(name, device)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"{name}={device} but CUDA is not available on this machine")
    return device
