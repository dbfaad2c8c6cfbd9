"""Pictures for a person: the image with its cells outlined and labelled, beside one class map."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from hpacam.classes import CLASS_NAMES
from hpacam.images import read_image, write_png

PANEL = 640


def composite(folder: Path, image_id: str, size: int = PANEL) -> np.ndarray:
    """RGB uint8 view in the HPA style: red + yellow/2 as red, green + yellow/2 as green, blue."""
    red, green, blue, yellow = np.moveaxis(read_image(folder, image_id, "rgby", size=size), -1, 0)
    planes = [np.clip(c / max(np.percentile(c, 99.8), 1e-6), 0, 1) for c in (red, green, blue, yellow)]
    rgb = np.stack([np.clip(planes[0] + planes[3] / 2, 0, 1), np.clip(planes[1] + planes[3] / 2, 0, 1), planes[2]], -1)
    return (rgb * 255).astype(np.uint8)


def outline(rgb: np.ndarray, cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    small = cv2.resize(cells.astype(np.int32), rgb.shape[1::-1], interpolation=cv2.INTER_NEAREST)
    edges = (small != np.roll(small, 1, 0)) | (small != np.roll(small, 1, 1))
    out = rgb.copy()
    out[edges & (small > 0)] = (255, 255, 255)
    return out, small


def label_cells(rgb: np.ndarray, small: np.ndarray, cell_probs: np.ndarray, top: int = 2) -> np.ndarray:
    """Write each cell's top classes (id:confidence) at its centroid."""
    out = rgb.copy()
    for row, cell in enumerate(range(1, cell_probs.shape[0] + 1)):
        ys, xs = np.nonzero(small == cell)
        if not len(ys):
            continue
        best = np.argsort(cell_probs[row])[::-1][:top]
        for line, label in enumerate(best):
            text = f"{label}:{cell_probs[row, label]:.2f}"
            origin = (int(xs.mean()) - 20, int(ys.mean()) + 12 * line)
            cv2.putText(out, text, origin, cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 0), 1, cv2.LINE_AA)
    return out


def heat(class_map: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    norm = (class_map - class_map.min()) / max(float(np.ptp(class_map)), 1e-6)
    coloured = cv2.applyColorMap((norm * 255).astype(np.uint8), cv2.COLORMAP_JET)[:, :, ::-1]
    return cv2.resize(coloured, size[::-1], interpolation=cv2.INTER_LINEAR)


def write_picture(path: Path, folder: Path, result, class_index: int = -1) -> Path:
    """Left: cells outlined with their top labels; right: a class map over the image."""
    rgb = composite(folder, result.image_id)
    outlined, small = outline(rgb, result.cells)
    left = label_cells(outlined, small, result.cell_probs)
    label = int(np.argmax(result.image_probs)) if class_index < 0 else class_index
    right = (0.5 * rgb + 0.5 * heat(result.maps[label], rgb.shape[:2])).astype(np.uint8)
    cv2.putText(right, f"class {label}: {CLASS_NAMES[label]}", (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                (255, 255, 255), 1, cv2.LINE_AA)
    picture = np.concatenate([left, right], axis=1)[:, :, ::-1]
    return write_png(path, picture)
