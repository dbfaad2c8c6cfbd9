"""Kaggle submission files: `ID,ImageWidth,ImageHeight,PredictionString`.

A prediction string is a space-separated list of `label confidence mask` triples; a cell with
several labels appears once per label.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from hpacam.classes import NUM_CLASSES
from hpacam.fileio import atomic_path
from hpacam.tables import TableKind, TableRowError, check_unique_ids, line_of, read_table

COLUMNS = ["ID", "ImageWidth", "ImageHeight", "PredictionString"]
SUBMISSION_TABLE = TableKind("submission file", tuple(COLUMNS), dtype={"ID": str, "PredictionString": str},
                             expected=f"; expected {COLUMNS}")
MAX_SIDE = 2 ** 31  # image sides beyond this are corrupt values, not images


@dataclass(frozen=True)
class CellPrediction:
    label: int
    confidence: float
    mask: str


def format_prediction_string(items: Iterable[CellPrediction]) -> str:
    return " ".join(f"{p.label} {p.confidence:.6g} {p.mask}" for p in items)


def parse_prediction_string(text: str, where: str = "prediction string") -> list[CellPrediction]:
    """Parse `label conf mask ...`; errors say where (file and row) and what is wrong."""
    if not isinstance(text, str) or not text.strip():
        return []
    parts = text.split()
    if len(parts) % 3:
        raise ValueError(f"{where}: {len(parts)} tokens, not a multiple of 3 (label conf mask)")
    out = []
    for i in range(0, len(parts), 3):
        label_s, conf_s, mask = parts[i : i + 3]
        try:
            label, conf = int(label_s), float(conf_s)
        except ValueError:
            raise ValueError(f"{where}: triple {i // 3} has label {label_s!r} and confidence {conf_s!r}; "
                             "expected an integer and a number") from None
        if not 0 <= label < NUM_CLASSES:
            raise ValueError(f"{where}: label {label} outside 0..{NUM_CLASSES - 1}")
        if not np.isfinite(conf):
            raise ValueError(f"{where}: confidence {conf_s} is not finite")
        out.append(CellPrediction(label, conf, mask))
    return out


def cells_prediction_string(masks: dict[int, str], probabilities: dict[int, Sequence[float]] | np.ndarray,
                            min_confidence: float = 0.0) -> str:
    """One image's prediction string: every cell gets every class whose confidence passes the cut-off.

    `masks` maps cell id -> mask string; `probabilities` maps cell id -> 19 confidences (or is an
    array indexed in the order of `masks`).
    """
    items = []
    for row, (cell, mask) in enumerate(masks.items()):
        probs = probabilities[row] if isinstance(probabilities, np.ndarray) else probabilities[cell]
        for label, conf in enumerate(probs):
            if not np.isfinite(conf):  # NaN would fail the cut-off below and vanish without a word
                raise ValueError(f"cell {cell}: confidence {conf} for class {label} is not finite")
            if conf >= min_confidence:
                items.append(CellPrediction(label, float(conf), mask))
    return format_prediction_string(items)


def make_submission_frame(rows: Iterable[tuple[str, int, int, str]]) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=COLUMNS)


def write_submission(frame: pd.DataFrame, path: str | os.PathLike) -> Path:
    """Write a submission CSV atomically (temp file + rename): never a partial file."""
    missing = [c for c in COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"submission frame lacks columns {missing}")
    if frame["ID"].duplicated().any():
        dupes = frame.loc[frame["ID"].duplicated(), "ID"].tolist()[:5]
        raise ValueError(f"submission lists IDs more than once: {dupes}")
    out = frame[COLUMNS].copy()
    out["PredictionString"] = out["PredictionString"].fillna("")
    with atomic_path(path) as tmp:
        out.to_csv(tmp, index=False)
    return Path(path)


def read_submission(path: str | os.PathLike) -> pd.DataFrame:
    """Read a submission (or truth, or sample submission) CSV and check its columns and sizes."""
    path = Path(path)
    frame = read_table(path, SUBMISSION_TABLE)
    for col in ("ImageWidth", "ImageHeight"):
        values = pd.to_numeric(frame[col], errors="coerce")
        # 2.5 must not become 2, nor 1e30 wrap around to a negative int64
        invalid = values.isna() | (values <= 0) | (values % 1 != 0) | (values >= MAX_SIDE)
        if invalid.any():
            bad = frame.loc[invalid, "ID"].tolist()[:5]
            raise TableRowError(f"{path}: {col} is not a positive integer below {MAX_SIDE} for IDs {bad} "
                                f"(first on line {line_of(int(np.flatnonzero(invalid)[0]))})")
        frame[col] = values.astype(int)
    check_unique_ids(frame["ID"], path, SUBMISSION_TABLE)
    return frame[COLUMNS]
