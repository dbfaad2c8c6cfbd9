"""Local copy of the competition metric: mean average precision at mask IoU >= 0.6.

The HPA Single Cell Classification challenge scored submissions with the Open Images
instance-segmentation protocol. For every class that has ground truth:

1. All predictions of that class over the whole set are ranked by confidence, highest first.
2. Within each image, predictions are matched in that order. A prediction's target is the truth
   cell of its class with the highest mask IoU (as in Open Images' `per_image_evaluation`). If
   that IoU is >= the threshold and the target is still unmatched, the prediction is a true
   positive and the target becomes matched; otherwise (too little overlap, or a duplicate on an
   already matched cell) it is a false positive. Because the target does not depend on which
   cells are already matched, and truth cells from a label image are disjoint (a mask can have
   IoU >= 0.5 with at most one of several disjoint masks), this is the same as matching to the
   best-IoU *unmatched* truth cell.
3. AP is all-point interpolated: precision made non-increasing from the right, summed over the
   recall steps. Classes without truth are left out of the mean; a class with truth but no
   predictions scores 0.

Ties: precision and recall are evaluated only at the end of each group of equal confidence, so
the score never depends on row order. This differs from a plain argsort (what the Open Images
code does) only when confidences tie exactly - which happens for the `broadcast` baseline, where
every cell of an image carries the same confidences, and where a plain argsort would reward or
punish whatever order the cells happen to be written in.

Speed: IoU is computed by pycocotools directly on the run-length encodings (no pixel decoding),
each distinct mask string of an image is decoded once, and matching is vectorised per image and
class. Mask strings are still checked: their runs must cover exactly the image declared in the
row, so a mask encoded at the wrong size is an error rather than a silently wrong IoU.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from pycocotools import mask as coco_mask

from hpacam.classes import CLASS_NAMES, NUM_CLASSES
from hpacam.fileio import atomic_write_text
from hpacam.masks import mask_to_rle
from hpacam.submission import parse_prediction_string, read_submission

DEFAULT_IOU_THRESHOLD = 0.6


@dataclass(frozen=True)
class ClassScore:
    """One class's line of the report; `average_precision` is NaN when the class has no truth."""

    label: int
    name: str
    n_truth: int
    n_predictions: int
    average_precision: float


@dataclass(frozen=True)
class Evaluation:
    """The metric and everything needed to explain it."""

    classes: tuple[ClassScore, ...]
    mean_average_precision: float
    n_images: int
    missing_ids: tuple[str, ...]
    iou_threshold: float

    def to_dict(self) -> dict:
        """JSON-ready form; NaN APs (classes without truth) become null."""
        return {
            "mAP": self.mean_average_precision,
            "iou_threshold": self.iou_threshold,
            "n_images": self.n_images,
            "missing_ids": list(self.missing_ids),
            "classes": [
                {"label": c.label, "name": c.name, "n_truth": c.n_truth, "n_predictions": c.n_predictions,
                 "ap": None if math.isnan(c.average_precision) else c.average_precision}
                for c in self.classes
            ],
        }


@dataclass(frozen=True)
class ImageCells:
    """One image's triples, with each distinct mask string decoded to an RLE once.

    `mask_index[i]` is the position in `rles` of triple i's mask.
    """

    rles: list[dict]
    labels: np.ndarray
    scores: np.ndarray
    mask_index: np.ndarray


# ----------------------------------------------------------------------------- mask checking

def segment_starts(owner: np.ndarray) -> np.ndarray:
    """Indices where a sorted owner array changes value (always including 0 when non-empty)."""
    return np.flatnonzero(np.concatenate([[True], owner[1:] != owner[:-1]]))


def position_in_segment(n: int, starts: np.ndarray) -> np.ndarray:
    """0, 1, 2, ... restarting at each of `starts` (sorted, first is 0), for n elements."""
    return np.arange(n) - np.repeat(starts, np.diff(np.append(starts, n)))


def decode_run_values(chars: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Variable-length numbers of pycocotools' RLE strings -> (values, index of the first char of each).

    A number is a little-endian sequence of 6-bit characters (offset 48 already removed): 5 value
    bits and a continuation bit (0x20); the last character's bit 0x10 is the sign.
    """
    if chars.min() < 0 or chars.max() > 63:
        raise ValueError("RLE counts hold characters outside the pycocotools alphabet")
    is_last = (chars & 0x20) == 0
    if not is_last[np.cumsum(lengths)[lengths > 0] - 1].all():
        raise ValueError("RLE counts end in the middle of a run")
    starts = np.flatnonzero(np.concatenate([[True], is_last[:-1]]))
    position = position_in_segment(chars.size, starts)
    if position.max() > 11:  # 60 bits: beyond any pixel count, and the int64 shift stays safe
        raise ValueError("RLE counts hold a run too long to be a pixel count")
    values = np.add.reduceat((chars & 0x1F) << (5 * position), starts)
    last = np.flatnonzero(is_last)
    negative = (chars[last] & 0x10) != 0
    values[negative] -= np.int64(1) << (5 * (position[last][negative] + 1))
    return values, starts


def undo_delta_coding(values: np.ndarray, owner: np.ndarray) -> np.ndarray:
    """From a mask's fourth run on, pycocotools stores the difference to the run two places before.

    So odd runs are a running sum from run 1, even runs a running sum from run 2; run 0 stands alone.
    """
    run_index = position_in_segment(len(values), segment_starts(owner))
    runs = values.copy()
    for parity in (1, 0):
        chained = np.flatnonzero((run_index >= 1) & (run_index % 2 == parity))
        if chained.size:
            sums = np.cumsum(values[chained])
            starts = segment_starts(owner[chained])
            before = np.concatenate([[0], sums[starts[1:] - 1]])
            runs[chained] = sums - np.repeat(before, np.diff(np.append(starts, chained.size)))
    return runs


def rle_run_lengths(counts: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    """Decode pycocotools' compressed RLE strings (its `rleFrString`) into run lengths, vectorised.

    Returns (runs, owner): all masks' run lengths concatenated and the mask index of each run.
    We need the runs only to check that they are non-negative and tile the image - pycocotools
    does not check this, and would compute IoUs from a mask of the wrong size without complaint.
    Decoding all masks of an image in one pass keeps numpy's per-call overhead per image, not per mask.
    """
    lengths = np.fromiter((len(c) for c in counts), dtype=np.int64, count=len(counts))
    chars = np.frombuffer(b"".join(counts), dtype=np.uint8).astype(np.int64) - 48
    if chars.size == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)
    values, starts = decode_run_values(chars, lengths)
    owner = np.repeat(np.arange(len(counts)), lengths)[starts]
    return undo_delta_coding(values, owner), owner


def first_bad_rle(rles: Sequence[dict], height: int, width: int) -> tuple[int, str] | None:
    """(position, problem) of the first RLE that does not tile height x width pixels, else None."""
    try:
        runs, owner = rle_run_lengths([rle["counts"] for rle in rles])
    except ValueError:  # a broken string: find which one, decoding them one by one
        for position, rle in enumerate(rles):
            try:
                rle_run_lengths([rle["counts"]])
            except ValueError as exc:
                return position, str(exc)
        raise
    covered = np.bincount(owner, weights=runs, minlength=len(rles))
    has_negative = np.bincount(owner, weights=runs < 0, minlength=len(rles)) > 0
    bad = np.flatnonzero((covered != height * width) | has_negative)
    if not bad.size:
        return None
    first = int(bad[0])
    problem = "has negative run lengths" if has_negative[first] else f"covers {int(covered[first])} pixels"
    return first, f"{problem}, not the image's {height}x{width} = {height * width}"


# ----------------------------------------------------------------------------- parsing

def distinct_mask_rles(masks: Sequence[str], height: int, width: int, where: str) -> tuple[list[dict], np.ndarray]:
    """Each distinct mask string -> checked RLE, once; returns (rles, index into rles per triple)."""
    index_of_mask: dict[str, int] = {}
    mask_index = np.fromiter((index_of_mask.setdefault(mask, len(index_of_mask)) for mask in masks),
                             dtype=np.int64, count=len(masks))
    distinct = list(index_of_mask)

    def fail(position: int, problem: str) -> ValueError:
        triple = int(np.argmax(mask_index == position))
        return ValueError(f"{where}: triple {triple}: mask {distinct[position][:40]!r} {problem}")

    rles = []
    for mask in distinct:
        try:
            rles.append(mask_to_rle(mask, height, width))
        except ValueError as exc:
            raise fail(len(rles), f"is not base64 zlib data ({exc.__cause__ or exc})") from None
    bad = first_bad_rle(rles, height, width)
    if bad is not None:
        raise fail(*bad)
    return rles, mask_index


def parse_image(text: str, height: int, width: int, where: str, dedupe: bool = False) -> ImageCells:
    """Parse one row's prediction string; errors start with `where` (file and ID).

    With `dedupe` (used for truth), a repeated (label, mask) triple counts once: a cell cannot
    be two truth cells of the same class.
    """
    items = parse_prediction_string(text, where)
    rles, mask_index = distinct_mask_rles([item.mask for item in items], height, width, where)
    labels = np.fromiter((item.label for item in items), dtype=np.int64, count=len(items))
    scores = np.fromiter((item.confidence for item in items), dtype=np.float64, count=len(items))
    if dedupe and len(items):
        _, keep = np.unique(np.stack([labels, mask_index], axis=1), axis=0, return_index=True)
        keep.sort()
        labels, scores, mask_index = labels[keep], scores[keep], mask_index[keep]
    return ImageCells(rles, labels, scores, mask_index)


def check_prediction_strings(frame: pd.DataFrame, path_name: str) -> None:
    """Every row's prediction string parses and its masks tile the row's own image size.

    The checks scoring makes, for a file that is not scored here (a shard before merging).
    """
    for row in range(len(frame)):
        parse_image(frame["PredictionString"].iat[row], int(frame["ImageHeight"].iat[row]),
                    int(frame["ImageWidth"].iat[row]), row_location(path_name, frame, row))


def row_location(path_name: str, frame: pd.DataFrame, row: int) -> str:
    """'file: ID x (line n)' - line numbers count the header as line 1."""
    return f"{path_name}: ID {frame['ID'].iat[row]} (line {row + 2})"


# ----------------------------------------------------------------------------- the metric

def greedy_true_positives(iou: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Open Images matching of one image's predictions of one class against that class's truth.

    `iou` is (n_predictions, n_truth). Each prediction targets its best-IoU truth cell; in
    descending confidence, the first prediction reaching the threshold on a target is the true
    positive, later ones are duplicates. Ties in confidence may change *which* of the tied
    predictions is the true positive, never how many there are in the tie group.
    """
    true_positive = np.zeros(len(scores), dtype=bool)
    if iou.shape[1] == 0 or len(scores) == 0:
        return true_positive
    target = iou.argmax(axis=1)
    hits = iou[np.arange(len(scores)), target] >= iou_threshold
    order = np.argsort(-scores, kind="stable")
    ordered_hits = order[hits[order]]
    _, first = np.unique(target[ordered_hits], return_index=True)
    true_positive[ordered_hits[first]] = True
    return true_positive


def average_precision(scores: np.ndarray, true_positive: np.ndarray, n_truth: int) -> float:
    """All-point interpolated AP, with precision/recall taken at the end of each tie group.

    Recall steps are computed from integer true-positive counts, so a perfect ranking scores
    exactly 1.0 rather than 0.9999999.
    """
    if n_truth == 0:
        return float("nan")
    if len(scores) == 0:
        return 0.0
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    ranked_scores = np.asarray(scores, dtype=np.float64)[order]
    cumulative_tp = np.cumsum(np.asarray(true_positive, dtype=np.int64)[order])
    group_end = np.append(ranked_scores[1:] != ranked_scores[:-1], True)
    tp_at_end = cumulative_tp[group_end]
    n_at_end = np.flatnonzero(group_end) + 1
    precision = tp_at_end / n_at_end
    precision = np.maximum.accumulate(precision[::-1])[::-1]
    new_true_positives = np.diff(tp_at_end, prepend=0)
    return float(np.sum(new_true_positives * precision) / n_truth)


def image_iou(pred: ImageCells, truth: ImageCells) -> np.ndarray:
    """IoU of every distinct predicted mask with every distinct truth mask, on the RLEs."""
    if not pred.rles or not truth.rles:
        return np.zeros((len(pred.rles), len(truth.rles)))
    iou = coco_mask.iou(pred.rles, truth.rles, [0] * len(truth.rles))
    return np.asarray(iou, dtype=np.float64).reshape(len(pred.rles), len(truth.rles))


class ClassAccumulator:
    """Per-class scores and true-positive flags collected over all images."""

    def __init__(self) -> None:
        self.scores: list[list[np.ndarray]] = [[] for _ in range(NUM_CLASSES)]
        self.true_positives: list[list[np.ndarray]] = [[] for _ in range(NUM_CLASSES)]
        self.n_truth = np.zeros(NUM_CLASSES, dtype=np.int64)

    def add_image(self, pred: ImageCells | None, truth: ImageCells, iou_threshold: float) -> None:
        self.n_truth += np.bincount(truth.labels, minlength=NUM_CLASSES)
        if pred is None or len(pred.labels) == 0:
            return
        iou = image_iou(pred, truth)
        for label in np.unique(pred.labels):
            chosen = pred.labels == label
            truth_masks = truth.mask_index[truth.labels == label]
            class_iou = iou[pred.mask_index[chosen]][:, truth_masks]
            tp = greedy_true_positives(class_iou, pred.scores[chosen], iou_threshold)
            self.scores[label].append(pred.scores[chosen])
            self.true_positives[label].append(tp)

    def class_scores(self) -> tuple[ClassScore, ...]:
        scores = []
        for label in range(NUM_CLASSES):
            s = np.concatenate(self.scores[label]) if self.scores[label] else np.zeros(0)
            tp = np.concatenate(self.true_positives[label]) if self.true_positives[label] else np.zeros(0, bool)
            ap = average_precision(s, tp, int(self.n_truth[label]))
            scores.append(ClassScore(label, CLASS_NAMES[label], int(self.n_truth[label]), len(s), ap))
        return tuple(scores)


def check_ids_and_sizes(truth: pd.DataFrame, pred: pd.DataFrame, truth_name: str,
                        pred_name: str) -> tuple[str, ...]:
    """Fail on predicted IDs unknown to truth or on size disagreements; return truth IDs not predicted."""
    unknown = pred.loc[~pred["ID"].isin(truth["ID"]), "ID"].tolist()
    if unknown:
        raise ValueError(f"{pred_name}: {len(unknown)} IDs are not in the truth {truth_name}: {unknown[:5]}")
    merged = truth.merge(pred, on="ID", suffixes=("_truth", "_pred"))
    disagree = merged[(merged["ImageWidth_truth"] != merged["ImageWidth_pred"])
                      | (merged["ImageHeight_truth"] != merged["ImageHeight_pred"])]
    if len(disagree):
        row = disagree.iloc[0]
        raise ValueError(f"{pred_name}: ID {row['ID']} is {row['ImageWidth_pred']}x{row['ImageHeight_pred']} "
                         f"(width x height) but {row['ImageWidth_truth']}x{row['ImageHeight_truth']} in "
                         f"{truth_name} ({len(disagree)} IDs disagree)")
    return tuple(truth.loc[~truth["ID"].isin(pred["ID"]), "ID"])


def evaluate_frames(truth: pd.DataFrame, pred: pd.DataFrame, iou_threshold: float = DEFAULT_IOU_THRESHOLD,
                    truth_name: str = "truth", pred_name: str = "prediction") -> Evaluation:
    """Score a submission frame against a truth frame (both as `read_submission` returns them).

    Truth IDs without a prediction row are scored as all-unmatched and reported in a warning and
    in `missing_ids`. The names are used in error messages (pass the file paths).
    """
    if not 0 < iou_threshold <= 1:
        raise ValueError(f"IoU threshold must be in (0, 1], got {iou_threshold}")
    missing = check_ids_and_sizes(truth, pred, truth_name, pred_name)
    if missing:
        warnings.warn(f"{pred_name}: {len(missing)} of {len(truth)} truth IDs have no prediction row "
                      f"(their cells count as missed): {list(missing[:5])}", stacklevel=2)
    pred_row = {image_id: row for row, image_id in enumerate(pred["ID"])}
    accumulator = ClassAccumulator()
    for row in range(len(truth)):
        height, width = int(truth["ImageHeight"].iat[row]), int(truth["ImageWidth"].iat[row])
        truth_cells = parse_image(truth["PredictionString"].iat[row], height, width,
                                  row_location(truth_name, truth, row), dedupe=True)
        p = pred_row.get(truth["ID"].iat[row])
        pred_cells = None if p is None else parse_image(pred["PredictionString"].iat[p], height, width,
                                                        row_location(pred_name, pred, p))
        accumulator.add_image(pred_cells, truth_cells, iou_threshold)
    classes = accumulator.class_scores()
    scored = [c.average_precision for c in classes if c.n_truth > 0]
    if not scored:
        raise ValueError(f"{truth_name}: no truth cells at all, so mAP is undefined")
    return Evaluation(classes, float(np.mean(scored)), len(truth), missing, iou_threshold)


def evaluate_files(truth_path: str | os.PathLike, pred_path: str | os.PathLike,
                   iou_threshold: float = DEFAULT_IOU_THRESHOLD) -> Evaluation:
    """Read and score two CSVs; errors name the file (and row/ID where there is one)."""
    truth = read_submission(truth_path)
    pred = read_submission(pred_path)
    return evaluate_frames(truth, pred, iou_threshold, str(truth_path), str(pred_path))


# ----------------------------------------------------------------------------- reporting and CLI

def format_table(evaluation: Evaluation) -> str:
    """Per-class table; the last line is `mAP: 0.xxxxxx` (scripts read it)."""
    lines = [f"{'id':>2}  {'class':<41} {'n_truth':>8} {'n_pred':>8} {'AP':>8}"]
    for c in evaluation.classes:
        ap = "-" if math.isnan(c.average_precision) else f"{c.average_precision:.6f}"
        lines.append(f"{c.label:>2}  {c.name:<41} {c.n_truth:>8} {c.n_predictions:>8} {ap:>8}")
    lines.append(f"images: {evaluation.n_images}  IoU threshold: {evaluation.iou_threshold:g}  "
                 f"classes with truth: {sum(c.n_truth > 0 for c in evaluation.classes)}")
    lines.append(f"mAP: {evaluation.mean_average_precision:.6f}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m hpacam.evaluate", description=__doc__.split("\n")[0])
    parser.add_argument("--truth", required=True, type=Path, help="truth CSV (submission format)")
    parser.add_argument("--pred", required=True, type=Path, help="submission CSV to score")
    parser.add_argument("--json", type=Path, help="also write per-class AP, counts and mAP here")
    parser.add_argument("--iou", type=float, default=DEFAULT_IOU_THRESHOLD, help="mask IoU threshold")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: print the table (mAP last); errors are one line on stderr and exit status 1."""
    args = parse_args(argv)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            evaluation = evaluate_files(args.truth, args.pred, args.iou)
        for warning in caught:
            print(f"warning: {warning.message}", file=sys.stderr)
        if args.json:
            atomic_write_text(args.json, json.dumps(evaluation.to_dict(), indent=2) + "\n")
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(format_table(evaluation))
    return 0


if __name__ == "__main__":
    sys.exit(main())
