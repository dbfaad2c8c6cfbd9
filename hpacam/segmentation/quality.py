"""Segmentation quality against truth label images: one-to-one matches, splits and merges.

Definitions (T = truth cell, P = predicted cell, both from label images with 0 = background):

- overlap: the contingency table of (truth label, predicted label) pixel pairs, from one
  `np.bincount` over the paired labels; IoU(T, P) = |T & P| / |T | P|.
- matched: a one-to-one assignment maximising the summed IoU over pairs with IoU >= the
  threshold (0.6, the competition's). Above 0.5 a cell can have at most one such partner, so
  the assignment is then the plain list of qualifying pairs; it stays correct below 0.5.
- recall = matched / truth cells (the figure the metric depends on); precision = matched /
  predicted cells; mean IoU is over the matched pairs.
- split: a truth cell T holding at least half of each of two or more predicted cells that each
  cover at least a tenth of T (|T & P| >= 0.5 |P| and >= 0.1 |T|). A predicted cell lies mostly
  in at most one truth cell, so no piece counts twice, and crumbs at an edge are not splits.
- merge: the same with the roles swapped: a predicted cell P holding at least half of each of
  two or more truth cells that each cover at least a tenth of P.
- missed: truth cells with no predicted pixel over half of them or more.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

from hpacam.images import read_label_png

IOU_THRESHOLD = 0.6
MOSTLY = 0.5  # "lies mostly in": at least this share of a cell's pixels
PIECE = 0.1  # a piece of a split or merge covers at least this share of the other cell


@dataclass(frozen=True)
class ImageMatch:
    """The comparison of one predicted label image with its truth."""

    n_truth: int
    n_pred: int
    matched: int
    iou_sum: float  # summed IoU of the matched pairs
    splits: int
    merges: int
    missed: int
    matched_pairs: tuple[tuple[int, int, float], ...] = field(default=(), repr=False)  # (truth, pred, IoU)


def contingency(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """(n_truth + 1, n_pred + 1) pixel counts of every (truth label, predicted label) pair."""
    if truth.shape != pred.shape:
        raise ValueError(f"truth {truth.shape} and prediction {pred.shape} differ in shape")
    truth = truth.astype(np.int64, copy=False).ravel()
    pred = pred.astype(np.int64, copy=False).ravel()
    if truth.size and (truth.min() < 0 or pred.min() < 0):
        raise ValueError("label images must not hold negative labels")
    n_truth, n_pred = (int(truth.max()) if truth.size else 0), (int(pred.max()) if pred.size else 0)
    counts = np.bincount(truth * (n_pred + 1) + pred, minlength=(n_truth + 1) * (n_pred + 1))
    return counts.reshape(n_truth + 1, n_pred + 1)


def iou_matrix(table: np.ndarray) -> np.ndarray:
    """IoU of every truth cell (rows, labels 1..) with every predicted cell (columns, labels 1..)."""
    inter = table[1:, 1:].astype(np.float64)
    truth_area = table[1:, :].sum(axis=1, keepdims=True)
    pred_area = table[:, 1:].sum(axis=0, keepdims=True)
    union = truth_area + pred_area - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def one_to_one(iou: np.ndarray, threshold: float) -> list[tuple[int, int, float]]:
    """Maximum-IoU one-to-one pairs among those with IoU >= threshold (0-based indices)."""
    if iou.size == 0:
        return []
    rows, cols = linear_sum_assignment(np.where(iou >= threshold, iou, 0.0), maximize=True)
    return [(int(r), int(c), float(iou[r, c])) for r, c in zip(rows, cols) if iou[r, c] >= threshold]


def match_labels(truth: np.ndarray, pred: np.ndarray, threshold: float = IOU_THRESHOLD) -> ImageMatch:
    """Compare two label images; labels need not be consecutive (absent ones are ignored)."""
    table = contingency(np.asarray(truth), np.asarray(pred))
    inter = table[1:, 1:]
    truth_area = table[1:, :].sum(axis=1)
    pred_area = table[:, 1:].sum(axis=0)
    present_truth, present_pred = truth_area > 0, pred_area > 0
    pairs = one_to_one(iou_matrix(table), threshold)
    overlap = inter > 0
    pred_piece_of_truth = overlap & (inter >= MOSTLY * pred_area[None, :]) & (inter >= PIECE * truth_area[:, None])
    truth_piece_of_pred = overlap & (inter >= MOSTLY * truth_area[:, None]) & (inter >= PIECE * pred_area[None, :])
    truth_mostly_covered = overlap & (inter >= MOSTLY * truth_area[:, None])
    return ImageMatch(
        n_truth=int(present_truth.sum()),
        n_pred=int(present_pred.sum()),
        matched=len(pairs),
        iou_sum=float(sum(p[2] for p in pairs)),
        splits=int((pred_piece_of_truth.sum(axis=1) >= 2).sum()),
        merges=int((truth_piece_of_pred.sum(axis=0) >= 2).sum()),
        missed=int((present_truth & ~truth_mostly_covered.any(axis=1)).sum()),
        matched_pairs=tuple((r + 1, c + 1, iou) for r, c, iou in pairs),
    )


@dataclass(frozen=True)
class QualityReport:
    """Sums over a set of images, and the rates derived from them."""

    n_images: int
    n_truth: int
    n_pred: int
    matched: int
    splits: int
    merges: int
    missed: int
    recall: float  # share of truth cells matched at IoU >= threshold
    precision: float
    mean_iou: float  # over matched pairs
    threshold: float

    def to_dict(self) -> dict:
        return asdict(self)


def summarise(matches: Iterable[ImageMatch], threshold: float = IOU_THRESHOLD) -> QualityReport:
    matches = list(matches)
    total = {k: sum(getattr(m, k) for m in matches)
             for k in ("n_truth", "n_pred", "matched", "splits", "merges", "missed")}
    iou_sum = sum(m.iou_sum for m in matches)
    return QualityReport(
        n_images=len(matches), **total,
        recall=total["matched"] / total["n_truth"] if total["n_truth"] else float("nan"),
        precision=total["matched"] / total["n_pred"] if total["n_pred"] else float("nan"),
        mean_iou=iou_sum / total["matched"] if total["matched"] else float("nan"),
        threshold=threshold,
    )


def compare_folders(truth_dir: Path, pred_dir: Path, threshold: float = IOU_THRESHOLD) -> QualityReport:
    """Match every `{ID}.png` of `truth_dir` with the same file in `pred_dir` (a missing one is an error)."""
    truth_files = sorted(Path(truth_dir).glob("*.png"))
    if not truth_files:
        raise FileNotFoundError(f"{truth_dir}: no truth label PNGs")
    matches = []
    for truth_file in truth_files:
        pred_file = Path(pred_dir) / truth_file.name
        if not pred_file.is_file():
            raise FileNotFoundError(f"{pred_file}: no prediction for truth {truth_file}")
        matches.append(match_labels(read_label_png(truth_file), read_label_png(pred_file), threshold))
    return summarise(matches, threshold)


def format_report(report: QualityReport, title: str = "") -> str:
    head = f"{title}: " if title else ""
    return (f"{head}{report.n_images} images, {report.n_truth} truth / {report.n_pred} predicted cells; "
            f"matched at IoU>={report.threshold:g}: {report.matched} (recall {report.recall:.3f}, "
            f"precision {report.precision:.3f}), mean matched IoU {report.mean_iou:.3f}, "
            f"splits {report.splits}, merges {report.merges}, missed {report.missed}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hpacam.segmentation.quality",
        description="Compare predicted cell label PNGs with truth label PNGs (same file names).")
    parser.add_argument("--truth", type=Path, required=True, help="folder of truth {ID}.png (e.g. synth cells/)")
    parser.add_argument("--pred", type=Path, required=True, help="folder of predicted {ID}.png")
    parser.add_argument("--threshold", type=float, default=IOU_THRESHOLD)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    report = compare_folders(args.truth, args.pred, args.threshold)
    print(json.dumps(report.to_dict(), indent=2) if args.json else format_report(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
