"""Segmentation quality and speed on freshly generated synthetic images, by image size.

    python bench/segmentation.py                       # the figures quoted in docs/segmentation.md
    python bench/segmentation.py --n-images 5 --sizes 2048   # a quicker look
    python bench/segmentation.py --sizes 2048 --cases default,spread,clumps,texture,blur,dense,sparse,small,all

1. Generates one synthetic set per size with `hpacam.synth` (seeds distinct from those the
   classic backend's settings were tuned on: 1000-1024), into OUT/synth-<size> (reused if there);
   with `--cases`, one set per size and hard case (hpacam.synth.hard), OUT/synth-<size>-<case>.
2. For each size, a fresh process with one thread (OMP_NUM_THREADS=1, cv2.setNumThreads(1))
   reads every image's channel PNGs (timed separately) and runs the whole segmentation call
   `segment(channels, cfg)` (timed: working-resolution resize, nuclei, cells, full-size labels,
   border flags), without the cache.
3. Compares each result with the truth `cells/{ID}.png` (hpacam.segmentation.quality: one-to-one
   matches at IoU >= 0.6, mean matched IoU, splits, merges, missed; nuclei recall against
   `nuclei/{ID}.png`) and prints a table; peak
   memory is the traced numpy peak inside the segmentation call and the process's peak RSS.
   Everything is also written to OUT/results.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "data" / "bench" / "segmentation")
    parser.add_argument("--sizes", default="1728,2048,3072,4096", help="comma-separated image sizes")
    parser.add_argument("--n-images", type=int, default=20, help="images per size")
    parser.add_argument("--seed", type=int, default=7, help="synthetic set seed (set for size S: seed * 10000 + S)")
    parser.add_argument("--workers", type=int, default=2, help="processes for generating the images only")
    parser.add_argument("--cases", default="default", help="comma-separated hard cases of hpacam.synth.hard.CASES")
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="segmentation config overrides")
    return parser.parse_args(argv)


def ensure_dataset(folder: Path, n_images: int, size: int, seed: int, workers: int, case: str = "default") -> Path:
    from hpacam.synth import generate_dataset
    from hpacam.synth.hard import hard_case

    if not (folder / "cells").is_dir() or len(list((folder / "cells").glob("*.png"))) != n_images:
        generate_dataset(folder, n_images, [size], seed, workers=workers, overwrite=True, progress=False,
                         hard=hard_case(case))
    return folder


def measure_size(folder: str, overrides: list[str]) -> dict:
    """Runs in a fresh single-threaded process: read, segment and score every image of one set."""
    import resource
    import tracemalloc

    import cv2
    import numpy as np

    cv2.setNumThreads(1)
    from hpacam.config import load_config
    from hpacam.images import list_image_ids
    from hpacam.segmentation import SegmentationConfig, make_backend, read_channels, segment
    from hpacam.images import read_label_png
    from hpacam.segmentation.quality import match_labels, summarise

    cfg = load_config(SegmentationConfig, None, overrides)
    backend = make_backend(cfg)
    images = Path(folder) / "images"
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    read_s, segment_s, traced_mb, matches, nuclei = [], [], [], [], []
    for image_id in list_image_ids(images):
        start = time.perf_counter()
        channels = read_channels(images, image_id, backend.channels)
        read_s.append(time.perf_counter() - start)
        tracemalloc.start()
        start = time.perf_counter()
        result = segment(channels, cfg, backend)
        segment_s.append(time.perf_counter() - start)
        traced_mb.append(tracemalloc.get_traced_memory()[1] / 2 ** 20)
        tracemalloc.stop()
        truth = read_label_png(Path(folder) / "cells" / f"{image_id}.png")
        matches.append(match_labels(truth, result.cells))
        nuclei.append(match_labels(read_label_png(Path(folder) / "nuclei" / f"{image_id}.png"), result.nuclei))
    report = summarise(matches)
    return {
        "quality": report.to_dict(),
        "nuclei_recall": summarise(nuclei).recall,
        "read_s": float(np.mean(read_s)),
        "segment_s_mean": float(np.mean(segment_s)),
        "segment_s_median": float(np.median(segment_s)),
        "segment_s_max": float(np.max(segment_s)),
        "traced_peak_mb": float(np.max(traced_mb)),
        "rss_peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "rss_before_mb": rss_before,
    }


def format_table(results: dict[tuple[int, str], dict]) -> str:
    head = ("| size | case | images | truth cells | matched (IoU>=0.6) | nuclei matched | mean IoU | splits | "
            "merges | missed | read PNGs s/img | segment s/img mean (median, max) | peak MB traced / RSS |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for (size, case), r in sorted(results.items()):
        q = r["quality"]
        lines.append(
            f"| {size} | {case} | {q['n_images']} | {q['n_truth']} | {q['matched']} ({100 * q['recall']:.1f}%) | "
            f"{100 * r['nuclei_recall']:.1f}% | "
            f"{q['mean_iou']:.3f} | {q['splits']} | {q['merges']} | {q['missed']} | {r['read_s']:.2f} | "
            f"{r['segment_s_mean']:.2f} ({r['segment_s_median']:.2f}, {r['segment_s_max']:.2f}) | "
            f"{r['traced_peak_mb']:.0f} / {r['rss_peak_mb']:.0f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the spawned measuring processes
    sizes = [int(s) for s in args.sizes.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    context = multiprocessing.get_context("spawn")
    cases = args.cases.split(",")
    for size in sizes:
        for case in cases:
            name = f"synth-{size}" if case == "default" else f"synth-{size}-{case}"
            folder = ensure_dataset(args.out / name, args.n_images, size, args.seed * 10000 + size, args.workers, case)
            with context.Pool(1) as pool:  # a fresh process per set: clean peak RSS, one thread
                results[size, case] = pool.apply(measure_size, (str(folder), list(args.overrides)))
            print(f"{size} {case}: {json.dumps(results[size, case]['quality'])}", file=sys.stderr)
    table = format_table(results)
    print(table)
    from hpacam.fileio import atomic_write_text

    atomic_write_text(args.out / "results.json", json.dumps(
        {"sets": {f"{size}-{case}": v for (size, case), v in results.items()}, "n_images": args.n_images,
         "seed": args.seed, "cases": cases,
         "overrides": args.overrides, "cpu_count": os.cpu_count()}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
