"""Turning raw per-cell CAM intensities into probabilities, two ways (averaged at inference).

1. Per image: standardise all of the image's cells x classes (standard or robust scaler) and
   apply a sigmoid with a configurable factor and shift. Needs no training.
2. A learned mapping: a scaler plus a scikit-learn gradient-boosting regressor fitted on
   labelled cells (`train-gradboost-regressor/`).

The fitted regressor is saved in a code-free format: its trees as plain arrays in an `.npz`
(read with `allow_pickle=False`) and its settings as JSON inside it, so loading a regressor that
someone else published cannot run code. Prediction walks the trees with numpy; a test checks it
against scikit-learn's own `predict`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from hpacam.fileio import atomic_path, read_npz

FORMAT_VERSION = 1
# Columns of the tidy per-cell CSV written by extract_intensities.py (one row per image, cell,
# model and class), and the regressor feature each column provides.
INTENSITY_COLUMNS = ("image", "cell", "model", "class", "intensity_sum", "intensity_mean", "image_prob",
                     "area", "border", "target")
FEATURE_COLUMNS = {"sum": "intensity_sum", "mean": "intensity_mean", "area": "area", "border": "border",
                   "image_prob": "image_prob", "class": "class"}
FEATURES = tuple(FEATURE_COLUMNS)


# ----------------------------------------------------------------------------- per-image sigmoid


@dataclass
class SigmoidCalibration:
    """p = sigmoid(factor * (z - shift)) where z is the intensity standardised within its image."""

    scaler: Literal["standard", "robust"] = "standard"
    factor: float = 1.0
    shift: float = 0.0


def standardise_per_image(values: np.ndarray, scaler: str = "standard") -> np.ndarray:
    """Standardise one image's (cells, classes) intensities over all its cells and classes at once.

    Standardising within the image removes the image's overall brightness and the CAM scale, which
    vary a lot between images and are not evidence about any one cell.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0:
        return values
    if scaler == "standard":
        centre, spread = values.mean(), values.std()
    elif scaler == "robust":
        q25, centre, q75 = np.percentile(values, [25, 50, 75])
        spread = q75 - q25
    else:
        raise ValueError(f"unknown scaler {scaler!r}; expected standard or robust")
    return (values - centre) / (spread if spread > 1e-12 else 1.0)


def sigmoid_calibrate(values: np.ndarray, cfg: SigmoidCalibration = SigmoidCalibration()) -> np.ndarray:
    z = standardise_per_image(values, cfg.scaler)
    return 1.0 / (1.0 + np.exp(-cfg.factor * (z - cfg.shift)))


# ----------------------------------------------------------------------------- learned regressor


@dataclass
class RegressorConfig:
    kind: Literal["hist", "classic"] = "hist"  # HistGradientBoosting or GradientBoosting
    features: list[str] = field(default_factory=lambda: ["sum", "mean", "area", "border", "image_prob"])
    n_estimators: int = 200
    learning_rate: float = 0.05
    max_depth: int = 4
    min_samples_leaf: int = 20
    seed: int = 0


@dataclass
class TreeEnsemble:
    """Trees as flat arrays: node i splits on `feature[i]` at `threshold[i]` (x <= t goes left)."""

    left: np.ndarray  # (nodes,) int64, -1 for leaves
    right: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray  # float64
    value: np.ndarray  # float64 leaf values (already multiplied by the learning rate)
    missing_left: np.ndarray  # bool: where NaN goes
    roots: np.ndarray  # (trees,) index of each tree's root node
    baseline: float
    compare_float32: bool  # classic trees compare float32 features, as scikit-learn does

    def predict(self, features: np.ndarray) -> np.ndarray:
        x = np.asarray(features, dtype=np.float32 if self.compare_float32 else np.float64)
        rows = np.arange(len(x))
        total = np.full(len(x), self.baseline, dtype=np.float64)
        for root in self.roots:
            node = np.full(len(x), root, dtype=np.int64)
            active = self.left[node] >= 0
            while active.any():
                n = node[active]
                xv = x[rows[active], self.feature[n]]
                go_left = np.where(np.isnan(xv), self.missing_left[n], xv <= self.threshold[n])
                node[active] = np.where(go_left, self.left[n], self.right[n])
                active = self.left[node] >= 0
            total += self.value[node]
        return total


def _ensemble_from_classic(model) -> TreeEnsemble:
    parts, roots, offset = [], [], 0
    for tree in model.estimators_[:, 0]:
        t = tree.tree_
        left, right = t.children_left.astype(np.int64), t.children_right.astype(np.int64)
        parts.append((np.where(left >= 0, left + offset, -1), np.where(right >= 0, right + offset, -1),
                      t.feature.astype(np.int64), t.threshold.astype(np.float64),
                      t.value[:, 0, 0] * model.learning_rate, np.zeros(t.node_count, bool)))
        roots.append(offset)
        offset += t.node_count
    baseline = float(np.ravel(model.init_.constant_)[0])
    return _concat(parts, roots, baseline, compare_float32=True)


def _ensemble_from_hist(model) -> TreeEnsemble:
    parts, roots, offset = [], [], 0
    for (predictor,) in model._predictors:
        nodes = predictor.nodes
        leaf = nodes["is_leaf"].astype(bool)
        if nodes["is_categorical"].any():
            raise ValueError("categorical splits are not supported in the code-free regressor format")
        parts.append((np.where(leaf, -1, nodes["left"].astype(np.int64) + offset),
                      np.where(leaf, -1, nodes["right"].astype(np.int64) + offset),
                      nodes["feature_idx"].astype(np.int64), nodes["num_threshold"].astype(np.float64),
                      nodes["value"].astype(np.float64), nodes["missing_go_to_left"].astype(bool)))
        roots.append(offset)
        offset += len(nodes)
    baseline = float(np.ravel(model._baseline_prediction)[0])
    return _concat(parts, roots, baseline, compare_float32=False)


def _concat(parts, roots, baseline, compare_float32) -> TreeEnsemble:
    arrays = [np.concatenate(column) for column in zip(*parts)]
    return TreeEnsemble(*arrays, roots=np.asarray(roots, dtype=np.int64), baseline=baseline,
                        compare_float32=compare_float32)


@dataclass
class CalibrationRegressor:
    """A scaler plus a tree ensemble mapping per-cell features to a probability of the class."""

    features: list[str]
    mean: np.ndarray
    scale: np.ndarray
    trees: TreeEnsemble
    meta: dict

    def predict(self, features: np.ndarray) -> np.ndarray:
        x = (np.asarray(features, dtype=np.float64) - self.mean) / self.scale
        return np.clip(self.trees.predict(x), 0.0, 1.0)


def fit_regressor(features: np.ndarray, target: np.ndarray, cfg: RegressorConfig, meta: dict | None = None):
    """Fit scaler + gradient boosting; returns (CalibrationRegressor, the scikit-learn model)."""
    from sklearn.ensemble import GradientBoostingRegressor, HistGradientBoostingRegressor
    from sklearn.preprocessing import StandardScaler

    _check_features(cfg.features)
    scaler = StandardScaler().fit(features)
    x = scaler.transform(features)
    if cfg.kind == "hist":
        model = HistGradientBoostingRegressor(max_iter=cfg.n_estimators, learning_rate=cfg.learning_rate,
                                              max_depth=cfg.max_depth, min_samples_leaf=cfg.min_samples_leaf,
                                              early_stopping=False, random_state=cfg.seed)
    else:
        model = GradientBoostingRegressor(n_estimators=cfg.n_estimators, learning_rate=cfg.learning_rate,
                                          max_depth=cfg.max_depth, min_samples_leaf=cfg.min_samples_leaf,
                                          random_state=cfg.seed)
    model.fit(x, target)
    trees = _ensemble_from_hist(model) if cfg.kind == "hist" else _ensemble_from_classic(model)
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    regressor = CalibrationRegressor(list(cfg.features), scaler.mean_.astype(np.float64), scale, trees,
                                     {"kind": cfg.kind, **(meta or {})})
    return regressor, model


def save_regressor(regressor: CalibrationRegressor, path: str | os.PathLike) -> Path:
    """Write the regressor as arrays + JSON in one `.npz`, atomically. Nothing in it is code."""
    t = regressor.trees
    meta = {"format_version": FORMAT_VERSION, "features": regressor.features, "baseline": t.baseline,
            "compare_float32": t.compare_float32, **regressor.meta}
    arrays = {"left": t.left, "right": t.right, "feature": t.feature, "threshold": t.threshold,
              "value": t.value, "missing_left": t.missing_left, "roots": t.roots,
              "mean": regressor.mean, "scale": regressor.scale,
              "meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)
    return Path(path)


REGRESSOR_ARRAYS = ("left", "right", "feature", "threshold", "value", "missing_left", "roots", "mean", "scale", "meta")
MAX_REGRESSOR_BYTES = 256 << 20  # a fitted regressor takes a few MB; the cap bounds a crafted file's demand


def load_regressor(path: str | os.PathLike) -> CalibrationRegressor:
    """Read a regressor written by `save_regressor`; never unpickles, and checks every array and setting.

    Anyone can publish a regressor file, so each part is checked before use: sizes (from the
    headers, before reading), types, indices and finite values; errors name the file.
    """
    path = Path(path)
    arrays = read_npz(path, REGRESSOR_ARRAYS, MAX_REGRESSOR_BYTES, "a regressor file in the code-free .npz format")
    meta = _regressor_meta(arrays.pop("meta"), path)
    _check_array_kinds(arrays, len(meta["features"]), path)
    trees = TreeEnsemble(arrays["left"], arrays["right"], arrays["feature"], arrays["threshold"], arrays["value"],
                         arrays["missing_left"], arrays["roots"], float(meta["baseline"]), meta["compare_float32"])
    _check_tree_arrays(trees, len(meta["features"]), path)
    return CalibrationRegressor(list(meta["features"]), arrays["mean"], arrays["scale"], trees, meta)


def _regressor_meta(raw: np.ndarray, path: Path) -> dict:
    """The JSON settings inside a regressor file, each of the type it must have."""
    try:
        meta = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ValueError(f"{path}: its meta array is not JSON text (corrupt or crafted file)") from None
    if not isinstance(meta, dict):
        raise ValueError(f"{path}: meta must be a JSON object, got {type(meta).__name__}")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path}: regressor format {meta.get('format_version')}, expected {FORMAT_VERSION}")
    features, baseline = meta.get("features"), meta.get("baseline")
    if not isinstance(features, list) or not features or not all(isinstance(f, str) for f in features):
        raise ValueError(f"{path}: meta.features must be a non-empty list of names, got {features!r}")
    unknown = sorted(set(features) - set(FEATURES))
    if unknown:
        raise ValueError(f"{path}: meta.features names unknown features {unknown}; known: {list(FEATURES)}")
    if isinstance(baseline, bool) or not isinstance(baseline, (int, float)) or not np.isfinite(baseline):
        raise ValueError(f"{path}: meta.baseline must be a finite number, got {baseline!r}")
    if not isinstance(meta.get("compare_float32"), bool):
        raise ValueError(f"{path}: meta.compare_float32 must be true or false, got {meta.get('compare_float32')!r}")
    return meta


def _check_array_kinds(arrays: dict, n_features: int, path: Path) -> None:
    """1-D arrays of the right kinds, finite numbers, one scaler entry per feature."""
    kinds = {"left": "iu", "right": "iu", "feature": "iu", "roots": "iu", "threshold": "f", "value": "f",
             "missing_left": "b", "mean": "f", "scale": "f"}
    for name, allowed in kinds.items():
        array = arrays[name]
        if array.ndim != 1 or array.dtype.kind not in allowed:
            raise ValueError(f"{path}: array {name} is {array.dtype} of shape {array.shape}; expected a 1-D "
                             f"{'integer' if allowed == 'iu' else 'boolean' if allowed == 'b' else 'float'} array")
    for name in ("value", "mean", "scale"):
        if not np.isfinite(arrays[name]).all():
            raise ValueError(f"{path}: array {name} holds NaN or infinite values (a broken fit or a crafted file)")
    if len(arrays["mean"]) != n_features or len(arrays["scale"]) != n_features or (arrays["scale"] == 0).any():
        raise ValueError(f"{path}: the scaler needs {n_features} means and non-zero scales, one per feature")


def _check_tree_arrays(trees: TreeEnsemble, n_features: int, path: Path) -> None:
    """Refuse indices that would read outside the arrays (a crafted file must fail cleanly)."""
    n = len(trees.left)
    sizes = {len(trees.right), len(trees.feature), len(trees.threshold), len(trees.value), len(trees.missing_left)}
    children = np.concatenate([trees.left, trees.right, trees.roots])
    inner = trees.left >= 0
    if (sizes != {n} or children.max(initial=-1) >= n or trees.roots.min(initial=0) < 0
            or (inner & ((trees.feature < 0) | (trees.feature >= n_features))).any()
            or (inner & ((trees.left <= np.arange(n)) | (trees.right <= np.arange(n)))).any()):
        raise ValueError(f"{path}: inconsistent tree arrays (corrupt or crafted file)")


# ----------------------------------------------------------------------------- tidy intensity tables

def feature_frame(result, image_probs: np.ndarray, border: np.ndarray) -> pd.DataFrame:
    """The regressor's features of one image and one model, a row per (cell, class), cells in order.

    The one table both sides build: extraction writes it (with image, model and target) as the
    regressor's training rows, inference feeds it to the regressor. Built once, the regressor
    cannot see other features at inference than those it learned from.

    `result`: the image's `CellIntensities`; `image_probs`: the model's (19,) probabilities;
    `border`: (cells,) bool, aligned with `result.cell_ids`. Columns: cell, class and the
    `FEATURE_COLUMNS` (border as 0/1).
    """
    n_cells, n_classes = result.sums.shape
    return pd.DataFrame({
        "cell": np.repeat(result.cell_ids, n_classes), "class": np.tile(np.arange(n_classes), n_cells),
        "intensity_sum": result.sums.ravel(), "intensity_mean": result.means.ravel(),
        "image_prob": np.tile(image_probs, n_cells), "area": np.repeat(result.area, n_classes),
        "border": np.repeat(border, n_classes).astype(int)})


def feature_matrix(frame, features) -> np.ndarray:
    """The regressor's input columns, in the order of `features`, from a tidy intensity table."""
    _check_features(features)
    return np.column_stack([frame[FEATURE_COLUMNS[name]].to_numpy(dtype=np.float64) for name in features])


def _check_features(features) -> None:
    unknown = sorted(set(features) - set(FEATURES))
    if unknown:
        raise ValueError(f"unknown regressor features {unknown}; choose from {list(FEATURES)}")


def sigmoid_per_image(frame, cfg: SigmoidCalibration = SigmoidCalibration(), column: str = "intensity_sum"):
    """Per-image sigmoid calibration of a tidy table: standardised within each (image, model)."""
    return frame.groupby(["image", "model"], sort=False)[column].transform(
        lambda values: sigmoid_calibrate(values.to_numpy(), cfg)).to_numpy()
