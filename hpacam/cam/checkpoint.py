"""Self-describing checkpoints: everything needed to rebuild the model, or to resume exactly.

A checkpoint is a dict of tensors and plain Python values only (no pickled classes, no numpy
arrays), so it loads with `hpacam.torchfile.load_tensors` (`weights_only=True`), which cannot run code
from the file:

    format, version        "hpacam.cam", 1
    arch                   create_model arguments: name, in_chans, output_stride, num_classes, mean, std, kwargs
    classes, channels      the 19 class names and the input channel order
    config                 the resolved training config as a dict
    epoch, step            epoch the run is in, optimizer steps done
    model                  state dict of the classifier (never of a DDP wrapper)
    optimizer, scheduler, scaler, rng     training state for an exact resume
    metric                 {"name", "value", "best"}, and "metrics": the last validation metrics
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hpacam.cam.models import CamClassifier, create_model
from hpacam.fileio import atomic_path
from hpacam.torchfile import load_tensors

FORMAT = "hpacam.cam"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file is missing, unreadable, or not an hpacam CAM checkpoint."""


def capture_rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU and CUDA) generator states as tensors and plain values."""
    numpy_state = np.random.get_state(legacy=False)
    return {
        "python": random.getstate(),
        "numpy": {"bit_generator": numpy_state["bit_generator"],
                  "key": torch.from_numpy(numpy_state["state"]["key"].astype(np.int64)),
                  "pos": int(numpy_state["state"]["pos"]),
                  "has_gauss": int(numpy_state["has_gauss"]), "gauss": float(numpy_state["gauss"])},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    python = state["python"]
    random.setstate((python[0], tuple(python[1]), python[2]))
    numpy_state = state["numpy"]
    np.random.set_state({"bit_generator": numpy_state["bit_generator"],
                         "state": {"key": numpy_state["key"].numpy().astype(np.uint32), "pos": numpy_state["pos"]},
                         "has_gauss": numpy_state["has_gauss"], "gauss": numpy_state["gauss"]})
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, checkpoint: dict[str, Any]) -> Path:
    """Write atomically: a crash mid-write leaves the previous file intact."""
    checkpoint = {"format": FORMAT, "version": VERSION, **checkpoint}
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)
    return Path(path)


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with `weights_only=True`; CheckpointError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    checkpoint = load_tensors(path, "checkpoint", CheckpointError, map_location)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an hpacam CAM checkpoint (no format={FORMAT!r} entry)")
    if checkpoint.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint version {checkpoint.get('version')}; this code reads {VERSION}")
    return checkpoint


def model_from_checkpoint(checkpoint: dict[str, Any], where: str | Path = "checkpoint") -> CamClassifier:
    """Rebuild the classifier from the checkpoint's own description; no config or download needed.

    Weights that do not fit the architecture the file names (another model's, missing keys) are a
    CheckpointError naming `where` (the file), in one line.
    """
    try:
        arch = dict(checkpoint["arch"])
        kwargs = arch.pop("kwargs", {})
        model = create_model(**arch, pretrained=False, **kwargs)
        model.load_state_dict(checkpoint["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        detail = " ".join(str(exc).split())
        raise CheckpointError(f"{where}: its weights do not fit the architecture it names "
                              f"({type(exc).__name__}: {detail[:300]})") from None
    return model


WRONG_KIND = {
    "cam": "a cell-level classifier's checkpoint (it reads crops of one cell, not whole images); it goes under "
           "cell_models, not cam_models",
    "cell": "not a cell-model checkpoint (its config has no cells.crops section; a CAM checkpoint goes under "
            "cam_models)",
}


def is_cell_checkpoint(checkpoint: dict[str, Any]) -> bool:
    """Written by the cell-level classifier's training: its config carries a `cells` section."""
    return "cells" in checkpoint.get("config", {})


def load_for_inference(path: str | Path, kind: str,
                       device: str | torch.device = "cpu") -> tuple[dict[str, Any], CamClassifier, str]:
    """(checkpoint, its model on `device` in eval mode, a short name) of a `kind` ("cam" or "cell") checkpoint.

    Both kinds are CamClassifiers; only what they read differs (whole images or crops of one
    cell), so a checkpoint of the other kind is refused here, naming the file, before it is built.
    """
    checkpoint = read_checkpoint(path)
    cells = checkpoint.get("config", {}).get("cells")
    wrong = is_cell_checkpoint(checkpoint) if kind == "cam" else not (isinstance(cells, dict) and "crops" in cells)
    if wrong:
        raise CheckpointError(f"{path}: {WRONG_KIND[kind]}")
    model = model_from_checkpoint(checkpoint, path).to(device).eval()
    return checkpoint, model, Path(path).parent.name + "/" + Path(path).stem


def load_cam_model(path: str | Path, device: str | torch.device = "cpu") -> CamClassifier:
    """The trained classifier of a checkpoint, on `device`, in eval mode (what inference uses).

    The returned model also carries `class_names` and `channels` from the checkpoint.
    """
    checkpoint = read_checkpoint(path)
    model = model_from_checkpoint(checkpoint, path)
    model.class_names = list(checkpoint["classes"])
    model.channels = list(checkpoint["channels"])
    return model.to(device).eval()
