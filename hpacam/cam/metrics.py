"""Validation metrics of an image-level multi-label classifier.

ROC-AUC per class says whether the ranking is right regardless of calibration (what the
downstream regressor needs); F1 at several thresholds says where a usable cut lies.
Classes without positives (or without negatives) in the fold are left out of the averages
instead of counting as 0 or 1.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score


def per_class_auc(probs: np.ndarray, targets: np.ndarray) -> dict[int, float]:
    """ROC-AUC of every class that has both positives and negatives."""
    aucs = {}
    for c in range(targets.shape[1]):
        positives = targets[:, c] > 0.5
        if 0 < positives.sum() < len(positives):
            aucs[c] = float(roc_auc_score(positives, probs[:, c]))
    return aucs


def f1_scores(probs: np.ndarray, targets: np.ndarray, threshold: float) -> tuple[float, float]:
    """(macro F1 over classes with positives, micro F1) at one threshold."""
    predicted = probs >= threshold
    truth = targets > 0.5
    tp = (predicted & truth).sum(axis=0).astype(float)
    fp = (predicted & ~truth).sum(axis=0).astype(float)
    fn = (~predicted & truth).sum(axis=0).astype(float)
    present = truth.sum(axis=0) > 0
    per_class = 2 * tp / np.maximum(2 * tp + fp + fn, 1)
    macro = float(per_class[present].mean()) if present.any() else float("nan")
    micro = float(2 * tp.sum() / max(2 * tp.sum() + fp.sum() + fn.sum(), 1))
    return macro, micro


def classification_metrics(probs: np.ndarray, targets: np.ndarray, thresholds=(0.1, 0.2, 0.3, 0.4, 0.5)) -> dict:
    """Flat dict: macro_auc, auc_<c> per class, macro_f1@t and micro_f1@t per threshold."""
    aucs = per_class_auc(probs, targets)
    out: dict[str, float] = {"macro_auc": float(np.mean(list(aucs.values()))) if aucs else float("nan")}
    for threshold in thresholds:
        macro, micro = f1_scores(probs, targets, threshold)
        out[f"macro_f1@{threshold:g}"] = macro
        out[f"micro_f1@{threshold:g}"] = micro
    out.update({f"auc_{c}": value for c, value in aucs.items()})
    return out
