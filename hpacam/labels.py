"""Image-level label tables and cross-validation folds.

Two formats are read: Kaggle's `train.csv` (`ID,Label`, labels joined by `|`) and the public-HPA
CSV (`,ID,Cellline,Label,Labels_list`). Both become one frame with `ID`, `Label` (the text) and
`labels` (a sorted tuple of ints), so every stage sees the same thing whatever the source.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from hpacam.classes import NUM_CLASSES
from hpacam.tables import TableError, TableKind, TableRowError, check_unique_ids, line_of, read_table

# Every fault of a label file is a TableError (missing file, encoding, columns, rows); the name is
# the one callers have always caught.
LabelFileError = TableError
LABEL_TABLE = TableKind("label file", ("ID", "Label"), dtype=str, plural="(s)",
                        expected="; expected Kaggle `ID,Label` or public-HPA `,ID,Cellline,Label,Labels_list`")


def parse_labels(text: object, where: str) -> tuple[int, ...]:
    """`'8|5|0'` -> (0, 5, 8); errors (TableRowError) say where (file and row)."""
    if not isinstance(text, str) or not text.strip():
        raise TableRowError(f"{where}: empty label")
    labels = []
    for token in text.split("|"):
        token = token.strip()
        if not (token.isascii() and token.lstrip("-").isdigit()):  # "²".isdigit() is True, int("²") fails
            raise TableRowError(f"{where}: label {token!r} is not an integer class")
        label = int(token)
        if not 0 <= label < NUM_CLASSES:
            raise TableRowError(f"{where}: unknown class {label} (classes are 0..{NUM_CLASSES - 1})")
        labels.append(label)
    if len(set(labels)) != len(labels):
        raise TableRowError(f"{where}: label {text!r} repeats a class")
    return tuple(sorted(labels))


def format_labels(labels) -> str:
    return "|".join(str(int(x)) for x in labels)


def read_labels(path: str | os.PathLike) -> pd.DataFrame:
    """Read a Kaggle or public-HPA label CSV -> frame with ID, Label, labels (+ Cellline if given)."""
    path = Path(path)
    raw = read_table(path, LABEL_TABLE)
    ids = raw["ID"].str.strip()
    if (ids == "").any():
        raise TableRowError(f"{path}: row {line_of(int(np.argmax(ids == '')))} has an empty ID")
    check_unique_ids(ids, path, LABEL_TABLE)
    frame = pd.DataFrame({"ID": ids})
    frame["labels"] = [parse_labels(text, f"{path}, line {line_of(i)} (ID {id_})")
                       for i, (id_, text) in enumerate(zip(ids, raw["Label"]))]
    frame["Label"] = frame["labels"].map(format_labels)
    if "Cellline" in raw.columns:
        frame["Cellline"] = raw["Cellline"]
    return frame


def multi_hot(labels: pd.Series | list) -> np.ndarray:
    """Sequence of label tuples -> (N, 19) float32 multi-hot targets."""
    targets = np.zeros((len(labels), NUM_CLASSES), dtype=np.float32)
    for row, labs in enumerate(labels):
        targets[row, list(labs)] = 1.0
    return targets


def make_folds(targets: np.ndarray, n_splits: int, seed: int) -> np.ndarray:
    """Seeded multilabel-stratified K folds: fold index (0..n_splits-1) per row.

    Stratifying on all 19 labels at once keeps rare classes (mitotic spindle, aggresome) in every
    fold, which plain K-fold does not.
    """
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

    if n_splits < 2:
        raise ValueError(f"n_splits must be at least 2, got {n_splits}")
    if len(targets) < n_splits:
        raise ValueError(f"{len(targets)} images cannot be split into {n_splits} folds")
    folds = np.full(len(targets), -1, dtype=np.int64)
    splitter = MultilabelStratifiedKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    for fold, (_, valid) in enumerate(splitter.split(np.zeros(len(targets)), targets)):
        folds[valid] = fold
    return folds


def combine_label_tables(*frames: pd.DataFrame) -> pd.DataFrame:
    """Concatenate label tables (e.g. Kaggle + public HPA); an ID in two tables is an error."""
    combined = pd.concat(frames, ignore_index=True)
    dupes = combined.loc[combined["ID"].duplicated(), "ID"]
    if len(dupes):
        raise LabelFileError(f"IDs present in more than one label table: {dupes.unique()[:5].tolist()}")
    return combined
