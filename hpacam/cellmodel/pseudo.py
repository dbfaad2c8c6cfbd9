"""Weak per-cell labels from image labels, refined by the CAM evidence.

Every cell starts with its image's labels: that is all a real training set says. In a multi-label
image most cells show only some of the labels (the generator's statistics and HPA's own say about
60% lack one), so a cell whose CAM evidence for a label is weak next to its image's best cell for
that label is probably one of them. `soft_targets` lowers such a label linearly with the cell's
standing (its class evidence over the image's strongest cell, `hpacam.inference.standing_within_image`)
below `threshold`, and drops it at zero standing. It only ever lowers: a label the image lacks is
never given to a cell (tests hold this), so no per-cell truth enters training.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from hpacam.classes import NUM_CLASSES

log = logging.getLogger(__name__)


def soft_targets(image_labels: np.ndarray, standing: np.ndarray | None, threshold: float) -> np.ndarray:
    """(cells, 19) targets in [0, 1]: the image labels, lowered where the cell's standing < threshold.

    `threshold` 0 (or no standing) keeps the image labels as they are.
    """
    labels = np.asarray(image_labels, dtype=np.float32)
    if not 0.0 <= threshold <= 1.0:
        raise ValueError(f"pseudo-label threshold must be in [0, 1], got {threshold}")
    if standing is None or threshold == 0.0:
        return labels.copy()
    if standing.shape != labels.shape:
        raise ValueError(f"standing {standing.shape} and labels {labels.shape} differ in shape")
    weight = np.clip(np.nan_to_num(np.asarray(standing, dtype=np.float32), nan=1.0) / threshold, 0.0, 1.0)
    return labels * weight


def checkpoints_key(paths: Sequence[Path]) -> str:
    """Hash of the CAM checkpoints' bytes (in order): the standing cache belongs to these models only."""
    from hpacam.segmentation.cache import hash_files

    return hash_files({f"{index:04d}": Path(path) for index, path in enumerate(paths)})[:24]


def cam_standing(crop_set, folder: Path, segmenter, checkpoints: Sequence[Path], activation: str = "swish",
                 scales: Sequence[float] = (1.0,), device: str = "cpu", progress: bool = True) -> np.ndarray:
    """(crops, 19) each cell's CAM standing within its image, averaged over the CAM models.

    Computed once per crop set and set of checkpoints, and kept beside the crops.
    """
    key = checkpoints_key(checkpoints)
    cached = Path(crop_set.folder) / f"standing-{key}.npy" if crop_set.folder is not None else None
    if cached is not None and cached.is_file():
        return np.load(cached, allow_pickle=False)
    standing = _compute_standing(crop_set, folder, segmenter, checkpoints, activation, scales, device, progress)
    if cached is not None:
        from hpacam.fileio import atomic_path

        with atomic_path(cached) as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, standing, allow_pickle=False)
        (Path(crop_set.folder) / f"standing-{key}.json").write_text(
            json.dumps({"checkpoints": [str(p) for p in checkpoints], "activation": activation,
                        "scales": list(scales)}, indent=1))
    return standing


def _compute_standing(crop_set, folder: Path, segmenter, checkpoints: Sequence[Path], activation: str,
                      scales: Sequence[float], device: str, progress: bool) -> np.ndarray:
    from hpacam.cam.loading import load_cam_models
    from hpacam.cam.tta import TTAConfig, predict_maps
    from hpacam.images import read_image
    from hpacam.inference import standing_within_image
    from hpacam.regressor.intensities import activate, cell_intensities

    cams = load_cam_models(list(checkpoints), device)
    tta = TTAConfig(scales=list(scales))
    out = np.ones((len(crop_set.index), NUM_CLASSES), dtype=np.float32)
    groups = crop_set.index.groupby("ID", sort=False).indices
    for image_id, rows in tqdm(groups.items(), desc="CAM standing", unit="img", disable=not progress):
        seg = segmenter.segment_file(folder, image_id)
        images = {mode: read_image(folder, image_id, mode) for mode in {cam.mode for cam in cams}}
        per_model = []
        for cam in cams:
            probs, maps = predict_maps(cam, images[cam.mode], tta, device)
            result = cell_intensities(seg.cells, activate(maps, activation), probs)
            standing = np.ones((seg.n_cells, NUM_CLASSES))
            standing[result.cell_ids - 1] = standing_within_image(result.means)
            per_model.append(standing)
        cells = crop_set.index["cell"].to_numpy()[rows] - 1
        out[rows] = np.mean(per_model, axis=0)[cells]
    return out
