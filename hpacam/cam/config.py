"""The Puzzle-CAM training config: one typed tree, read with `hpacam.config.load_config`.

No torch here, so scripts can parse and check a config (and fail on a typo) before paying
for the torch import. Recipes in `configs/cam/*.yaml` are short diffs over these defaults.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

from hpacam.images import ReadOptions


@dataclass
class ModelConfig:
    name: str = "resnest101"  # resnest*, efficientnet-b0..b7, or any timm model name
    # The switch for machines that may download: the library's ImageNet weights (network or its
    # cache), used only when pretrained_path is unset or its file is absent.
    pretrained: bool = False
    # The local ImageNet state dict (3- or 4-channel stem) a recipe expects; when given, the file is
    # what is loaded, and a missing file is an error unless pretrained=true allows the download.
    pretrained_path: Optional[Path] = None
    output_stride: int = 16  # 8, 16 or 32; the last stage(s) are dilated below 32
    mean: Optional[list[float]] = None  # input normalisation per channel; None: ImageNet (yellow = red)
    std: Optional[list[float]] = None
    kwargs: dict[str, Any] = field(default_factory=dict)  # extra backbone arguments (timm: channels, ...)


def choose_weights(model: ModelConfig) -> tuple[bool, Optional[Path]]:
    """(download through the library?, local file to load) for a model config; torch-free.

    Offline nodes (Kaggle, clusters) cannot download, so the recipes name a local file and the
    download happens only where `model.pretrained=true` says the machine may. Raises
    FileNotFoundError naming the file when it is absent and downloading is not allowed.
    """
    path = model.pretrained_path
    if path is None:
        return model.pretrained, None
    if Path(path).is_file():
        return False, Path(path)
    if model.pretrained:
        return True, None
    raise ValueError(
        f"{path}: pretrained weights file not found (model.pretrained_path). Put the ImageNet "
        f"weights there, set model.pretrained=true on a machine that may download them, or "
        f"model.pretrained_path=null to start from random weights")


@dataclass
class DataSource:
    """One label table and the folder holding its images (Kaggle train.csv or public-HPA CSV)."""

    images: Path = Path("data/train/images")
    labels: Path = Path("data/train/train.csv")


@dataclass
class DataConfig:
    sources: list[DataSource] = field(default_factory=lambda: [DataSource()])
    mode: Literal["rgby", "rgb"] = "rgby"
    image_size: int = 640  # training and validation size; a multiple of 2 x output_stride
    n_folds: int = 5
    fold: int = 0  # the validation fold; -1 trains on everything without validation
    fold_seed: int = 42
    num_workers: int = 2
    # Keep every decoded training image in memory (with num_workers=0: one copy), so each epoch
    # after the first decodes nothing. For small sets only (the CPU demo): images x pixels x
    # channels x 4 bytes, e.g. 480 images at 256 px RGBY = 0.5 GB.
    cache_images: bool = False
    val_batch_size: int = 0  # 0: twice train.batch_size
    read: ReadOptions = field(default_factory=ReadOptions)  # pixel limit and RGB-file policy


@dataclass
class AugmentConfig:
    enabled: bool = True
    hflip: bool = True
    vflip: bool = True
    rot90: bool = True  # microscopy has no "up": all 8 dihedral poses are equally likely
    crop_scale: tuple[float, float] = (0.6, 1.0)  # random resized crop, share of the area; (1, 1): off
    crop_ratio: tuple[float, float] = (0.75, 1.3333)
    brightness: float = 0.2  # each channel scaled by 1 +- this (stain intensity varies per channel)


@dataclass
class LossConfig:
    mode: Literal["puzzle", "plain"] = "puzzle"  # plain: classification loss only (ablation)
    num_pieces: int = 4  # tiles per image (a square: 4 = 2x2)
    alpha: float = 4.0  # weight of the reconstruction loss at its maximum
    alpha_schedule: float = 0.5  # share of the training steps over which alpha ramps 0 -> alpha
    reconstruction: Literal["masking", "all"] = "masking"  # masking: only the image's positive classes
    puzzle_class_loss: bool = True  # classify the re-assembled tile maps too
    focal_gamma: float = 0.0  # 0: plain binary cross-entropy
    label_smoothing: float = 0.0
    class_reduction: Literal["mean", "sum"] = "mean"  # over classes (the seed summed, Puzzle-CAM averaged)


@dataclass
class OptimConfig:
    name: Literal["sgd", "adam"] = "sgd"
    lr: float = 0.1
    weight_decay: float = 1e-4  # on weights only, never on biases
    momentum: float = 0.9
    nesterov: bool = True
    lr_multipliers: tuple[float, float, float, float] = (1.0, 2.0, 10.0, 20.0)  # see parameter_groups
    schedule: Literal["poly", "cosine", "step", "constant"] = "poly"
    poly_power: float = 0.9
    step_epochs: int = 1  # step schedule: multiply the lr by step_gamma every step_epochs epochs
    step_gamma: float = 0.85
    grad_clip: float = 0.0  # max gradient norm; 0: off


@dataclass
class TrainConfig:
    epochs: int = 3
    batch_size: int = 8  # per process
    accumulation: int = 1  # micro-batches per optimizer step
    amp: bool = False  # bf16 autocast on CPU, fp16 autocast + GradScaler on CUDA
    channels_last: bool = False
    device: Literal["auto", "cpu", "cuda"] = "auto"
    seed: int = 0
    resume: Optional[str] = None  # a checkpoint path, or "auto": run_dir/last.pt when it exists
    # Stop (saving last.pt) after this many optimizer steps; the schedule still spans all epochs.
    stop_after_steps: int = 0
    # Stop after this many epochs, the schedule still spanning train.epochs: the seed's recipe (a
    # 10-epoch poly schedule of which it trained 3). The earlier of the two limits wins; 0: off.
    stop_after_epochs: int = 0
    best_metric: str = "macro_auc"  # a validation metric; "val_loss" is minimised, the others maximised
    thresholds: list[float] = field(default_factory=lambda: [0.1, 0.2, 0.3, 0.4, 0.5])
    log_every: int = 50  # steps between log lines (the CSV gets one row per epoch)
    progress: bool = True  # tqdm bars on rank 0
    tensorboard: bool = False  # needs the `tensorboard` package
    dist_backend: Literal["auto", "nccl", "gloo"] = "auto"


@dataclass
class TrainCamConfig:
    run_dir: Path = Path("data/cam/run")
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def check(self) -> None:
        """Run by `hpacam.config.load_config` once the config is read, before torch is imported."""
        check_config(self)


def check_config(cfg: TrainCamConfig) -> None:
    """Cross-field checks the types cannot express; ValueError naming the keys."""
    stride = cfg.model.output_stride
    pieces_per_side = round(cfg.loss.num_pieces ** 0.5)
    if pieces_per_side ** 2 != cfg.loss.num_pieces:
        raise ValueError(f"loss.num_pieces={cfg.loss.num_pieces} is not a square (4, 9, 16)")
    unit = stride * (pieces_per_side if cfg.loss.mode == "puzzle" else 1)
    if cfg.data.image_size % unit:
        raise ValueError(f"data.image_size={cfg.data.image_size} must be a multiple of {unit} "
                         f"(model.output_stride x pieces per side) so tile maps re-assemble exactly")
    if not cfg.data.sources:
        raise ValueError("data.sources is empty: give at least one {images, labels} pair")
    if cfg.data.fold >= cfg.data.n_folds or cfg.data.fold < -1:
        raise ValueError(f"data.fold={cfg.data.fold} must be -1 or in 0..{cfg.data.n_folds - 1}")
    for key, value in (("train.epochs", cfg.train.epochs), ("train.batch_size", cfg.train.batch_size),
                       ("train.accumulation", cfg.train.accumulation)):
        if value < 1:
            raise ValueError(f"{key} must be at least 1, got {value}")
    for key, value in (("train.stop_after_steps", cfg.train.stop_after_steps),
                       ("train.stop_after_epochs", cfg.train.stop_after_epochs)):
        if value < 0:
            raise ValueError(f"{key} must be 0 (off) or more, got {value}")
    low, high = cfg.augment.crop_scale
    if not 0 < low <= high <= 1:
        raise ValueError(f"augment.crop_scale={cfg.augment.crop_scale} must satisfy 0 < low <= high <= 1")
    if not 0 <= cfg.loss.alpha_schedule <= 1:
        raise ValueError(f"loss.alpha_schedule={cfg.loss.alpha_schedule} must be in [0, 1]")
