"""Reference predictors: the yardsticks later stages are compared against.

- `oracle`: the truth itself (confidence 1), which must score 1.0 - a check of the metric and of
  the whole mask pipeline rather than a model.
- `broadcast`: every cell receives its image's class probabilities, as the competition's public
  baseline did. Fed with the true image labels it shows how far image-level knowledge alone goes;
  its gap to 1.0 is what single-cell localisation has to earn.
- `cell-oracle`: the models' image probabilities on the truth cells, with every cell ranked
  perfectly inside its image (a class the image carries goes only to the cells that carry it).
  No cell stage that only reorders the cells of an image can beat it: it measures how much the
  image-level probabilities leave for single-cell localisation to win.

Inputs come from a truth file (masks and sizes) or a folder of cell label images
(`{ID}.png`, 16-bit, 0 = background) plus a sample submission for the sizes, and from a
Kaggle labels CSV (`ID,Label`, labels joined by `|`) or an image-probability CSV
(`ID` and one column per class named `0`..`18`).

Sizes are `(width, height)` throughout, in the order of the submission's columns.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from hpacam.classes import NUM_CLASSES
from hpacam.images import id_file, read_label_png
from hpacam.masks import encode_label_image
from hpacam.submission import (
    CellPrediction,
    format_prediction_string,
    make_submission_frame,
    parse_prediction_string,
    read_submission,
    write_submission,
)
from hpacam.tables import TableKind, TableRowError, check_unique_ids, line_of, read_table

Size = tuple[int, int]  # (width, height)


# ----------------------------------------------------------------------------- predictors

def oracle(truth: pd.DataFrame, name: str = "truth") -> pd.DataFrame:
    """The truth masks with their truth labels at confidence 1 (scores exactly 1.0).

    `name` (the file) prefixes parse errors.
    """
    rows = []
    for image_id, width, height, text in truth[["ID", "ImageWidth", "ImageHeight", "PredictionString"]].itertuples(
            index=False):
        items = parse_prediction_string(text, f"{name}: ID {image_id}")
        certain = [CellPrediction(item.label, 1.0, item.mask) for item in items]
        rows.append((image_id, int(width), int(height), format_prediction_string(certain)))
    return make_submission_frame(rows)


def broadcast_prediction_string(masks: Mapping[int, str], probabilities: np.ndarray) -> str:
    """Every cell gets every class with a positive image probability (zero-confidence triples are dropped)."""
    positive = [(label, float(probabilities[label])) for label in range(NUM_CLASSES) if probabilities[label] > 0]
    return format_prediction_string(
        CellPrediction(label, confidence, mask) for mask in masks.values() for label, confidence in positive)


def broadcast(masks_by_id: Mapping[str, Mapping[int, str]], image_probs: Mapping[str, np.ndarray],
              sizes: Mapping[str, Size]) -> pd.DataFrame:
    """Submission frame where each cell carries its image's 19 probabilities.

    Rows follow the order of `masks_by_id`; every ID there needs probabilities and a size.
    """
    require_ids(masks_by_id, image_probs, "image probabilities")
    require_ids(masks_by_id, sizes, "image sizes")
    rows = []
    for image_id, masks in masks_by_id.items():
        probabilities = np.asarray(image_probs[image_id], dtype=np.float64)
        if probabilities.shape != (NUM_CLASSES,):
            raise ValueError(f"ID {image_id}: expected {NUM_CLASSES} probabilities, got shape {probabilities.shape}")
        width, height = sizes[image_id]
        rows.append((image_id, int(width), int(height), broadcast_prediction_string(masks, probabilities)))
    return make_submission_frame(rows)


def cell_oracle(truth: pd.DataFrame, image_probs: Mapping[str, np.ndarray], name: str = "truth") -> pd.DataFrame:
    """Truth cells with their image's probabilities, dropped for the image's classes a cell lacks."""
    require_ids(dict.fromkeys(truth["ID"]), image_probs, "image probabilities")
    rows = []
    for image_id, width, height, text in truth[["ID", "ImageWidth", "ImageHeight", "PredictionString"]].itertuples(
            index=False):
        cell_labels: dict[str, set[int]] = {}
        for item in parse_prediction_string(text, f"{name}: ID {image_id}"):
            cell_labels.setdefault(item.mask, set()).add(item.label)
        image_labels = set().union(*cell_labels.values())
        probabilities = np.asarray(image_probs[image_id], dtype=np.float64)
        items = [CellPrediction(label, float(probabilities[label]), mask) for mask, labels in cell_labels.items()
                 for label in range(NUM_CLASSES)
                 if probabilities[label] > 0 and (label in labels or label not in image_labels)]
        rows.append((image_id, int(width), int(height), format_prediction_string(items)))
    return make_submission_frame(rows)


def require_ids(wanted: Mapping[str, object], available: Mapping[str, object], what: str) -> None:
    missing = [image_id for image_id in wanted if image_id not in available]
    if missing:
        raise ValueError(f"{len(missing)} IDs have no {what}: {missing[:5]}")


# ----------------------------------------------------------------------------- cell masks

def masks_from_truth(truth: pd.DataFrame, name: str = "truth") -> tuple[dict[str, dict[int, str]], dict[str, Size]]:
    """Distinct truth masks per image (cells numbered 1.. in order of appearance) and image sizes.

    A cell with several labels appears once per label in the truth; here it is one cell.
    """
    masks_by_id, sizes = {}, {}
    for image_id, width, height, text in truth[["ID", "ImageWidth", "ImageHeight", "PredictionString"]].itertuples(
            index=False):
        distinct = dict.fromkeys(item.mask for item in parse_prediction_string(text, f"{name}: ID {image_id}"))
        masks_by_id[image_id] = {cell: mask for cell, mask in enumerate(distinct, start=1)}
        sizes[image_id] = (int(width), int(height))
    return masks_by_id, sizes


def masks_from_cell_images(cells_dir: str | os.PathLike, sizes: Mapping[str, Size]) -> dict[str, dict[int, str]]:
    """Encode `cells_dir/{ID}.png` for every ID of `sizes`, checking each image has that size."""
    masks_by_id = {}
    for image_id, (width, height) in sizes.items():
        path = id_file(cells_dir, image_id)
        labels = read_label_png(path)
        if labels.shape != (height, width):
            raise ValueError(f"{path}: cell image is {labels.shape[1]}x{labels.shape[0]} (width x height), "
                             f"but the image is {width}x{height}")
        masks_by_id[image_id] = encode_label_image(labels)
    return masks_by_id


def sizes_from_frame(frame: pd.DataFrame) -> dict[str, Size]:
    """`{ID: (width, height)}` from a submission-format frame (e.g. the sample submission)."""
    return {image_id: (int(w), int(h)) for image_id, w, h in frame[["ID", "ImageWidth", "ImageHeight"]].itertuples(
        index=False)}


# ----------------------------------------------------------------------------- image probabilities

def parse_label_field(text: str, where: str) -> np.ndarray:
    """`'8|5|0'` -> 19 probabilities, 1 for the listed labels."""
    probabilities = np.zeros(NUM_CLASSES)
    for token in str(text).split("|"):
        try:
            label = int(token)
        except ValueError:
            raise TableRowError(f"{where}: label {token!r} is not an integer") from None
        if not 0 <= label < NUM_CLASSES:
            raise TableRowError(f"{where}: label {label} outside 0..{NUM_CLASSES - 1}")
        probabilities[label] = 1.0
    return probabilities


LABELS_TABLE = TableKind("label file", ("ID", "Label"), dtype={"ID": str, "Label": str})
PROBABILITY_TABLE = TableKind("image probability file", ("ID", *(str(label) for label in range(NUM_CLASSES))),
                              dtype={"ID": str})


def image_probs_from_labels_csv(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Kaggle labels (`ID,Label`, `|`-joined) -> probability 1 for present labels, 0 otherwise."""
    frame = read_table(path, LABELS_TABLE)
    check_unique_ids(frame["ID"], path, LABELS_TABLE)
    return {image_id: parse_label_field(text, f"{path}: ID {image_id} (line {line_of(row)})")
            for row, (image_id, text) in enumerate(zip(frame["ID"], frame["Label"]))}


def image_probs_from_probability_csv(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Image probabilities (`ID` and columns `0`..`18`) -> {ID: array(19)}; values must be finite."""
    frame = read_table(path, PROBABILITY_TABLE)
    check_unique_ids(frame["ID"], path, PROBABILITY_TABLE)
    columns = list(PROBABILITY_TABLE.columns[1:])
    values = frame[columns].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(values).all(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise TableRowError(f"{path}: ID {frame['ID'].iat[row]} (line {line_of(row)}) has a non-numeric probability")
    return dict(zip(frame["ID"], values))


# ----------------------------------------------------------------------------- CLI

def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m hpacam.baselines", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    oracle_cmd = commands.add_parser("oracle", help="truth masks and labels at confidence 1")
    oracle_cmd.add_argument("--truth", required=True, type=Path)
    oracle_cmd.add_argument("--out", required=True, type=Path)
    broadcast_cmd = commands.add_parser("broadcast", help="image-level probabilities on every cell")
    cells = broadcast_cmd.add_mutually_exclusive_group(required=True)
    cells.add_argument("--truth", type=Path, help="take cell masks and sizes from this truth CSV")
    cells.add_argument("--cells", type=Path, help="folder of cell label images {ID}.png (needs --sample)")
    broadcast_cmd.add_argument("--sample", type=Path, help="sample submission: the IDs and sizes for --cells")
    probs = broadcast_cmd.add_mutually_exclusive_group(required=True)
    probs.add_argument("--labels", type=Path, help="Kaggle labels CSV (ID,Label with |-joined labels)")
    probs.add_argument("--probs", type=Path, help="image probability CSV (ID and columns 0..18)")
    broadcast_cmd.add_argument("--out", required=True, type=Path)
    ceiling_cmd = commands.add_parser("cell-oracle", help="image probabilities, cells ranked perfectly within images")
    ceiling_cmd.add_argument("--truth", required=True, type=Path)
    ceiling_cmd.add_argument("--probs", required=True, type=Path, help="image probability CSV (ID and columns 0..18)")
    ceiling_cmd.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    if args.command == "broadcast" and args.cells is not None and args.sample is None:
        parser.error("--cells needs --sample for the image IDs and sizes")
    return args


def run_broadcast(args: argparse.Namespace) -> pd.DataFrame:
    if args.truth is not None:
        masks_by_id, sizes = masks_from_truth(read_submission(args.truth), str(args.truth))
    else:
        sizes = sizes_from_frame(read_submission(args.sample))
        masks_by_id = masks_from_cell_images(args.cells, sizes)
    if args.labels is not None:
        image_probs = image_probs_from_labels_csv(args.labels)
    else:
        image_probs = image_probs_from_probability_csv(args.probs)
    require_ids(masks_by_id, image_probs, f"row in {args.labels or args.probs}")
    return broadcast(masks_by_id, image_probs, sizes)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: write the chosen baseline's submission; errors are one line on stderr and exit status 1."""
    args = parse_args(argv)
    try:
        if args.command == "oracle":
            frame = oracle(read_submission(args.truth), str(args.truth))
        elif args.command == "cell-oracle":
            frame = cell_oracle(read_submission(args.truth), image_probs_from_probability_csv(args.probs), str(args.truth))
        else:
            frame = run_broadcast(args)
        write_submission(frame, args.out)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {len(frame)} images to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
