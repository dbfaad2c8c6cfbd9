"""Nuclei F1 of the segmenter on one real grayscale nuclei image, given as the blue channel.

    python bench/real_nuclei.py IMAGE MASK [key.sub=value ...]

IMAGE is any 2-D grayscale nuclei image (tif, png), MASK its truth label image (0 = background).
The image goes in as a new user would give it: blue = IMAGE, red and yellow empty (zeros), green
unused. Prints the number of nuclei found, the estimated nucleus diameter, and precision, recall
and F1 of one-to-one nucleus matches at IoU >= 0.5 (and 0.6). Nothing is tuned here: it only
measures. The figure in docs/segmentation.md is for StarDist's example image
`stardist/data/images/img2d.tif` with `mask2d.tif` (a DSB-2018 fluorescence nuclei image,
125 nuclei), which is not shipped with this project.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np


def read_plane(path: Path) -> np.ndarray:
    """One 2-D plane from a tif or png (a clear error for anything else)."""
    from skimage import io

    plane = np.asarray(io.imread(str(path)))
    if plane.ndim == 3 and plane.shape[-1] in (3, 4):
        plane = plane[..., :3].max(axis=-1)
    if plane.ndim != 2:
        raise ValueError(f"{path}: expected a 2-D grayscale image, got shape {plane.shape}")
    return plane


def f1_at(truth: np.ndarray, pred: np.ndarray, threshold: float) -> dict:
    """Precision, recall and F1 of one-to-one matches at `threshold` IoU."""
    from hpacam.segmentation.quality import match_labels

    m = match_labels(truth, pred, threshold)
    precision = m.matched / m.n_pred if m.n_pred else 0.0
    recall = m.matched / m.n_truth if m.n_truth else 0.0
    f1 = 2 * m.matched / (m.n_pred + m.n_truth) if m.n_pred + m.n_truth else 0.0
    return {"threshold": threshold, "n_truth": m.n_truth, "n_pred": m.n_pred, "matched": m.matched,
            "precision": precision, "recall": recall, "f1": f1}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", type=Path)
    parser.add_argument("mask", type=Path)
    parser.add_argument("overrides", nargs="*", metavar="key.sub=value", help="segmentation config overrides")
    args = parser.parse_args(argv)
    from hpacam.config import load_config
    from hpacam.segmentation import SegmentationConfig, segment

    cfg = load_config(SegmentationConfig, None, list(args.overrides))
    blue = read_plane(args.image)
    truth = read_plane(args.mask).astype(np.int64)
    if truth.shape != blue.shape:
        raise ValueError(f"mask {truth.shape} and image {blue.shape} differ in shape")
    empty = np.zeros_like(blue)
    start = time.perf_counter()
    result = segment({"red": empty, "yellow": empty, "blue": blue, "green": empty}, cfg)
    seconds = time.perf_counter() - start
    for threshold in (0.5, 0.6):
        r = f1_at(truth, result.nuclei, threshold)
        print(f"IoU>={threshold}: truth {r['n_truth']}, found {r['n_pred']}, matched {r['matched']}; "
              f"precision {r['precision']:.3f} recall {r['recall']:.3f} F1 {r['f1']:.3f}")
    print(f"segment: {seconds:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
