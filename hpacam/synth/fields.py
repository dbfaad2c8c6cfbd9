"""Per-pixel geometric fields derived once from a layout and shared by every channel.

Patterns are described in terms of these fields (distance to the cell edge, depth inside the
nucleus, distance from the nucleus, cytoplasm thickness), so each pattern is a few array
expressions instead of per-cell drawing code.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np
from scipy import ndimage

from hpacam.synth.drawing import gaussian_blur, paint_discs, smoothstep
from hpacam.synth.layout import Layout


def per_cell(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Paint one value per cell: values[i - 1] on the pixels of cell i, 0 on background."""
    table = np.zeros(len(values) + 1, dtype=np.float32)
    table[1:] = values
    return table[labels]


def label_boundaries(labels: np.ndarray) -> np.ndarray:
    """Pixels that have a 4-neighbour with a different label (both sides of every border)."""
    boundary = np.zeros(labels.shape, dtype=bool)
    horizontal = labels[:, 1:] != labels[:, :-1]
    vertical = labels[1:, :] != labels[:-1, :]
    boundary[:, 1:] |= horizontal
    boundary[:, :-1] |= horizontal
    boundary[1:, :] |= vertical
    boundary[:-1, :] |= vertical
    return boundary


def distance_inside(labels: np.ndarray) -> np.ndarray:
    """Distance of every labelled pixel to the nearest border of its own region (0 outside)."""
    interior = (labels > 0) & ~label_boundaries(labels)
    return cv2.distanceTransform(interior.astype(np.uint8), cv2.DIST_L2, 5)


@dataclass
class Fields:
    layout: Layout
    cell_edge: np.ndarray  # distance to the own cell's border (shared border or background)
    nucleus_depth: np.ndarray  # inside nuclei: distance to the nucleus edge
    nucleus_distance: np.ndarray  # distance to the nearest nucleus pixel (0 inside nuclei)
    in_nucleus: np.ndarray  # bool
    cytoplasm: np.ndarray  # bool: in a cell, outside its nucleus
    thickness: np.ndarray  # cytoplasm height profile in [0, 1]: thin at edges, thick near the nucleus
    nucleoli: np.ndarray  # soft nucleolus map in [0, 1]
    nucleus_radius: np.ndarray  # per pixel: the mean nucleus radius of the pixel's cell
    boxes: list = field(default_factory=list)  # bounding box of every cell

    @property
    def shape(self) -> tuple[int, int]:
        return self.layout.shape

    @property
    def unit(self) -> float:
        return self.layout.unit

    def cell_box(self, cell_id: int) -> tuple[slice, slice]:
        return self.boxes[cell_id - 1]

    def sample_pixels(self, rng: np.random.Generator, cell_id: int, region: str, count: int,
                      weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """`count` random pixel positions (sub-pixel jittered) in one cell's nucleus or cytoplasm.

        `weights` is an optional full-image map giving the relative density.
        """
        box = self.cell_box(cell_id)
        own = self.layout.cells[box] == cell_id
        mask = own & (self.in_nucleus[box] if region == "nucleus" else self.cytoplasm[box])
        ys, xs = np.nonzero(mask)
        if len(ys) == 0 or count <= 0:
            return np.zeros(0), np.zeros(0)
        p = None
        if weights is not None:
            w = weights[box][ys, xs].astype(np.float64) + 1e-6
            p = w / w.sum()
        pick = rng.choice(len(ys), size=count, p=p)
        jitter = rng.uniform(-0.5, 0.5, size=(2, count))
        return ys[pick] + box[0].start + jitter[0], xs[pick] + box[1].start + jitter[1]


def nucleoli_map(layout: Layout) -> np.ndarray:
    """Soft-edged nucleoli (discs blurred by ~1.2 units), clipped to their nucleus."""
    rows = layout.nucleoli
    discs = paint_discs(layout.shape, rows[:, 1], rows[:, 2], rows[:, 3]) if len(rows) else \
        np.zeros(layout.shape, np.float32)
    soft = gaussian_blur(discs, 1.2 * layout.unit)
    return np.clip(soft, 0.0, 1.0) * (layout.nuclei > 0)


def thickness_profile(layout: Layout, cell_edge: np.ndarray, nucleus_distance: np.ndarray,
                      nucleus_radius: np.ndarray) -> np.ndarray:
    """How thick the cell is at each pixel, which scales every cytoplasmic stain.

    Adherent cells are thick around the nucleus and thin towards their edges; the edge taper
    makes touching cells meet at a dimmer seam. Mitotic cells are rounded: uniformly thick.
    """
    radius = per_cell(layout.cell_radii.astype(np.float32), layout.cells)
    taper = smoothstep(cell_edge / np.maximum(0.16 * radius, 1.0))
    edge = 0.2 + 0.8 * taper
    dome = 0.3 + 0.7 * np.exp(-nucleus_distance / np.maximum(0.9 * nucleus_radius, 1.0))
    mitotic = per_cell(layout.mitotic.astype(np.float32), layout.cells) > 0
    dome = np.where(mitotic, 1.0, dome)
    return (edge * dome * (layout.cells > 0)).astype(np.float32)


def build_fields(layout: Layout) -> Fields:
    cells, nuclei = layout.cells, layout.nuclei
    in_nucleus = nuclei > 0
    cell_edge = distance_inside(cells)
    nucleus_distance = cv2.distanceTransform((~in_nucleus).astype(np.uint8), cv2.DIST_L2, 5)
    nucleus_radius = per_cell(layout.nucleus_radii.astype(np.float32), cells)
    boxes = ndimage.find_objects(cells, max_label=layout.n_cells)
    return Fields(
        layout=layout,
        cell_edge=cell_edge,
        nucleus_depth=distance_inside(nuclei),
        nucleus_distance=nucleus_distance,
        in_nucleus=in_nucleus,
        cytoplasm=(cells > 0) & ~in_nucleus,
        thickness=thickness_profile(layout, cell_edge, nucleus_distance, nucleus_radius),
        nucleoli=nucleoli_map(layout),
        nucleus_radius=nucleus_radius,
        boxes=list(boxes),
    )
