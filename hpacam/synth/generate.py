"""Write a synthetic dataset in the Kaggle HPA layout, with per-cell truth.

Determinism: image i is rendered from `SeedSequence(seed, spawn_key=(i,))` (the i-th child of
`SeedSequence(seed)`), whatever the number of images or workers, and every file is encoded in
memory (cv2 PNG, pandas CSV) and written atomically in image order, so the same seed gives the
same bytes. Nothing here depends on time, the host, or the process that rendered an image.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import cv2
import numpy as np

from hpacam.classes import CHANNELS, CLASS_NAMES, NEGATIVE, NUM_CLASSES
from hpacam.fileio import atomic_write_text
from hpacam.images import write_png
from hpacam.masks import encode_label_image
from hpacam.submission import CellPrediction, format_prediction_string, make_submission_frame, write_submission
from hpacam.synth.hard import NONE, HardCases
from hpacam.synth.render import SyntheticImage, check_bit_depth, check_size, render_image

OUTPUT_FILES = ("labels.csv", "sample_submission.csv", "truth.csv", "stats.json")
OUTPUT_FOLDERS = ("images", "cells", "nuclei")


@dataclass(frozen=True)
class ImageTask:
    seed: int
    index: int
    sizes: tuple[int, ...]
    bit_depth: int
    out_dir: str
    hard: HardCases = NONE


@dataclass(frozen=True)
class ImageRecord:
    """What the dataset files need to know about one written image."""

    image_id: str
    size: int
    image_labels: tuple[int, ...]
    cell_labels: dict[int, tuple[int, ...]]
    mitotic_cells: tuple[int, ...]
    border_cells: tuple[int, ...]
    truth: str  # prediction string: `label 1 mask` per (cell, label)


def image_id_from(seed_sequence: np.random.SeedSequence) -> str:
    """An HPA-style UUID (time-based, like `5c27f04c-bb99-11e8-b2b9-ac1f6b6435d0`) from a seed."""
    words = seed_sequence.generate_state(4, dtype=np.uint32)
    a, b, c, d = (int(w) for w in words)
    year = "11e8" if d & 1 else "11e9"
    return f"{a:08x}-{b >> 16:04x}-{year}-{b & 0xFFFF:04x}-{c:08x}{d >> 16:04x}"


def image_seeds(seed: int, index: int) -> tuple[np.random.SeedSequence, np.random.SeedSequence, np.random.SeedSequence]:
    """(id, size, render) seed sequences of image `index`: the index-th child of SeedSequence(seed)."""
    root = np.random.SeedSequence(seed, spawn_key=(index,))
    id_seq, size_seq, render_seq = root.spawn(3)
    return id_seq, size_seq, render_seq


def truth_string(image: SyntheticImage) -> str:
    masks = encode_label_image(image.cells)
    return format_prediction_string(
        CellPrediction(label, 1.0, masks[cell]) for cell, labels in image.cell_labels.items() for label in labels
    )


def write_image_files(out_dir: Path, image_id: str, image: SyntheticImage) -> None:
    for name in CHANNELS:
        write_png(out_dir / "images" / f"{image_id}_{name}.png", image.channels[name])
    write_png(out_dir / "cells" / f"{image_id}.png", image.cells.astype(np.uint16))
    write_png(out_dir / "nuclei" / f"{image_id}.png", image.nuclei.astype(np.uint16))


def render_task(task: ImageTask) -> ImageRecord:
    """Render one image and write its files (runs in a worker process)."""
    id_seq, size_seq, render_seq = image_seeds(task.seed, task.index)
    image_id = image_id_from(id_seq)
    size = task.sizes[int(np.random.default_rng(size_seq).integers(len(task.sizes)))]
    image = render_image(np.random.default_rng(render_seq), size, bit_depth=task.bit_depth, hard=task.hard)
    if image.n_cells >= 1 << 16:
        raise ValueError(f"{image.n_cells} cells do not fit a 16-bit label image")
    write_image_files(Path(task.out_dir), image_id, image)
    return ImageRecord(image_id=image_id, size=size, image_labels=image.image_labels, cell_labels=image.cell_labels,
                       mitotic_cells=image.mitotic_cells, border_cells=image.border_cells, truth=truth_string(image))


def _init_worker() -> None:
    cv2.setNumThreads(1)  # the pool already uses every core


def check_arguments(n_images, image_sizes, seed, bit_depth, workers) -> tuple[int, tuple[int, ...], int, int, int]:
    if isinstance(n_images, bool) or not isinstance(n_images, (int, np.integer)) or n_images <= 0:
        raise ValueError(f"n_images must be a positive integer, got {n_images!r}")
    if isinstance(image_sizes, (int, np.integer)):
        image_sizes = (image_sizes,)
    sizes = tuple(check_size(size) for size in image_sizes)
    if not sizes:
        raise ValueError("image_sizes is empty")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers <= 0:
        raise ValueError(f"workers must be a positive integer, got {workers!r}")
    return int(n_images), sizes, int(seed), check_bit_depth(bit_depth), int(workers)


def prepare_output(out_dir: Path, overwrite: bool) -> None:
    """Refuse to mix two datasets in one folder; with `overwrite`, remove only our own outputs."""
    existing = [name for name in OUTPUT_FILES + OUTPUT_FOLDERS if (out_dir / name).exists()]
    if existing and not overwrite:
        raise FileExistsError(f"{out_dir} already holds a dataset ({', '.join(existing)}); "
                              "choose an empty folder or pass overwrite=True (--overwrite)")
    for name in OUTPUT_FILES:
        (out_dir / name).unlink(missing_ok=True)
    for folder in OUTPUT_FOLDERS:
        if (out_dir / folder).is_dir():
            for path in (out_dir / folder).glob("*.png"):
                path.unlink()
        (out_dir / folder).mkdir(parents=True, exist_ok=True)


def render_all(tasks: list[ImageTask], workers: int, progress: bool) -> list[ImageRecord]:
    from tqdm import tqdm

    bar = tqdm(total=len(tasks), desc="synth images", unit="img", disable=not progress)
    try:
        if workers == 1:
            records = []
            for task in tasks:
                records.append(render_task(task))
                bar.update()
            return records
        context = multiprocessing.get_context("spawn")  # no inherited cv2/BLAS thread state
        with context.Pool(min(workers, len(tasks)), initializer=_init_worker) as pool:
            records = []
            for record in pool.imap(render_task, tasks, chunksize=1):
                records.append(record)
                bar.update()
            return records
    finally:
        bar.close()


def generate_dataset(out_dir: str | os.PathLike, n_images: int, image_sizes: int | Sequence[int], seed: int,
                     bit_depth: int = 16, workers: int = 1, overwrite: bool = False,
                     progress: bool = True, hard: HardCases = NONE) -> dict:
    """Render `n_images` images into `out_dir` and write the dataset files; returns the statistics.

    `image_sizes` is one size or a list; each image draws its size from it (seeded per image).
    `hard`: segmentation hard cases (hpacam.synth.hard), off by default.
    """
    n_images, sizes, seed, bit_depth, workers = check_arguments(n_images, image_sizes, seed, bit_depth, workers)
    out = Path(out_dir)
    prepare_output(out, overwrite)
    tasks = [ImageTask(seed, i, sizes, bit_depth, str(out), hard) for i in range(n_images)]
    started = time.perf_counter()
    records = render_all(tasks, workers, progress)
    ids = [record.image_id for record in records]
    if len(set(ids)) != len(ids):
        raise RuntimeError("two images drew the same ID; this should not happen with 128-bit IDs")
    write_tables(out, records)
    stats = dataset_stats(records, seed, bit_depth)
    atomic_write_text(out / "stats.json", json.dumps(stats, indent=1) + "\n")
    stats["seconds"] = round(time.perf_counter() - started, 3)  # reported, never written (determinism)
    return stats


def write_tables(out: Path, records: list[ImageRecord]) -> None:
    labels = "".join(f"{r.image_id},{'|'.join(str(label) for label in r.image_labels)}\n" for r in records)
    atomic_write_text(out / "labels.csv", "ID,Label\n" + labels)
    write_submission(make_submission_frame((r.image_id, r.size, r.size, "") for r in records),
                     out / "sample_submission.csv")
    write_submission(make_submission_frame((r.image_id, r.size, r.size, r.truth) for r in records),
                     out / "truth.csv")


def _share(count: int, total: int) -> float:
    return round(count / total, 4) if total else 0.0


def dataset_stats(records: list[ImageRecord], seed: int, bit_depth: int) -> dict:
    """Counts that show how hard and how HPA-like the dataset is (see the package docstring)."""
    per_image = [len(r.cell_labels) for r in records]
    all_cells = [(r, labels) for r in records for labels in r.cell_labels.values()]
    total = len(all_cells)
    lacking = sum(set(labels) != set(r.image_labels) for r, labels in all_cells)
    lacking_specific = sum(bool(set(r.image_labels) - {NEGATIVE} - set(labels)) for r, labels in all_cells)
    multi = [(r, labels) for r, labels in all_cells if len(set(r.image_labels) - {NEGATIVE}) > 1]
    lacking_multi = sum(bool(set(r.image_labels) - {NEGATIVE} - set(labels)) for r, labels in multi)
    image_counts = Counter(label for r in records for label in r.image_labels)
    cell_counts = Counter(label for _, labels in all_cells for label in labels)
    return {
        "images": len(records),
        "seed": seed,
        "bit_depth": bit_depth,
        "image_sizes": {str(size): count for size, count in sorted(Counter(r.size for r in records).items())},
        "cells": total,
        "cells_per_image": {"mean": round(float(np.mean(per_image)), 2), "min": int(min(per_image)),
                            "max": int(max(per_image))},
        "share_cells_lacking_an_image_label": _share(lacking, total),
        "share_cells_lacking_a_specific_image_label": _share(lacking_specific, total),
        "share_cells_lacking_a_label_in_multilabel_images": _share(lacking_multi, len(multi)),
        "share_negative_cells": _share(cell_counts.get(NEGATIVE, 0), total),
        "share_border_cells": _share(sum(len(r.border_cells) for r in records), total),
        "mitotic_cells": sum(len(r.mitotic_cells) for r in records),
        "images_with_mitotic_cells": sum(bool(r.mitotic_cells) for r in records),
        "label_frequency_images": {CLASS_NAMES[k]: image_counts.get(k, 0) for k in range(NUM_CLASSES)},
        "label_frequency_cells": {CLASS_NAMES[k]: cell_counts.get(k, 0) for k in range(NUM_CLASSES)},
    }


def format_stats(stats: dict) -> str:
    """A short human-readable summary for the command line."""
    cpi = stats["cells_per_image"]
    lines = [
        f"images: {stats['images']}  sizes: {stats['image_sizes']}  cells: {stats['cells']} "
        f"(per image mean {cpi['mean']}, min {cpi['min']}, max {cpi['max']})",
        f"cells lacking an image label: {stats['share_cells_lacking_an_image_label']:.1%} "
        f"(a specific one: {stats['share_cells_lacking_a_specific_image_label']:.1%}; "
        f"in multi-label images: {stats['share_cells_lacking_a_label_in_multilabel_images']:.1%})",
        f"negative cells: {stats['share_negative_cells']:.1%}  border-cut cells: {stats['share_border_cells']:.1%}  "
        f"mitotic cells: {stats['mitotic_cells']} in {stats['images_with_mitotic_cells']} images",
        "label     images  cells",
    ]
    for k, name in enumerate(CLASS_NAMES):
        lines.append(f"{k:>2} {name[:28]:<28} {stats['label_frequency_images'][name]:>6} "
                     f"{stats['label_frequency_cells'][name]:>6}")
    if "seconds" in stats:
        lines.append(f"time: {stats['seconds']:.1f} s ({stats['seconds'] / stats['images']:.2f} s per image)")
    return "\n".join(lines)
