"""The cell-level classifier's training config: the CAM stage's config plus a `cells` section.

The cell model trains with the CAM stage's loop (run folder, resume, `torchrun` DDP, AMP, the
same `model`, `optim` and `train` keys), on crops of segmented training cells instead of whole
images. `data.image_size` is the side of the crops the model sees; `data.sources`, folds and
`data.read` mean what they mean for the CAM stage (folds split images, so a validation image's
cells are all held out). No torch here, so a bad key fails before the torch import.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional

from hpacam.cam.config import DataConfig, LossConfig, TrainCamConfig, check_config
from hpacam.segmentation.settings import SegmentationConfig


@dataclass
class CellCropConfig:
    margin: float = 0.1  # the cell's box grows by this share of its longer side on each side
    # apply: the four stains are multiplied by the cell's mask (neighbours vanish);
    # channel: the mask is a fifth input channel and the neighbours stay visible
    mask: Literal["apply", "channel"] = "apply"
    cache_dir: Optional[Path] = None  # where crop sets are kept; None: <run_dir>/crops


@dataclass
class PseudoLabelConfig:
    """Per-cell targets: the image labels, lowered where the CAM evidence does not support them."""

    cam_checkpoints: list[Path] = field(default_factory=list)  # empty: the image labels as they are
    threshold: float = 0.0  # standing below which a label is lowered (hpacam.cellmodel.pseudo); 0: off
    activation: Literal["swish", "relu", "raw"] = "swish"
    scales: list[float] = field(default_factory=lambda: [1.0])
    # Out-of-fold rounds (hpacam.cellmodel.rounds): models trained on the other `folds` predict
    # each fold's cells; a label below `round_threshold` standing is lowered. 0 rounds: off.
    rounds: int = 0
    folds: int = 2
    round_threshold: float = 0.5
    round_epochs: int = 0  # epochs of each fold model; 0: train.epochs


@dataclass
class CellStageConfig:
    crops: CellCropConfig = field(default_factory=CellCropConfig)
    pseudo: PseudoLabelConfig = field(default_factory=PseudoLabelConfig)
    # The segmentation the crops are cut from: the same settings (and cache) inference uses.
    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)


@dataclass
class TrainCellConfig(TrainCamConfig):
    run_dir: Path = Path("data/cell/run")
    data: DataConfig = field(default_factory=lambda: DataConfig(image_size=64))
    loss: LossConfig = field(default_factory=lambda: LossConfig(mode="plain"))
    cells: CellStageConfig = field(default_factory=CellStageConfig)

    def check(self) -> None:
        """Run by `hpacam.config.load_config` once the config is read: the cell stage's checks, not
        only the CAM stage's it would inherit, so a bad crop or pseudo-label setting fails there."""
        check_cell_config(self)


def check_cell_config(cfg: TrainCellConfig) -> None:
    """The CAM stage's checks, and the cell stage's own; ValueError naming the keys."""
    if cfg.loss.mode != "plain":
        raise ValueError(f"loss.mode={cfg.loss.mode}: the cell model trains with the plain classification "
                         "loss (a crop of one cell has no tiles to re-assemble)")
    check_config(cfg)
    if cfg.data.image_size < 16:
        raise ValueError(f"data.image_size={cfg.data.image_size}: crops must be at least 16 px")
    if not 0.0 <= cfg.cells.crops.margin <= 1.0:
        raise ValueError(f"cells.crops.margin={cfg.cells.crops.margin} must be in [0, 1]")
    if not 0.0 <= cfg.cells.pseudo.threshold <= 1.0:
        raise ValueError(f"cells.pseudo.threshold={cfg.cells.pseudo.threshold} must be in [0, 1]")
    if cfg.cells.pseudo.threshold > 0 and not cfg.cells.pseudo.cam_checkpoints:
        raise ValueError("cells.pseudo.threshold > 0 needs cells.pseudo.cam_checkpoints (the CAM models "
                         "whose evidence refines the image labels)")
    if not cfg.cells.pseudo.scales:
        raise ValueError("cells.pseudo.scales is empty")
    check_rounds(cfg)


def check_rounds(cfg: TrainCellConfig) -> None:
    pseudo = cfg.cells.pseudo
    if pseudo.rounds < 0 or pseudo.round_epochs < 0:
        raise ValueError(f"cells.pseudo.rounds={pseudo.rounds} and cells.pseudo.round_epochs={pseudo.round_epochs} "
                         "must be >= 0")
    if pseudo.rounds and pseudo.folds < 2:
        raise ValueError(f"cells.pseudo.folds={pseudo.folds}: out-of-fold rounds need at least 2 folds")
    if not 0.0 < pseudo.round_threshold <= 1.0:
        raise ValueError(f"cells.pseudo.round_threshold={pseudo.round_threshold} must be in (0, 1]")
