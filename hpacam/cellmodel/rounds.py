"""Out-of-fold pseudo-label rounds: the cell model refines its own weak labels, from image labels only.

A cell inherits every label of its image, though in a multi-label image many cells show only some
of them. In each round (`cells.pseudo.rounds`) the training images are split into
`cells.pseudo.folds` folds; a model trained on the other folds' cells (with the targets of the
round before) predicts each held-out cell, so no cell is judged by a model that learned its own
label. A cell's standing for a label is its predicted probability over the best of its image's
cells for that label (`hpacam.inference.standing_within_image`), and the label is lowered below
`cells.pseudo.round_threshold` as the CAM pseudo-labels are (`soft_targets`: it only lowers; a
label the image lacks is never given). The final model trains on the last round's targets.

Each fold model is a run folder of its own under `<run_dir>/rounds/round{r}/fold{k}` (config,
log, checkpoints, the held-out IDs), and each round's out-of-fold probabilities are kept as
`<run_dir>/rounds/round{r}/oof.npz`; `train.resume` continues a stopped round where it stopped.
"""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd
import torch.distributed as dist

from hpacam.cam.data import read_sources, split_folds
from hpacam.cam.train import Processes, run_training
from hpacam.cellmodel.config import TrainCellConfig
from hpacam.cellmodel.pseudo import soft_targets
from hpacam.classes import NUM_CLASSES
from hpacam.fileio import atomic_path, atomic_write_text
from hpacam.labels import make_folds
from hpacam.runs import prepare_run_dir, setup_logging

log = logging.getLogger(__name__)

Refine = Callable[..., np.ndarray]  # CellCrops -> (crops, 19) targets (hpacam.cellmodel.train)


def oof_standing(index: pd.DataFrame, probs: np.ndarray) -> np.ndarray:
    """(crops, 19): each cell's probability over the highest of its image's cells, per class."""
    from hpacam.inference import standing_within_image

    out = np.ones_like(probs, dtype=np.float64)
    for rows in index.groupby("ID", sort=False).indices.values():
        out[rows] = standing_within_image(probs[rows])
    return out


def refine_with(table: pd.DataFrame, threshold: float) -> Refine:
    """Targets lowered by the out-of-fold `table` (ID, cell, 19 probability columns)."""
    def refine(cells) -> np.ndarray:
        merged = cells.index.merge(table, on=["ID", "cell"], how="left", validate="one_to_one")
        probs = merged[[str(c) for c in range(NUM_CLASSES)]].to_numpy(dtype=np.float64)
        if np.isnan(probs).any():
            missing = merged.loc[np.isnan(probs).any(axis=1), "ID"].iloc[0]
            raise ValueError(f"out-of-fold predictions hold no row for cells of image {missing}: the round's "
                             "oof.npz belongs to other training images or crops; remove <run_dir>/rounds")
        return soft_targets(cells.targets, oof_standing(cells.index, probs), threshold)
    return refine


def fold_config(cfg: TrainCellConfig, round_index: int, fold: int) -> TrainCellConfig:
    """A fold model: the stage's recipe on the other folds' cells, its own run folder and seed."""
    pseudo = cfg.cells.pseudo
    epochs = pseudo.round_epochs or cfg.train.epochs
    train = replace(cfg.train, epochs=epochs, seed=cfg.train.seed + 1000 * (round_index + 1) + fold,
                    resume="auto" if cfg.train.resume else None, stop_after_steps=0)
    crops = replace(cfg.cells.crops, cache_dir=cfg.cells.crops.cache_dir or Path(cfg.run_dir) / "crops")  # shared
    cells = replace(cfg.cells, crops=crops, pseudo=replace(pseudo, rounds=0))
    return replace(cfg, run_dir=round_dir(cfg, round_index) / f"fold{fold}", train=train, cells=cells)


def round_dir(cfg: TrainCellConfig, round_index: int) -> Path:
    return Path(cfg.run_dir) / "rounds" / f"round{round_index}"


def predict_held_out(cfg: TrainCellConfig, checkpoint: Path, cells, rows: np.ndarray, device) -> pd.DataFrame:
    """(ID, cell, 19 probabilities) of the held-out crops, with the flips inference averages."""
    from hpacam.cellmodel.predict import load_cell_models, predict_crops

    member = load_cell_models([checkpoint], device)[0]
    probs = np.zeros((len(rows), NUM_CLASSES))
    for start in range(0, len(rows), 1024):
        batch = rows[start:start + 1024]
        probs[start:start + len(batch)] = predict_crops(member, np.stack([cells.crops[int(i)] for i in batch]),
                                                        device)
    frame = cells.index.iloc[rows].reset_index(drop=True)
    return pd.concat([frame, pd.DataFrame(probs, columns=[str(c) for c in range(NUM_CLASSES)])], axis=1)


def read_oof(path: Path) -> pd.DataFrame:
    with np.load(path, allow_pickle=False) as data:
        frame = pd.DataFrame({"ID": data["ID"].astype(str), "cell": data["cell"]})
        probs = data["probs"]
    return pd.concat([frame, pd.DataFrame(probs, columns=[str(c) for c in range(NUM_CLASSES)])], axis=1)


def write_oof(path: Path, table: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, ID=table["ID"].to_numpy(dtype=str), cell=table["cell"].to_numpy(),
                     probs=table[[str(c) for c in range(NUM_CLASSES)]].to_numpy())


def one_round(cfg: TrainCellConfig, procs: Processes, round_index: int, refine: Optional[Refine]) -> pd.DataFrame:
    """Train the round's fold models and gather their out-of-fold probabilities (rank 0 predicts)."""
    from hpacam.cellmodel.train import cell_crops_of, cell_training_data
    from hpacam.segmentation import Segmenter

    pseudo = cfg.cells.pseudo
    train_images, _ = split_folds(read_sources(cfg.data), cfg.data)
    folds = make_folds(train_images.targets, pseudo.folds, cfg.data.fold_seed + 1 + round_index)
    parts, cells = [], None
    for fold in range(pseudo.folds):
        sub = fold_config(cfg, round_index, fold)
        keep = {image_id for image_id, f in zip(train_images.ids, folds) if f != fold}
        held_out = sorted(set(train_images.ids) - keep)
        result = run_training(sub, procs, lambda c, p: cell_training_data(c, p, refine=refine, keep_ids=keep))
        if procs.is_main:
            atomic_write_text(Path(sub.run_dir) / "held_out.json", json.dumps(held_out, indent=0))
            if cells is None:  # every fold predicts from the same crops: read them once per round
                segmenter = Segmenter(cfg.cells.segmentation, read_options=cfg.data.read)
                cells = cell_crops_of(cfg, train_images, segmenter, procs)
            rows = np.flatnonzero(cells.index["ID"].isin(set(held_out)).to_numpy())
            parts.append(predict_held_out(cfg, Path(result.last_checkpoint), cells, rows, procs.device))
        setup_logging(Path(cfg.run_dir) / "log.txt")
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def oof_rounds(cfg: TrainCellConfig, procs: Processes) -> Optional[Refine]:
    """Run `cells.pseudo.rounds` rounds (reusing finished ones when resuming); the last one's refinement."""
    pseudo = cfg.cells.pseudo
    refine = None
    if pseudo.rounds == 0:
        return None
    if procs.is_main:
        prepare_run_dir(cfg.run_dir, cfg)
    for round_index in range(pseudo.rounds):
        path = round_dir(cfg, round_index) / "oof.npz"
        if not (cfg.train.resume and path.is_file()):
            table = one_round(cfg, procs, round_index, refine)
            if procs.is_main:
                write_oof(path, table)
        if procs.distributed:
            dist.barrier()  # the others read what rank 0 wrote
        table = read_oof(path)
        refine = refine_with(table, pseudo.round_threshold)
        log.info("round %d: out-of-fold probabilities of %d cells (%s); labels below standing %.2f lowered",
                 round_index, len(table), path, pseudo.round_threshold)
    return refine
