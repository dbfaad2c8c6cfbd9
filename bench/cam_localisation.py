"""Do Puzzle-CAM maps find the right cells? Train tiny CPU models on a synthetic set and measure.

    python bench/cam_localisation.py                      # the figures quoted in docs/cam.md
    python bench/cam_localisation.py --epochs 4 --train-images 120   # a quicker look

1. Generates a training set and a separate test set with `hpacam.synth` (or reuses them).
2. Trains the tiny recipe (configs/cam/tiny_cpu.yaml) twice with identical settings, once with
   the Puzzle-CAM objective and once as a plain CAM (classification loss only).
3. Scores every truth cell of the test set by the mean of each class map inside it and prints
   the per-class ROC-AUC of "cells carrying c" vs "other cells" (see hpacam.cam.localisation),
   plus the wall time, and writes everything to OUT/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from hpacam.cam.checkpoint import load_cam_model
from hpacam.cam.config import TrainCamConfig
from hpacam.cam.localisation import format_result, localisation_auc, score_cells
from hpacam.cam.train import train
from hpacam.config import load_config
from hpacam.fileio import atomic_write_text
from hpacam.labels import read_labels

REPO = Path(__file__).resolve().parents[1]
TINY_RECIPE = REPO / "configs" / "cam" / "tiny_cpu.yaml"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "data" / "bench" / "cam_localisation")
    parser.add_argument("--train-images", type=int, default=600)
    parser.add_argument("--test-images", type=int, default=120)
    parser.add_argument("--synth-size", type=int, default=256, help="pixel size of the generated images")
    parser.add_argument("--input-size", type=int, default=128, help="model input size")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--modes", default="puzzle,plain")
    parser.add_argument("--workers", type=int, default=2, help="generator processes")
    parser.add_argument("overrides", nargs="*", help="extra training-config overrides, key.sub=value")
    return parser.parse_args(argv)


def ensure_dataset(folder: Path, n_images: int, size: int, seed: int, workers: int) -> Path:
    """Generate the set unless an identical one (same stats.json seed and count) is there."""
    from hpacam.synth import generate_dataset

    stats_path = folder / "stats.json"
    if stats_path.is_file():
        stats = json.loads(stats_path.read_text())
        if stats.get("images") == n_images and stats.get("seed") == seed and str(size) in stats.get("image_sizes", {}):
            return folder
    generate_dataset(folder, n_images, size, seed, workers=workers, overwrite=True, progress=False)
    return folder


def train_one(mode: str, args: argparse.Namespace, train_dir: Path) -> tuple[Path, float, float]:
    """Train one mode; returns (checkpoint, wall seconds, CPU seconds of this process)."""
    overrides = [
        f"run_dir={args.out / mode}",
        f"data.sources=[{{images: {train_dir / 'images'}, labels: {train_dir / 'labels.csv'}}}]",
        f"data.image_size={args.input_size}",
        f"train.epochs={args.epochs}",
        f"train.seed={args.seed}",
        f"loss.mode={mode}",
        "train.progress=false",
        *args.overrides,
    ]
    cfg = load_config(TrainCamConfig, TINY_RECIPE, overrides)
    started, cpu_started = time.time(), time.process_time()
    result = train(cfg)
    return result.last_checkpoint, time.time() - started, time.process_time() - cpu_started


def measure(mode: str, args: argparse.Namespace, train_dir: Path, test_dir: Path,
            test_ids: list[str]) -> tuple[dict, str]:
    """Train one mode and score the test set -> (figures for results.json, printable table)."""
    load_before = os.getloadavg()[0]
    checkpoint, seconds, cpu_seconds = train_one(mode, args, train_dir)
    load_after = os.getloadavg()[0]
    result = localisation_auc(score_cells(load_cam_model(checkpoint), test_dir, test_ids, args.input_size))
    figures = {"train_seconds": round(seconds, 1), "train_cpu_seconds": round(cpu_seconds, 1),
               "load_average_before_after": [load_before, load_after],
               "mean_within": result.mean_within, "mean_all": result.mean_all,
               "within": result.within, "all": result.all, "n_images": result.n_images, "n_cells": result.n_cells}
    title = (f"\n== {mode} CAM: trained {seconds / 60:.1f} min wall, {cpu_seconds / 60:.1f} min CPU "
             f"(load average {load_before:.1f} -> {load_after:.1f}) ==")
    return figures, format_result(result, title)


def main(argv=None) -> int:
    args = parse_args(argv)
    train_dir = ensure_dataset(args.out / "synth_train", args.train_images, args.synth_size, args.seed, args.workers)
    test_dir = ensure_dataset(args.out / "synth_test", args.test_images, args.synth_size, args.seed + 1000,
                              args.workers)
    test_ids = read_labels(test_dir / "labels.csv")["ID"].tolist()
    report = {"setup": {k: str(v) for k, v in vars(args).items()}, "torch_threads": torch.get_num_threads()}
    modes = args.modes.split(",")
    for mode in modes:
        report[mode], table = measure(mode, args, train_dir, test_dir, test_ids)
        print(table, flush=True)
    atomic_write_text(args.out / "results.json", json.dumps(report, indent=1) + "\n")
    for mode in modes:
        print(f"{mode}: mean ROC-AUC within labelled images {report[mode]['mean_within']:.3f}, "
              f"over all cells {report[mode]['mean_all']:.3f}, {report[mode]['train_seconds'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
