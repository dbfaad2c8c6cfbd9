"""Image-level quality of each image-level source: mAP and mean ROC AUC over classes.

    python -m hpacam.image_metrics --labels SET/labels.csv --sources SUBMISSION.image_sources.csv [--json OUT]

The cell stage can only redistribute what the image probabilities say across an image's cells,
so how good those probabilities are (per source: the CAM models' logits, each Keras model, the
blend) is the first thing to know when the pipeline does or does not beat `broadcast`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from hpacam.classes import NUM_CLASSES
from hpacam.fileio import atomic_write_text
from hpacam.labels import multi_hot, read_labels

PROB_COLUMNS = [str(c) for c in range(NUM_CLASSES)]


def image_level_scores(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Macro mAP and ROC AUC over the classes that have both positive and negative images."""
    from sklearn.metrics import average_precision_score

    from hpacam.cam.metrics import per_class_auc  # numpy and scikit-learn only, no torch

    aucs = per_class_auc(probs, labels)
    if not aucs:  # a tiny set: undefined, reported as such rather than stopping a run
        return {"mAP": float("nan"), "mean_auc": float("nan"), "classes": 0}
    return {"mAP": float(np.mean([average_precision_score(labels[:, c], probs[:, c]) for c in aucs])),
            "mean_auc": float(np.mean(list(aucs.values()))), "classes": len(aucs)}


def read_sources(path: Path) -> pd.DataFrame:
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: image source table not found (inference writes it beside the submission)")
    frame = pd.read_csv(path, dtype={"ID": str, "source": str})
    missing = [c for c in ["ID", "source", *PROB_COLUMNS] if c not in frame.columns]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")
    return frame


def source_report(labels_path: Path, sources_path: Path) -> dict[str, dict[str, float]]:
    table = read_labels(labels_path)
    truth = dict(zip(table["ID"], multi_hot(table["labels"])))
    report = {}
    for source, frame in read_sources(sources_path).groupby("source", sort=False):
        unknown = sorted(set(frame["ID"]) - set(truth))
        if unknown:
            raise ValueError(f"{sources_path}: IDs not in {labels_path}: {unknown[:3]}")
        labels = np.stack([truth[i] for i in frame["ID"]])
        report[source] = image_level_scores(labels, frame[PROB_COLUMNS].to_numpy(dtype=np.float64))
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=Path, required=True, help="the set's image labels (Kaggle ID,Label CSV)")
    parser.add_argument("--sources", type=Path, required=True, help="inference's .image_sources.csv")
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    try:
        report = source_report(args.labels, args.sources)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for source, scores in report.items():
        print(f"{source:<50} image mAP {scores['mAP']:.4f}  mean ROC AUC {scores['mean_auc']:.4f}")
    if args.json:
        atomic_write_text(args.json, json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
