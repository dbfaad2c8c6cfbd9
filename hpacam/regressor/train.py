"""Fitting the calibration regressors: one per CAM model, on the tidy intensity table.

Images are split (not rows), so the held-out figures measure how the mapping carries over to
unseen images: cells of one image share its brightness and its CAM scale. The held-out report
compares the regressor with the per-image sigmoid on the same cells (per-class ROC-AUC between
cells with and without each label), which is what tells whether the learned mapping helps.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from hpacam.classes import CLASS_NAMES
from hpacam.fileio import atomic_write_text
from hpacam.regressor.calibration import (INTENSITY_COLUMNS, CalibrationRegressor, RegressorConfig,
                                          SigmoidCalibration, feature_matrix, fit_regressor, save_regressor,
                                          sigmoid_per_image)

log = logging.getLogger(__name__)


@dataclass
class RegressorStageConfig:
    intensities: Path = Path("data/intensities/intensities.csv")
    out_dir: Path = Path("data/regressor")
    regressor: RegressorConfig = field(default_factory=RegressorConfig)
    sigmoid: SigmoidCalibration = field(default_factory=SigmoidCalibration)  # the comparison
    holdout: float = 0.25  # share of images held out for the report
    refit_all: bool = True  # after the report, refit on every image for the saved regressor
    seed: int = 0


def read_intensities(path: Path) -> pd.DataFrame:
    """The tidy CSV of extract_intensities.py, checked for its columns and targets."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: intensity table not found (run extract_intensities.py first)")
    frame = pd.read_csv(path, dtype={"image": str, "model": str})
    missing = [c for c in INTENSITY_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")
    if frame.empty:
        raise ValueError(f"{path}: no rows")
    if frame["target"].isna().any() or not frame["target"].between(0, 1).all():
        raise ValueError(f"{path}: targets must be numbers in [0, 1]")
    return frame


def split_images(images: np.ndarray, holdout: float, seed: int) -> np.ndarray:
    """Boolean mask of held-out rows: a seeded share of the distinct images."""
    unique = np.unique(images)
    rng = np.random.default_rng(seed)
    n_hold = int(round(len(unique) * holdout))
    if holdout > 0 and not 0 < n_hold < len(unique):
        raise ValueError(f"{len(unique)} images are too few to hold out {holdout:.0%} of them")
    held = rng.choice(unique, size=n_hold, replace=False)
    return np.isin(images, held)


def per_class_auc(frame: pd.DataFrame, scores: np.ndarray) -> dict[int, float]:
    """ROC-AUC of `scores` between rows with and without the label, for each class with both."""
    from sklearn.metrics import roc_auc_score

    aucs = {}
    for label, rows in frame.groupby("class").indices.items():
        target = frame["target"].to_numpy()[rows] > 0.5
        if 0 < target.sum() < len(target):
            aucs[int(label)] = float(roc_auc_score(target, scores[rows]))
    return aucs


def evaluate_holdout(frame: pd.DataFrame, regressor: CalibrationRegressor, cfg: RegressorStageConfig) -> dict:
    predicted = regressor.predict(feature_matrix(frame, regressor.features))
    sigmoid = sigmoid_per_image(frame, cfg.sigmoid)
    target = frame["target"].to_numpy()
    both = (predicted + sigmoid) / 2
    report = {"rows": len(frame), "images": int(frame["image"].nunique()),
              "mae": float(np.abs(predicted - target).mean()),
              "rmse": float(np.sqrt(((predicted - target) ** 2).mean()))}
    for name, scores in (("regressor", predicted), ("sigmoid", sigmoid), ("average", both)):
        aucs = per_class_auc(frame, scores)
        report[f"auc_{name}"] = {CLASS_NAMES[k]: round(v, 4) for k, v in aucs.items()}
        report[f"mean_auc_{name}"] = float(np.mean(list(aucs.values()))) if aucs else float("nan")
    return report


def plot_mapping(frame: pd.DataFrame, regressor: CalibrationRegressor, path: Path) -> Path:
    """Scatter of the learned probability against the raw intensity, coloured by target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sample = frame.sample(min(len(frame), 5000), random_state=0)
    predicted = regressor.predict(feature_matrix(sample, regressor.features))
    fig, ax = plt.subplots(figsize=(6, 4))
    positive = sample["target"].to_numpy() > 0.5
    ax.scatter(sample["intensity_sum"][~positive], predicted[~positive], s=3, alpha=0.4, label="cell lacks class")
    ax.scatter(sample["intensity_sum"][positive], predicted[positive], s=3, alpha=0.6, label="cell has class")
    ax.set_xscale("symlog")
    ax.set_xlabel("intensity (sum of activated CAM x image probability)")
    ax.set_ylabel("regressor probability")
    ax.legend(loc="lower right")
    fig.tight_layout()
    from hpacam.fileio import atomic_path

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path


def safe_name(model: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in model)


def train_regressors(cfg: RegressorStageConfig) -> dict:
    """Fit, report and save one regressor per CAM model; returns the report (also written as JSON)."""
    table = read_intensities(cfg.intensities)
    reports = {}
    for model, frame in table.groupby("model", sort=True):
        frame = frame.reset_index(drop=True)
        held = split_images(frame["image"].to_numpy(), cfg.holdout, cfg.seed)
        train = frame[~held]
        log.info("model %s: fitting on %d rows of %d images, %d images held out", model, len(train),
                 train["image"].nunique(), frame.loc[held, "image"].nunique())
        regressor, _ = fit_regressor(feature_matrix(train, cfg.regressor.features), train["target"].to_numpy(),
                                     cfg.regressor, meta={"model": model})
        report = evaluate_holdout(frame[held].reset_index(drop=True), regressor, cfg) if held.any() else {}
        if cfg.refit_all and held.any():
            regressor, _ = fit_regressor(feature_matrix(frame, cfg.regressor.features), frame["target"].to_numpy(),
                                         cfg.regressor, meta={"model": model})
        name = safe_name(model)
        report["file"] = str(save_regressor(regressor, cfg.out_dir / f"{name}.npz"))
        report["plot"] = str(plot_mapping(frame, regressor, cfg.out_dir / f"{name}_mapping.png"))
        reports[model] = report
    atomic_write_text(cfg.out_dir / "report.json", json.dumps(reports, indent=1))
    log.info("held-out report (also %s):\n%s", cfg.out_dir / "report.json", format_report(reports))
    return reports


def format_report(reports: dict) -> str:
    lines = []
    for model, report in reports.items():
        lines.append(f"model {model}: saved {report['file']}")
        if "mae" not in report:
            continue
        lines.append(f"  held out: {report['images']} images, {report['rows']} rows; "
                     f"MAE {report['mae']:.4f}  RMSE {report['rmse']:.4f}")
        lines.append(f"  {'class':<42} {'regressor':>9} {'sigmoid':>9} {'average':>9}")
        for name in report["auc_sigmoid"]:
            values = [report[f"auc_{k}"].get(name, float("nan")) for k in ("regressor", "sigmoid", "average")]
            lines.append(f"  {name:<42} " + " ".join(f"{v:9.4f}" for v in values))
        lines.append(f"  {'mean per-class ROC-AUC':<42} " + " ".join(
            f"{report[f'mean_auc_{k}']:9.4f}" for k in ("regressor", "sigmoid", "average")))
    return "\n".join(lines)
