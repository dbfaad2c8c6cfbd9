"""The stage command lines, written once: the demo, the ablation and the end-to-end test build them here.

A stage command is what a user types after `python`: the stage's script (or `-m module`), its
`--config FILE` when there is one, then its options and `key=value` overrides in the order given.
Spelling the script paths and the shared overrides in one place keeps the three callers running
the same commands as the README shows. The base inference config the tuner starts from is built
here too, as a checked `InferenceConfig` written by `hpacam.config`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

STAGES = {
    "segment": ("-m", "hpacam.segmentation"),
    "train_cam": ("train-cam-model/train_cam.py",),
    "train_img": ("train-image-level-model/train_img.py",),
    "extract_intensities": ("train-gradboost-regressor/extract_intensities.py",),
    "train_grad_boost": ("train-gradboost-regressor/train_grad_boost.py",),
    "train_cell": ("train-cell-model/train_cell.py",),
    "tune": ("-m", "hpacam.tuning"),
    "inference": ("inference/inference.py",),
}


def stage_command(stage: str, *args: Any, config: str | Path | None = None) -> list[str]:
    """`python` arguments of one stage: its script, `--config config` if given, then `args` as strings."""
    if stage not in STAGES:
        raise KeyError(f"unknown stage {stage!r}; expected one of {sorted(STAGES)}")
    head = ["--config", str(config)] if config is not None else []
    return [*STAGES[stage], *head, *(str(arg) for arg in args)]


def sources_override(labelled_set: Path) -> str:
    """`data.sources=...` of the CAM and cell trainers for one set folder (`images/`, `labels.csv`)."""
    return f"data.sources=[{{images: {labelled_set / 'images'}, labels: {labelled_set / 'labels.csv'}}}]"


def scored_set_options(scored_set: Path, truth: bool = False) -> list[str]:
    """`--images DIR --sample CSV` (and `--truth CSV`) of a generated set, as tuning and inference read them."""
    options = ["--images", str(scored_set / "images"), "--sample", str(scored_set / "sample_submission.csv")]
    return options + (["--truth", str(scored_set / "truth.csv")] if truth else [])


def base_inference_config(checkpoint: Path, regressor: Path, masks: Path, keras_model: Path | None = None,
                          cell_model: Path | None = None, **settings: Any):
    """The models and fixed settings (one test-time scale, the run's mask cache) before the blend is tuned."""
    from hpacam.cam.tta import TTAConfig
    from hpacam.inference import CamModelEntry, CellModelEntry, ImageModelEntry, InferenceConfig
    from hpacam.segmentation.settings import CacheSettings, SegmentationConfig

    return InferenceConfig(
        cam_models=[CamModelEntry(checkpoint=checkpoint, regressor=regressor)],
        image_models=[ImageModelEntry(model=keras_model)] if keras_model else [],
        cell_models=[CellModelEntry(checkpoint=cell_model)] if cell_model else [],
        tta=TTAConfig(scales=[1.0]), segmentation=SegmentationConfig(cache=CacheSettings(dir=masks)), **settings)


def write_inference_config(path: Path, cfg: Any, header: str = "") -> Path:
    """`cfg` resolved and written as YAML by `hpacam.config` (as the tuner writes its output), after `header`."""
    from hpacam.config import dump_config
    from hpacam.fileio import atomic_write_text

    return atomic_write_text(path, header + dump_config(cfg))
