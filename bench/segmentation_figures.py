"""Pictures of the segmentation hard cases for docs/segmentation.md.

    python bench/segmentation_figures.py [--out docs/images/segmentation-hard-cases.jpg]

Renders one synthetic image per hard case (hpacam.synth.hard, seed 5, 1024 px), segments it
with the default classic settings and draws, on the blue channel (gamma 0.5 so dim nuclei show),
the truth nuclei in green and the found nuclei in magenta; each tile is titled with the case and
the image's cell match rate at IoU >= 0.6. Tiles go side by side, four per row.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
CASES = ("default", "spread", "clumps", "texture", "blur", "dense", "all", "clumps-spread")
TILE = 384


def outline(labels: np.ndarray) -> np.ndarray:
    """Pixels on the edge of a label region (a neighbour with another label)."""
    edge = np.zeros(labels.shape, bool)
    edge[:, 1:] |= labels[:, 1:] != labels[:, :-1]
    edge[1:] |= labels[1:] != labels[:-1]
    return edge & (labels > 0)


def tile(case: str, seed: int, size: int) -> np.ndarray:
    """One titled picture of `case`: blue, truth nuclei (green), found nuclei (magenta)."""
    from hpacam.segmentation import segment
    from hpacam.segmentation.quality import match_labels
    from hpacam.synth import render_image
    from hpacam.synth.hard import hard_case

    image = render_image(seed, size, hard=hard_case(case))
    result = segment(image.channels)
    rate = match_labels(image.cells, result.cells)
    blue = image.channels["blue"].astype(np.float32)
    blue = np.clip((blue - np.percentile(blue, 1)) / (np.percentile(blue, 99.8) - np.percentile(blue, 1)), 0, 1)
    small = cv2.resize(np.sqrt(blue), (TILE, TILE), interpolation=cv2.INTER_AREA)
    picture = (np.dstack([small, 0.35 * small, 0.35 * small]) * 255).astype(np.uint8)  # BGR: blue
    for labels, colour in ((image.nuclei, (0, 220, 0)), (result.nuclei, (255, 0, 255))):
        edge = outline(cv2.resize(labels.astype(np.int32), (TILE, TILE), interpolation=cv2.INTER_NEAREST))
        picture[edge] = colour
    title = f"{case}: {rate.matched}/{rate.n_truth} cells"
    cv2.putText(picture, title, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 1, cv2.LINE_AA)
    return picture


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images" / "segmentation-hard-cases.jpg")
    parser.add_argument("--seed", type=int, default=5)
    parser.add_argument("--size", type=int, default=1024)
    args = parser.parse_args(argv)
    tiles = [tile(case, args.seed, args.size) for case in CASES]
    rows = [np.hstack(tiles[i:i + 4]) for i in range(0, len(tiles), 4)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(args.out), np.vstack(rows), [cv2.IMWRITE_JPEG_QUALITY, 90])
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
