"""Derive `label_stats.json`, the image-label distribution the generator draws from.

The generator must look like HPA at the image level, so it draws each image's label set from the
real Kaggle training set (21,806 images, 372 distinct label sets once duplicates inside a row
are removed). The full table of label sets with their counts is small (a few kB), so we store
all of it rather than an approximation: sampling a stored combination reproduces both the
marginals and the co-occurrences (e.g. Nucleoplasm + Cytosol) exactly.

The generator reads only the committed JSON file; `/work/shared` is needed only to regenerate it:

    python -m hpacam.synth.stats --train /work/shared/hpa-labels/kaggle_train.csv \
        --out hpacam/synth/label_stats.json
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from pathlib import Path
from typing import Iterable

from hpacam.classes import CLASS_NAMES, NEGATIVE, NUM_CLASSES
from hpacam.fileio import atomic_write_text

DEFAULT_STATS_PATH = Path(__file__).with_name("label_stats.json")


def parse_label_field(text: str, where: str) -> tuple[int, ...]:
    """`8|5|0` -> (0, 5, 8): sorted, duplicates removed (a few Kaggle rows repeat a label)."""
    try:
        labels = {int(part) for part in str(text).split("|") if part.strip() != ""}
    except ValueError:
        raise ValueError(f"{where}: label field {text!r} is not a '|'-joined list of integers") from None
    if not labels:
        raise ValueError(f"{where}: empty label field")
    bad = sorted(label for label in labels if not 0 <= label < NUM_CLASSES)
    if bad:
        raise ValueError(f"{where}: labels {bad} outside 0..{NUM_CLASSES - 1}")
    return tuple(sorted(labels))


def read_label_sets(train_csv: str | os.PathLike) -> list[tuple[int, ...]]:
    """Every image's label set from a Kaggle `train.csv` (columns ID, Label)."""
    import pandas as pd

    path = Path(train_csv)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such label file")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    if "Label" not in frame.columns:
        raise ValueError(f"{path}: no 'Label' column (columns: {list(frame.columns)})")
    return [parse_label_field(text, f"{path} row {row + 2}") for row, text in enumerate(frame["Label"])]


def summarise_label_sets(label_sets: Iterable[tuple[int, ...]], source: str) -> dict:
    """The statistics file's content: all label sets with counts, plus marginals for reading."""
    label_sets = list(label_sets)
    if not label_sets:
        raise ValueError("no label sets to summarise")
    combos = Counter(label_sets)
    marginals = Counter(label for labels in label_sets for label in labels)
    sizes = Counter(len(labels) for labels in label_sets)
    ordered = sorted(combos.items(), key=lambda item: (-item[1], item[0]))
    return {
        "source": source,
        "n_images": len(label_sets),
        "class_names": list(CLASS_NAMES),
        "negative_label": NEGATIVE,
        "label_image_counts": {str(k): marginals.get(k, 0) for k in range(NUM_CLASSES)},
        "labels_per_image": {str(k): sizes[k] for k in sorted(sizes)},
        "combinations": [[list(labels), count] for labels, count in ordered],
    }


def write_label_stats(train_csv: str | os.PathLike, out: str | os.PathLike) -> dict:
    stats = summarise_label_sets(read_label_sets(train_csv), source=Path(train_csv).name)
    atomic_write_text(out, format_stats_json(stats))
    return stats


def format_stats_json(stats: dict) -> str:
    """JSON with one combination per line: small, diffable, still standard JSON."""
    head = {k: v for k, v in stats.items() if k != "combinations"}
    text = json.dumps(head, indent=1)[:-2]
    rows = ",\n  ".join(json.dumps(row) for row in stats["combinations"])
    return f'{text},\n "combinations": [\n  {rows}\n ]\n}}\n'


def load_label_stats(path: str | os.PathLike = DEFAULT_STATS_PATH) -> dict:
    """Read and check a statistics file (the packaged one by default)."""
    path = Path(path)
    stats = json.loads(path.read_text())
    combos = stats.get("combinations")
    if not combos:
        raise ValueError(f"{path}: no 'combinations' table")
    for labels, count in combos:
        if count <= 0 or not labels or any(not 0 <= label < NUM_CLASSES for label in labels):
            raise ValueError(f"{path}: bad combination entry {labels!r}: {count!r}")
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hpacam.synth.stats", description=__doc__.split("\n")[0])
    parser.add_argument("--train", required=True, help="Kaggle train.csv (ID,Label)")
    parser.add_argument("--out", default=str(DEFAULT_STATS_PATH), help="output JSON (default: the packaged file)")
    args = parser.parse_args(argv)
    stats = write_label_stats(args.train, args.out)
    print(f"{args.out}: {stats['n_images']} images, {len(stats['combinations'])} label sets")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
