"""The typical nucleus diameter of an image, measured from its blue channel.

A fixed diameter fails as soon as the magnification or the binning differs from the images it
was set on (a 10x field of 125 small nuclei is not an HPA 63x field of 20), and every length
of the classic backend follows from it. So it is measured: the blue channel (already at the
working resolution) is thresholded at Otsu's level above its background (bright nuclei are
enough to measure the size; a threshold low enough for dim ones merges neighbours), holes are filled,
and each blob gets a diameter: its equivalent diameter, capped by twice its largest inscribed
radius (INSCRIBED_CAP; a clump of touching nuclei is no wider than one nucleus across, so the cap
gives a clump the diameter of its members). The estimate is the area-weighted median over the
blobs, so a scatter of noise specks or debris does not pull it down.
"""

from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

MIN_BLOB_PX = 9  # smaller blobs at the working resolution are noise, not nuclei
INSCRIBED_CAP = 1.0  # a round nucleus: equivalent diameter = 2 x inscribed radius; ovals a bit more
DIAMETER_RANGE = (0.012, 0.3)  # of the longer working side: the estimate is clipped to this


def otsu_foreground(blue: np.ndarray) -> np.ndarray | None:
    """Pixels above Otsu's level of the lightly smoothed blue, holes filled; None for a flat image."""
    smoothed = cv2.GaussianBlur(blue, (0, 0), 1.0)
    if float(smoothed.max()) <= float(smoothed.min()):
        return None
    return ndimage.binary_fill_holes(smoothed > threshold_otsu(smoothed))


def blob_diameters(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(diameter, area) of each blob of `mask` of at least MIN_BLOB_PX pixels."""
    labels, n = ndimage.label(mask)
    if n == 0:
        return np.zeros(0), np.zeros(0)
    areas = np.bincount(labels.ravel(), minlength=n + 1)[1:].astype(np.float64)
    distance = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    inscribed = np.asarray(ndimage.maximum(distance, labels, np.arange(1, n + 1)), dtype=np.float64)
    diameters = np.minimum(np.sqrt(4.0 * areas / np.pi), INSCRIBED_CAP * 2.0 * inscribed)
    keep = areas >= MIN_BLOB_PX
    return diameters[keep], areas[keep]


def weighted_median(values: np.ndarray, weights: np.ndarray) -> float:
    order = np.argsort(values)
    cumulative = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cumulative, 0.5 * cumulative[-1])])


def estimate_nucleus_px(blue: np.ndarray) -> float | None:
    """Typical nucleus diameter in pixels of `blue`, or None when no blob stands out."""
    mask = otsu_foreground(np.asarray(blue, dtype=np.float32))
    if mask is None:
        return None
    diameters, areas = blob_diameters(mask)
    if len(diameters) == 0:
        return None
    low, high = (f * max(blue.shape) for f in DIAMETER_RANGE)
    return float(np.clip(weighted_median(diameters, areas), low, high))
