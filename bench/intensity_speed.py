"""Vectorised per-cell intensities vs the per-cell, per-class loop on a 2048 px-like case.

Prints the two timings and their ratio (issue 6 asks for at least 30x). Usage:
    python bench/intensity_speed.py [--cells 40] [--size 2048] [--map-size 640] [--repeats 5]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from scipy import ndimage

from hpacam.regressor.intensities import activate, cell_intensities, cell_intensities_loop, present_cells


def voronoi_cells(size: int, n_cells: int, rng: np.random.Generator) -> np.ndarray:
    """A label image of `n_cells` touching cells (Voronoi regions) with some background."""
    seeds = np.zeros((size, size), dtype=bool)
    points = rng.integers(0, size, (n_cells, 2))
    seeds[points[:, 0], points[:, 1]] = True
    distance, (rows, cols) = ndimage.distance_transform_edt(~seeds, return_indices=True)
    ids = np.zeros((size, size), dtype=np.int32)
    ids[points[:, 0], points[:, 1]] = np.arange(1, n_cells + 1)
    labels = ids[rows, cols]
    labels[distance > size / np.sqrt(n_cells) * 0.6] = 0
    return labels


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=40)
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--map-size", type=int, default=640)
    parser.add_argument("--classes", type=int, default=19)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    labels = voronoi_cells(args.size, args.cells, rng)
    maps = activate(rng.normal(size=(args.classes, args.map_size, args.map_size)).astype(np.float32), "swish")
    probs = rng.random(args.classes).astype(np.float32)
    cells = present_cells(labels)  # known from segmentation in the pipeline: not part of either timing
    fast = best_of(lambda: cell_intensities(labels, maps, probs, cells), args.repeats)
    slow = best_of(lambda: cell_intensities_loop(labels, maps, probs, cells), max(1, args.repeats // 2))
    print(f"case: {args.size} px labels with {len(np.unique(labels)) - 1} cells, "
          f"{args.classes} maps of {args.map_size} px")
    print(f"vectorised: {fast * 1000:.1f} ms   loop: {slow * 1000:.1f} ms   speed-up: {slow / fast:.1f}x")


if __name__ == "__main__":
    main()
