"""Vectorised drawing primitives shared by the layout and the channel patterns.

Everything here works on float32 images at the render resolution and draws many objects per call
(spots, circles, filament paths) so that no per-pixel Python loop is ever needed: a pattern with
a thousand vesicles costs one `np.add.at` and one Gaussian blur.
"""

from __future__ import annotations

import cv2
import numpy as np

SUBPIXEL_BITS = 2  # cv2 drawing precision: coordinates are given in 1/4 pixel
_SUBPIXEL = float(1 << SUBPIXEL_BITS)


def gaussian_blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur with reflected borders (no dark frame at the image edge)."""
    if sigma <= 0:
        return image
    return cv2.GaussianBlur(image, (0, 0), sigmaX=float(sigma), sigmaY=float(sigma),
                            borderType=cv2.BORDER_REFLECT)


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian random field with correlation length `sigma` pixels.

    Large correlation lengths are generated on a coarse grid and upsampled: the field is smooth
    anyway, and blurring a full-size image with a wide kernel would dominate the render time.
    """
    height, width = shape
    factor = max(1.0, sigma / 3.0)
    small = (max(2, int(np.ceil(height / factor)) + 2), max(2, int(np.ceil(width / factor)) + 2))
    field = gaussian_blur(rng.standard_normal(small, dtype=np.float32), sigma / factor)
    if factor > 1.0:
        field = cv2.resize(field, (int(round(small[1] * factor)), int(round(small[0] * factor))),
                           interpolation=cv2.INTER_LINEAR)
    field = np.ascontiguousarray(field[:height, :width])
    std = float(field.std())
    return (field - float(field.mean())) / (std if std > 0 else 1.0)


def render_spots(shape: tuple[int, int], ys: np.ndarray, xs: np.ndarray, amplitudes: np.ndarray,
                 sigma: float) -> np.ndarray:
    """Gaussian spots of one width: impulses blurred once; each spot peaks near its amplitude."""
    canvas = np.zeros(shape, dtype=np.float32)
    yi = np.clip(np.rint(ys).astype(np.int64), 0, shape[0] - 1)
    xi = np.clip(np.rint(xs).astype(np.int64), 0, shape[1] - 1)
    inside = (ys >= 0) & (ys < shape[0]) & (xs >= 0) & (xs < shape[1])
    np.add.at(canvas, (yi[inside], xi[inside]), np.asarray(amplitudes, dtype=np.float32)[inside])
    return gaussian_blur(canvas, sigma) * np.float32(2.0 * np.pi * sigma * sigma)


def render_spots_varied(shape: tuple[int, int], ys: np.ndarray, xs: np.ndarray, amplitudes: np.ndarray,
                        sigmas: np.ndarray, n_bins: int = 3) -> np.ndarray:
    """Spots of varied widths, grouped into a few width bins (one blur per bin)."""
    canvas = np.zeros(shape, dtype=np.float32)
    if len(ys) == 0:
        return canvas
    edges = np.quantile(sigmas, np.linspace(0, 1, n_bins + 1))
    bins = np.clip(np.searchsorted(edges, sigmas, side="right") - 1, 0, n_bins - 1)
    for b in range(n_bins):
        chosen = bins == b
        if chosen.any():
            canvas += render_spots(shape, ys[chosen], xs[chosen], amplitudes[chosen], float(sigmas[chosen].mean()))
    return canvas


def paint_discs(shape: tuple[int, int], ys: np.ndarray, xs: np.ndarray, radii: np.ndarray,
                value: float = 1.0) -> np.ndarray:
    """Filled discs (sub-pixel centres) on a float canvas; overlapping discs do not add up."""
    canvas = np.zeros(shape, dtype=np.float32)
    for y, x, r in zip(ys, xs, radii):  # a handful of discs per cell: cv2 does the pixels
        cv2.circle(canvas, (int(round(x * _SUBPIXEL)), int(round(y * _SUBPIXEL))),
                   int(round(max(r, 0.5) * _SUBPIXEL)), float(value), -1, cv2.LINE_8, SUBPIXEL_BITS)
    return canvas


def random_walks(rng: np.random.Generator, starts: np.ndarray, headings: np.ndarray, n_steps: int,
                 step: float, turn_sd: float) -> np.ndarray:
    """Persistent random walks (filaments): (n, n_steps + 1, 2) points in (y, x).

    The heading changes by a Gaussian turn at every step, so `turn_sd` sets how wavy a
    filament is (microtubules: nearly straight; intermediate filaments: wavy).
    """
    n = len(starts)
    turns = rng.normal(0.0, turn_sd, size=(n, n_steps)).astype(np.float32)
    angles = headings[:, None].astype(np.float32) + np.cumsum(turns, axis=1)
    steps = np.stack([np.sin(angles), np.cos(angles)], axis=-1) * np.float32(step)
    points = np.concatenate([np.zeros((n, 1, 2), np.float32), np.cumsum(steps, axis=1)], axis=1)
    return points + starts[:, None, :].astype(np.float32)


def clip_paths_to_cells(paths: np.ndarray, owners: np.ndarray, cells: np.ndarray) -> list[np.ndarray]:
    """Cut each path at the first point that leaves its owner cell (or the image).

    A filament belongs to one cell; letting it run into a neighbour would put one cell's
    pattern into another cell's ground truth.
    """
    if len(paths) == 0:
        return []
    height, width = cells.shape
    yi = np.rint(paths[..., 0]).astype(np.int64)
    xi = np.rint(paths[..., 1]).astype(np.int64)
    in_image = (yi >= 0) & (yi < height) & (xi >= 0) & (xi < width)
    lookup = cells[np.clip(yi, 0, height - 1), np.clip(xi, 0, width - 1)]
    inside = in_image & (lookup == owners[:, None])
    inside_all = inside.all(axis=1)
    first_out = np.where(inside_all, inside.shape[1], np.argmin(inside, axis=1))
    return [paths[i, :k] for i, k in enumerate(first_out) if k >= 2]


def draw_paths(shape: tuple[int, int], paths: list[np.ndarray], value: float = 1.0,
               thickness: int = 1) -> np.ndarray:
    """Polylines (points in (y, x)) on a float canvas."""
    canvas = np.zeros(shape, dtype=np.float32)
    if paths:
        polylines = [np.rint(p[:, ::-1] * _SUBPIXEL).astype(np.int32) for p in paths]
        cv2.polylines(canvas, polylines, False, float(value), int(thickness), cv2.LINE_8, SUBPIXEL_BITS)
    return canvas


def smoothstep(x: np.ndarray) -> np.ndarray:
    """0 below 0, 1 above 1, smooth in between."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)
