"""Cell and nucleus geometry at the render resolution.

Lengths are fractions of the image width, so a 1728, 2048 or 3072 px image shows the same number
of cells (HPA images at all three sizes show roughly 8-40 cells; nuclei are ~8-12% of the width
in diameter; cells 2-3x the nucleus).

How a field of cells is built:

1. Nuclei centres are placed by dart throwing with a minimum spacing (Poisson-disc-like),
   thinned by a smooth random density field so that cells form confluent patches with gaps.
2. Every nucleus is a star-shaped ellipse (perturbed radius); every cell has its own irregular
   maximum extent around a centre slightly off its nucleus.
3. Pixels go to the cell with the smallest extent-normalised distance (a multiplicatively
   weighted Voronoi partition limited to distance < 1): neighbouring cells touch along shared
   borders, isolated cells keep their own outline, and background remains between them.
4. Mitotic cells are round, sit on top of their neighbours, and hold condensed chromatin
   (a compact blob, a metaphase bar, or two anaphase bars: one nucleus label in two pieces).
5. Every nucleus is painted into its own cell, and cell fragments cut off from their nucleus
   are dropped, so every cell is one piece with exactly one nucleus.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage

from hpacam.synth.drawing import smooth_noise
from hpacam.synth.hard import DENSE_FROM, NONE, HardCases

ANGLE_BINS = 512  # resolution of the tabulated radius functions r(theta)
REFERENCE_SIZE = 1024  # lengths called "units" below are pixels of a 1024 px image

PROMETAPHASE, METAPHASE, ANAPHASE = 0, 1, 2


@dataclass(frozen=True)
class StarShape:
    """A star-shaped region: centre and radius tabulated over ANGLE_BINS angles."""

    cy: float
    cx: float
    radii: np.ndarray  # (ANGLE_BINS,) float32

    @property
    def max_radius(self) -> float:
        return float(self.radii.max())

    def radius_at(self, angles: np.ndarray) -> np.ndarray:
        index = (np.mod(angles, 2 * np.pi) * (ANGLE_BINS / (2 * np.pi))).astype(np.int64) % ANGLE_BINS
        return self.radii[index]

    def window(self, shape: tuple[int, int], margin: float = 2.0) -> tuple[slice, slice] | None:
        """Bounding box in the image, or None when the shape lies outside it."""
        r = self.max_radius + margin
        y0, y1 = max(0, int(self.cy - r)), min(shape[0], int(self.cy + r) + 2)
        x0, x1 = max(0, int(self.cx - r)), min(shape[1], int(self.cx + r) + 2)
        if y0 >= y1 or x0 >= x1:
            return None
        return slice(y0, y1), slice(x0, x1)

    def normalised_distance(self, box: tuple[slice, slice]) -> np.ndarray:
        """distance / radius(angle) for every pixel of `box`: < 1 inside the shape."""
        ys = np.arange(box[0].start, box[0].stop, dtype=np.float32)[:, None] - np.float32(self.cy)
        xs = np.arange(box[1].start, box[1].stop, dtype=np.float32)[None, :] - np.float32(self.cx)
        rho = np.sqrt(ys * ys + xs * xs)
        return rho / self.radius_at(np.arctan2(ys, xs))


def star_radii(rng: np.random.Generator, mean_radius: float, aspect: float, orientation: float,
               roughness: float, first_harmonic: int = 2, n_harmonics: int = 5) -> np.ndarray:
    """Tabulated radius of a perturbed ellipse: r(theta) = ellipse(theta) * (1 + sum_k c_k cos(k theta + p_k)).

    `roughness` is the amplitude of the low harmonics; higher harmonics are damped so outlines
    are irregular but not jagged.
    """
    theta = np.linspace(0, 2 * np.pi, ANGLE_BINS, endpoint=False)
    t = theta - orientation
    major, minor = np.sqrt(aspect), 1.0 / np.sqrt(aspect)
    ellipse = 1.0 / np.sqrt((np.cos(t) / major) ** 2 + (np.sin(t) / minor) ** 2)
    ks = np.arange(first_harmonic, first_harmonic + n_harmonics)
    amplitudes = rng.normal(0.0, roughness, size=len(ks)) / ks ** 0.8
    phases = rng.uniform(0, 2 * np.pi, size=len(ks))
    wobble = 1.0 + (amplitudes[:, None] * np.cos(ks[:, None] * theta[None, :] + phases[:, None])).sum(0)
    return (mean_radius * ellipse * np.clip(wobble, 0.65, 1.4)).astype(np.float32)


@dataclass(frozen=True)
class ImageGeometryParams:
    """Per-image geometry choices: they make images differ in density, cell size and shape."""

    nucleus_radius: float  # mean, in render pixels
    cell_to_nucleus: float  # cell extent radius / nucleus radius
    spacing: float  # minimum centre distance / (sum of the two nuclei's max radii)
    target_cells: int
    clustering: float  # 0 = uniform placement, 1 = strongly patchy
    mitotic_rate: float


def draw_geometry_params(rng: np.random.Generator, size: int) -> ImageGeometryParams:
    return ImageGeometryParams(
        nucleus_radius=rng.uniform(0.040, 0.056) * size,  # diameter 8-11% of the width
        cell_to_nucleus=rng.uniform(2.2, 3.1),
        spacing=rng.uniform(0.92, 1.35),  # below 1: some nuclei touch
        target_cells=int(round(np.exp(rng.uniform(np.log(9), np.log(44))))),
        clustering=rng.uniform(0.0, 1.0),
        mitotic_rate=rng.uniform(0.0, 0.05),
    )


def harden_params(rng: np.random.Generator, params: ImageGeometryParams, hard: HardCases) -> ImageGeometryParams:
    """Apply the cell-count and size options (no random draw unless one is on).

    A dense field (DENSE_FROM cells or more) shrinks nuclei and cells so that they fit, as at a
    lower magnification: the default cells cover most of the field at ~40 cells.
    """
    if hard.cell_count is not None:
        target = int(rng.integers(hard.cell_count[0], hard.cell_count[1] + 1))
        params = replace(params, target_cells=target)
        if target >= DENSE_FROM:
            params = replace(params, nucleus_radius=params.nucleus_radius * float(np.sqrt(18.0 / target)),
                             cell_to_nucleus=float(rng.uniform(1.7, 2.3)), spacing=float(rng.uniform(0.95, 1.15)))
    if hard.nucleus_scale != 1.0:
        params = replace(params, nucleus_radius=params.nucleus_radius * hard.nucleus_scale)
    return params


def place_clumps(rng: np.random.Generator, size: int, params: ImageGeometryParams,
                 unit: float) -> tuple[np.ndarray, list[StarShape]]:
    """Nuclei in touching groups of 2-6: each member ~0.9 of the summed radii from one already placed.

    Groups keep the usual spacing from one another; inside a group only overlap beyond 0.8 of
    the summed radii is refused, so members touch without covering one another.
    """
    centres, shapes, reaches, group_of = [], [], [], []
    for group in range(4 * params.target_cells):
        if len(centres) >= params.target_cells:
            break
        members = int(rng.integers(2, 7))
        anchor = rng.uniform(0, size, size=2)
        for _ in range(8 * members):
            if sum(g == group for g in group_of) >= members or len(centres) >= params.target_cells:
                break
            radius = params.nucleus_radius * float(rng.lognormal(0.0, 0.1))
            own = [i for i, g in enumerate(group_of) if g == group]
            if own:
                base = own[int(rng.integers(len(own)))]
                angle = rng.uniform(0, 2 * np.pi)
                gap = rng.uniform(0.85, 0.95) * (float(shapes[base].radii.mean()) + radius)
                point = centres[base] + gap * np.array([np.sin(angle), np.cos(angle)])
            else:
                point = anchor
            if not (0 <= point[0] < size and 0 <= point[1] < size):
                continue
            if not fits_in_group(point, radius, centres, reaches, group_of, group, params.spacing, unit):
                continue
            radii_table = star_radii(rng, radius, float(rng.uniform(1.0, 1.25)), float(rng.uniform(0, np.pi)),
                                     roughness=0.05)
            centres.append(point)
            shapes.append(StarShape(float(point[0]), float(point[1]), radii_table))
            reaches.append(float(radii_table.max()))
            group_of.append(group)
    return np.asarray(centres, dtype=np.float64).reshape(-1, 2), shapes


def fits_in_group(point, radius, centres, reaches, group_of, group, spacing, unit) -> bool:
    """Far enough from other groups (the usual spacing) and not overlapping its own group's members."""
    if not centres:
        return True
    gaps = np.hypot(*(np.asarray(centres) - point).T)
    same = np.asarray(group_of) == group
    sums = radius + np.asarray(reaches)
    if np.any(gaps[same] < 0.8 * sums[same]):
        return False
    return not too_close(gaps[~same], 1.3 * radius, list(np.asarray(reaches)[~same]), max(spacing, 1.0), unit)


@dataclass
class Layout:
    """The geometry of one image at the render resolution (cell i <-> index i - 1)."""

    cells: np.ndarray  # int32 (S, S), 0 = background, 1..n cells
    nuclei: np.ndarray  # int32 (S, S), nucleus of cell i labelled i
    nucleus_shapes: list[list[StarShape]]  # one shape, or two anaphase pieces
    cell_shapes: list[StarShape]
    centres: np.ndarray  # (n, 2) nucleus centres (y, x)
    nucleus_radii: np.ndarray  # (n,) mean nucleus (or chromatin) radius
    cell_radii: np.ndarray  # (n,) mean cell extent radius
    mitotic: np.ndarray  # (n,) bool
    mitotic_phase: np.ndarray  # (n,) int, PROMETAPHASE/METAPHASE/ANAPHASE for mitotic cells
    spindle_angles: np.ndarray  # (n,) spindle axis of mitotic cells
    nucleoli: np.ndarray  # (m, 4): cell id, y, x, radius
    unit: float  # render pixels per 1/1024 of the image width

    @property
    def n_cells(self) -> int:
        return len(self.centres)

    @property
    def shape(self) -> tuple[int, int]:
        return self.cells.shape

    def border_cells(self) -> np.ndarray:
        """Ids of cells cut by the image border."""
        edge = np.concatenate([self.cells[0], self.cells[-1], self.cells[:, 0], self.cells[:, -1]])
        return np.unique(edge[edge > 0])


def place_nuclei(rng: np.random.Generator, size: int, params: ImageGeometryParams,
                 unit: float) -> tuple[np.ndarray, list[StarShape]]:
    """Dart throwing with a minimum spacing, thinned by a patchy density field."""
    n_candidates = 60 * params.target_cells
    candidates = rng.uniform(0, size, size=(n_candidates, 2))
    density = smooth_noise(rng, (size, size), sigma=0.18 * size)
    density = 1.0 / (1.0 + np.exp(-2.5 * density))  # logistic: 0.08..0.92, patchy
    acceptance = (1.0 - params.clustering) + params.clustering * density
    cy, cx = candidates[:, 0].astype(int), candidates[:, 1].astype(int)
    candidates = candidates[rng.random(n_candidates) < acceptance[cy, cx]]
    radii = params.nucleus_radius * rng.lognormal(0.0, 0.13, size=len(candidates))
    aspects = rng.uniform(1.0, 1.55, size=len(candidates))
    orientations = rng.uniform(0, np.pi, size=len(candidates))

    centres: list[np.ndarray] = []
    shapes: list[StarShape] = []
    max_radii: list[float] = []
    for point, radius, aspect, orientation in zip(candidates, radii, aspects, orientations):
        if centres:  # cheap test with the typical reach first; the exact one only if it passes
            gaps = np.hypot(*(np.asarray(centres) - point).T)
            if too_close(gaps, radius * np.sqrt(aspect), max_radii, params.spacing, unit):
                continue
        radii_table = star_radii(rng, radius, aspect, orientation, roughness=0.07)
        reach = float(radii_table.max())
        if centres and too_close(gaps, reach, max_radii, params.spacing, unit):
            continue
        centres.append(point)
        shapes.append(StarShape(float(point[0]), float(point[1]), radii_table))
        max_radii.append(reach)
        if len(centres) >= params.target_cells:
            break
    return np.asarray(centres, dtype=np.float64).reshape(-1, 2), shapes


def too_close(gaps: np.ndarray, reach: float, other_reaches: list[float], spacing: float,
              unit: float) -> bool:
    return bool(np.any(gaps < spacing * (reach + np.asarray(other_reaches)) + 2 * unit))


def cell_extent(rng: np.random.Generator, nucleus: StarShape, mean_nucleus_radius: float,
                ratio: float) -> StarShape:
    """An irregular cell outline around its nucleus, centred a little off the nucleus."""
    radius = mean_nucleus_radius * ratio * rng.lognormal(0.0, 0.18)
    orientation = float(np.argmax(nucleus.radii)) * 2 * np.pi / ANGLE_BINS + rng.normal(0, 0.35)
    radii = star_radii(rng, radius, rng.uniform(1.0, 2.2), orientation, roughness=0.18,
                       first_harmonic=1, n_harmonics=6)
    radii = np.maximum(radii, 1.35 * nucleus.radii)
    shift = rng.uniform(0.0, 0.25) * radius
    angle = rng.uniform(0, 2 * np.pi)
    return StarShape(nucleus.cy + shift * np.sin(angle), nucleus.cx + shift * np.cos(angle), radii)


def mitotic_shapes(rng: np.random.Generator, nucleus: StarShape, mean_radius: float,
                   phase: int, axis: float) -> tuple[list[StarShape], StarShape, float]:
    """Condensed chromatin pieces, a round cell outline, and the chromatin's mean radius."""
    cy, cx = nucleus.cy, nucleus.cx
    if phase == PROMETAPHASE:
        pieces = [StarShape(cy, cx, star_radii(rng, 0.55 * mean_radius, rng.uniform(1.0, 1.3),
                                               rng.uniform(0, np.pi), roughness=0.18))]
        cell_aspect, separation = 1.05, 0.0
    elif phase == METAPHASE:
        pieces = [StarShape(cy, cx, star_radii(rng, 0.42 * mean_radius, rng.uniform(3.0, 4.5),
                                               axis + np.pi / 2, roughness=0.06))]
        cell_aspect, separation = 1.1, 0.0
    else:
        separation = rng.uniform(0.35, 0.75) * mean_radius
        dy, dx = separation * np.sin(axis), separation * np.cos(axis)
        pieces = [StarShape(cy + s * dy, cx + s * dx, star_radii(rng, 0.33 * mean_radius, rng.uniform(2.5, 4.0),
                                                                   axis + np.pi / 2, roughness=0.06))
                  for s in (-1.0, 1.0)]
        cell_aspect = 1.25 + separation / mean_radius
    cell_radius = mean_radius * rng.uniform(1.55, 1.85)
    outline = StarShape(cy, cx, star_radii(rng, cell_radius, cell_aspect, axis, roughness=0.03))
    chromatin_radius = float(np.mean([p.radii.mean() for p in pieces]))
    return pieces, outline, chromatin_radius


def partition_cells(shape: tuple[int, int], cell_shapes: list[StarShape],
                    on_top: list[int]) -> np.ndarray:
    """Weighted Voronoi partition limited to each cell's extent; `on_top` cells win their whole extent."""
    best = np.ones(shape, dtype=np.float32)
    owner = np.zeros(shape, dtype=np.int32)
    for index, outline in enumerate(cell_shapes):
        box = outline.window(shape)
        if box is None:
            continue
        q = outline.normalised_distance(box)
        better = q < best[box]
        best[box][better] = q[better]
        owner[box][better] = index + 1
    for index in on_top:
        box = cell_shapes[index].window(shape)
        if box is not None:
            owner[box][cell_shapes[index].normalised_distance(box) < 1.0] = index + 1
    return owner


def paint_nuclei(cells: np.ndarray, nucleus_shapes: list[list[StarShape]]) -> np.ndarray:
    """Nucleus label image; every nucleus is also forced into its own cell."""
    nuclei = np.zeros_like(cells)
    for index, pieces in enumerate(nucleus_shapes):
        for piece in pieces:
            box = piece.window(cells.shape)
            if box is None:
                continue
            inside = piece.normalised_distance(box) <= 1.0
            nuclei[box][inside] = index + 1
            cells[box][inside] = index + 1
    return nuclei


def drop_detached_fragments(cells: np.ndarray, nuclei: np.ndarray) -> None:
    """Keep, for every cell, only the connected pieces that hold its nucleus (in place)."""
    for index, box in enumerate(ndimage.find_objects(cells)):
        if box is None:
            continue
        cell_id = index + 1
        pieces, count = ndimage.label(cells[box] == cell_id)
        if count <= 1:
            continue
        keep = np.unique(pieces[nuclei[box] == cell_id])
        detached = (pieces > 0) & ~np.isin(pieces, keep[keep > 0])
        cells[box][detached] = 0


def place_nucleoli(rng: np.random.Generator, nucleus: StarShape, mean_radius: float,
                   cell_id: int) -> np.ndarray:
    """1-4 nucleoli per interphase nucleus, each one disc or a lumpy cluster of 2-3 discs."""
    rows = []
    for _ in range(rng.integers(1, 5)):
        angle = rng.uniform(0, 2 * np.pi)
        rho = np.sqrt(rng.uniform(0, 1)) * 0.5 * float(nucleus.radius_at(np.array([angle]))[0])
        y, x = nucleus.cy + rho * np.sin(angle), nucleus.cx + rho * np.cos(angle)
        radius = rng.uniform(0.09, 0.17) * mean_radius
        rows.append((cell_id, y, x, radius))
        for _ in range(rng.integers(0, 3)):  # lumps make the nucleolus irregular
            a = rng.uniform(0, 2 * np.pi)
            rows.append((cell_id, y + 0.6 * radius * np.sin(a), x + 0.6 * radius * np.cos(a), 0.7 * radius))
    return np.asarray(rows, dtype=np.float64).reshape(-1, 4)


def choose_mitotic(rng: np.random.Generator, n_cells: int, rate: float, minimum: int,
                   allowed: bool) -> np.ndarray:
    mitotic = np.zeros(n_cells, dtype=bool)
    if n_cells == 0 or not allowed:
        return mitotic
    count = min(n_cells, max(minimum, int(rng.binomial(n_cells, rate))))
    mitotic[rng.choice(n_cells, size=count, replace=False)] = True
    return mitotic


def make_layout(rng: np.random.Generator, size: int, min_mitotic: int = 0,
                allow_mitosis: bool = True, hard: HardCases = NONE) -> Layout:
    """Build the cell field of one square image of `size` render pixels (`hard`: see hpacam.synth.hard)."""
    if size < 32:
        raise ValueError(f"render size must be at least 32 px, got {size}")
    unit = size / REFERENCE_SIZE
    params = harden_params(rng, draw_geometry_params(rng, size), hard)
    place = place_clumps if hard.clumps else place_nuclei
    centres, nucleus_outlines = place(rng, size, params, unit)
    n = len(centres)
    if n == 0:
        raise RuntimeError(f"no nucleus could be placed in a {size} px image (parameters {params})")
    mitotic = choose_mitotic(rng, n, params.mitotic_rate, min_mitotic, allow_mitosis)
    phases = np.where(mitotic, rng.integers(0, 3, size=n), -1)
    axes = rng.uniform(0, np.pi, size=n)

    nucleus_shapes, cell_shapes, nucleus_radii, nucleoli = [], [], np.zeros(n), []
    for i, outline in enumerate(nucleus_outlines):
        mean_radius = float(outline.radii.mean())
        if mitotic[i]:
            pieces, cell, nucleus_radii[i] = mitotic_shapes(rng, outline, mean_radius, int(phases[i]), axes[i])
        else:
            pieces, nucleus_radii[i] = [outline], mean_radius
            cell = cell_extent(rng, outline, mean_radius, params.cell_to_nucleus)
            nucleoli.append(place_nucleoli(rng, outline, mean_radius, i + 1))
        nucleus_shapes.append(pieces)
        cell_shapes.append(cell)

    cells = partition_cells((size, size), cell_shapes, on_top=list(np.flatnonzero(mitotic)))
    nuclei = paint_nuclei(cells, nucleus_shapes)
    drop_detached_fragments(cells, nuclei)
    return Layout(
        cells=cells, nuclei=nuclei, nucleus_shapes=nucleus_shapes, cell_shapes=cell_shapes,
        centres=centres, nucleus_radii=nucleus_radii,
        cell_radii=np.array([float(c.radii.mean()) for c in cell_shapes]),
        mitotic=mitotic, mitotic_phase=phases, spindle_angles=axes,
        nucleoli=np.concatenate(nucleoli) if nucleoli else np.zeros((0, 4)), unit=unit,
    )
