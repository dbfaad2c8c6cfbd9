"""The green (protein of interest) patterns of the 19 HPA classes.

Every pattern function returns a float32 map over the whole image, peaking near 1, for the cells
in `carriers` (other cells may be drawn too; the caller multiplies by a per-cell expression level
that is 0 for non-carriers). A cell with several labels shows the sum of its patterns.

Each pattern sits in its compartment, so a classifier that learns the compartment learns the
class: nuclear classes (0-5) inside the nucleus, 6-10 and 14-17 in the cytoplasm, 13 at the cell
edge, 11 on mitotic spindles only, 18 nothing at all.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from hpacam.synth.drawing import (clip_paths_to_cells, draw_paths, gaussian_blur, random_walks,
                                  render_spots, render_spots_varied, smooth_noise, smoothstep)
from hpacam.synth.fields import Fields
from hpacam.synth.stains import Structures

PatternFn = Callable[[Fields, Structures, np.random.Generator, np.ndarray], np.ndarray]


def _texture(rng: np.random.Generator, fields: Fields, sigma_units: float, amount: float) -> np.ndarray:
    return 1.0 + amount * smooth_noise(rng, fields.shape, sigma_units * fields.unit)


def _nucleus_fill(fields: Fields) -> np.ndarray:
    """1 inside nuclei with a soft edge about two units wide."""
    return smoothstep(fields.nucleus_depth / (2.0 * fields.unit)) * fields.in_nucleus


def _cytosol(fields: Fields) -> np.ndarray:
    return fields.thickness * fields.cytoplasm


def _angle_point(shape_, angle: float, extra: float) -> tuple[float, float]:
    """The point `extra` pixels beyond a star shape's outline in direction `angle`."""
    rho = float(shape_.radius_at(np.array([angle]))[0]) + extra
    return shape_.cy + rho * np.sin(angle), shape_.cx + rho * np.cos(angle)


# ----------------------------------------------------------------------------- nuclear classes


def nucleoplasm(fields, structures, rng, carriers):
    """0: the whole nucleus except the nucleoli, finely textured."""
    return _nucleus_fill(fields) * _texture(rng, fields, 1.0, 0.15) * (1.0 - 0.85 * fields.nucleoli)


def nuclear_membrane(fields, structures, rng, carriers):
    """1: a thin ring on the nuclear envelope."""
    width = 1.4 * fields.unit
    inner = np.exp(-(fields.nucleus_depth / width) ** 2) * fields.in_nucleus
    outer = np.exp(-(fields.nucleus_distance / width) ** 2) * fields.cytoplasm
    return (inner + outer) * _texture(rng, fields, 2.0, 0.2) + 0.04 * _nucleus_fill(fields)


def nucleoli(fields, structures, rng, carriers):
    """2: the nucleoli themselves."""
    return fields.nucleoli * _texture(rng, fields, 1.0, 0.12)


def fibrillar_centers(fields, structures, rng, carriers):
    """3: small bright dots inside the nucleoli (2-5 per nucleolus), faint nucleolar rest."""
    rows = fields.layout.nucleoli
    rows = rows[np.isin(rows[:, 0].astype(int), carriers)]
    counts = rng.integers(2, 6, size=len(rows))
    owner = np.repeat(np.arange(len(rows)), counts)
    angle = rng.uniform(0, 2 * np.pi, size=len(owner))
    rho = np.sqrt(rng.uniform(0, 1, size=len(owner))) * 0.6 * rows[owner, 3]
    ys, xs = rows[owner, 1] + rho * np.sin(angle), rows[owner, 2] + rho * np.cos(angle)
    dots = render_spots(fields.shape, ys, xs, rng.uniform(1.0, 1.5, size=len(owner)), 1.1 * fields.unit)
    return dots * fields.in_nucleus + 0.15 * fields.nucleoli


def nuclear_speckles(fields, structures, rng, carriers):
    """4: many irregular blobs in the nucleoplasm over a faint diffuse nucleoplasm."""
    field = smooth_noise(rng, fields.shape, 1.8 * fields.unit)
    blobs = np.clip((field - 0.75) / 1.0, 0.0, 1.2) ** 0.8
    return _nucleus_fill(fields) * (1.0 - fields.nucleoli) * (blobs + 0.12)


def nuclear_bodies(fields, structures, rng, carriers):
    """5: a few (1-6) round dots per nucleus, away from the nucleoli."""
    ys, xs = [], []
    weights = (fields.nucleus_depth > 3 * fields.unit) * (1.0 - fields.nucleoli)
    for cell_id in carriers:
        if fields.layout.mitotic[cell_id - 1]:
            continue
        y, x = fields.sample_pixels(rng, cell_id, "nucleus", int(rng.integers(1, 7)), weights)
        ys.append(y)
        xs.append(x)
    ys, xs = np.concatenate(ys or [np.zeros(0)]), np.concatenate(xs or [np.zeros(0)])
    sigmas = rng.uniform(1.3, 2.6, size=len(ys)) * fields.unit
    bodies = render_spots_varied(fields.shape, ys, xs, rng.uniform(0.8, 1.3, size=len(ys)), sigmas, n_bins=2)
    return bodies * fields.in_nucleus + 0.05 * _nucleus_fill(fields)


# ----------------------------------------------------------------------------- cytoplasmic classes


def endoplasmic_reticulum(fields, structures, rng, carriers):
    """6: the same reticulum as the yellow channel."""
    return 1.3 * structures.er


def golgi(fields, structures, rng, carriers):
    """7: a compact, lumpy crescent hugging one side of the nucleus."""
    out = np.zeros(fields.shape, np.float32)
    lumps = np.clip(0.45 + smooth_noise(rng, fields.shape, 1.4 * fields.unit), 0.0, None)
    layout = fields.layout
    for cell_id in carriers:
        i = cell_id - 1
        box = fields.cell_box(cell_id)
        cy, cx = layout.centres[i]
        ys = np.arange(box[0].start, box[0].stop)[:, None] - cy
        xs = np.arange(box[1].start, box[1].stop)[None, :] - cx
        direction = rng.uniform(0, 2 * np.pi)
        spread = rng.uniform(2.5, 7.0)  # higher: a tighter crescent
        angular = np.exp(spread * (np.cos(np.arctan2(ys, xs) - direction) - 1.0))
        r = layout.nucleus_radii[i]
        radial = np.exp(-((fields.nucleus_distance[box] - 0.25 * r) / (0.22 * r)) ** 2)
        own = (layout.cells[box] == cell_id) & fields.cytoplasm[box]
        out[box] += (1.4 * angular * radial * lumps[box] * own).astype(np.float32)
    return out


def _filament_starts(fields: Fields, rng: np.random.Generator, cell_id: int, count: int,
                     spread: float) -> tuple[np.ndarray, np.ndarray]:
    """Points in a shell around the nucleus, and the polar angle of each."""
    layout = fields.layout
    nucleus = layout.nucleus_shapes[cell_id - 1][0]
    angles = rng.uniform(0, 2 * np.pi, size=count)
    rho = nucleus.radius_at(angles) + rng.uniform(0.03, spread, size=count) * layout.nucleus_radii[cell_id - 1]
    return np.stack([nucleus.cy + rho * np.sin(angles), nucleus.cx + rho * np.cos(angles)], axis=1), angles


def intermediate_filaments(fields, structures, rng, carriers):
    """8: long wavy filaments that wrap around the nucleus (a cage) and run through the cytoplasm."""
    layout, unit = fields.layout, fields.unit
    starts, headings, owners = [], [], []
    for cell_id in carriers:
        if layout.mitotic[cell_id - 1]:
            continue
        count = int(np.clip(layout.cell_radii[cell_id - 1] ** 2 * np.pi / (700.0 * unit * unit), 12, 150))
        points, angles = _filament_starts(fields, rng, cell_id, count, spread=0.8)
        turn = np.where(rng.random(count) < 0.5, np.pi / 2, -np.pi / 2)
        starts.append(points)
        headings.append(angles + turn + rng.normal(0, 0.5, size=count))
        owners.append(np.full(count, cell_id))
    if not starts:
        return np.zeros(fields.shape, np.float32)
    step = 2.5 * unit
    n_steps = int(np.ceil(3.0 * layout.cell_radii.max() / step))
    paths = random_walks(rng, np.concatenate(starts), np.concatenate(headings), n_steps, step, turn_sd=0.12)
    kept = clip_paths_to_cells(paths, np.concatenate(owners), layout.cells)
    half = len(kept) // 2
    lines = draw_paths(fields.shape, kept[:half], 1.0) + draw_paths(fields.shape, kept[half:], 0.6)
    return gaussian_blur(lines, 0.7 * unit) * (0.4 + 0.6 * fields.thickness) * fields.cytoplasm


def actin_filaments(fields, structures, rng, carriers):
    """9: bright cortical actin along the cell periphery plus straight stress fibres."""
    layout, unit = fields.layout, fields.unit
    cortex = np.exp(-fields.cell_edge / (2.5 * unit)) * (layout.cells > 0) * _texture(rng, fields, 2.0, 0.25)
    starts, headings, owners = [], [], []
    for cell_id in carriers:
        i = cell_id - 1
        if layout.mitotic[i]:
            continue
        outline = layout.cell_shapes[i]
        axis = float(np.argmax(outline.radii)) * 2 * np.pi / len(outline.radii) + rng.normal(0, 0.25)
        count = int(rng.integers(6, 18))
        offsets = rng.uniform(-0.85, 0.85, size=count) * layout.cell_radii[i]
        across = np.array([np.cos(axis), -np.sin(axis)])
        mids = np.array([outline.cy, outline.cx]) + offsets[:, None] * across
        starts += [mids, mids]
        headings += [np.full(count, axis), np.full(count, axis + np.pi)]
        owners += [np.full(count, cell_id)] * 2
    fibres = np.zeros(fields.shape, np.float32)
    if starts:
        step = 3.0 * unit
        n_steps = int(np.ceil(2.0 * layout.cell_radii.max() / step))
        paths = random_walks(rng, np.concatenate(starts), np.concatenate(headings), n_steps, step, turn_sd=0.015)
        kept = clip_paths_to_cells(paths, np.concatenate(owners), layout.cells)
        fibres = gaussian_blur(draw_paths(fields.shape, kept, 0.7), 0.6 * unit) * fields.cytoplasm
    return cortex + fibres + 0.08 * _cytosol(fields)


def microtubules(fields, structures, rng, carriers):
    """10: the same filaments as the red channel."""
    over_nucleus = np.where(fields.in_nucleus, 0.3, 1.0)
    return 1.1 * structures.microtubules * (0.35 + 0.65 * fields.thickness) * over_nucleus + 0.1 * _cytosol(fields)


def mitotic_spindle(fields, structures, rng, carriers):
    """11: the spindle of mitotic cells (the label is only ever given to mitotic cells)."""
    return 1.2 * structures.spindle


def centrosome(fields, structures, rng, carriers):
    """12: one or two bright dots next to the nucleus (at the spindle poles in mitosis)."""
    layout, unit = fields.layout, fields.unit
    ys, xs = [], []
    for cell_id in carriers:
        i = cell_id - 1
        if layout.mitotic[i]:
            poles = structures.poles[cell_id]
            ys += list(poles[:, 0])
            xs += list(poles[:, 1])
            continue
        y, x = _angle_point(layout.nucleus_shapes[i][0], rng.uniform(0, 2 * np.pi),
                            rng.uniform(0.08, 0.3) * layout.nucleus_radii[i])
        ys.append(y)
        xs.append(x)
        if rng.random() < 0.6:
            a = rng.uniform(0, 2 * np.pi)
            d = rng.uniform(2.0, 4.0) * unit
            ys.append(y + d * np.sin(a))
            xs.append(x + d * np.cos(a))
    dots = render_spots(fields.shape, np.asarray(ys), np.asarray(xs), rng.uniform(0.9, 1.3, size=len(ys)),
                        1.4 * unit)
    return 1.2 * dots * (layout.cells > 0) + 0.02 * _cytosol(fields)


def plasma_membrane(fields, structures, rng, carriers):
    """13: a thin ring along the cell outline (both sides of a shared border light up)."""
    ring = np.exp(-(fields.cell_edge / (1.6 * fields.unit)) ** 2) * (fields.layout.cells > 0)
    return ring * _texture(rng, fields, 2.0, 0.2) + 0.015 * _cytosol(fields)


def mitochondria(fields, structures, rng, carriers):
    """14: many short worm-like segments, densest around the nucleus."""
    layout, unit = fields.layout, fields.unit
    starts, owners = [], []
    for cell_id in carriers:
        area = float(np.count_nonzero(layout.cells[fields.cell_box(cell_id)] == cell_id))
        count = int(np.clip(area / (110.0 * unit * unit), 20, 2000))
        y, x = fields.sample_pixels(rng, cell_id, "cytoplasm", count, fields.thickness ** 2)
        starts.append(np.stack([y, x], axis=1))
        owners.append(np.full(len(y), cell_id))
    if not starts:
        return np.zeros(fields.shape, np.float32)
    starts = np.concatenate(starts)
    n_steps = 5
    paths = random_walks(rng, starts, rng.uniform(0, 2 * np.pi, size=len(starts)), n_steps,
                         1.8 * unit, turn_sd=0.35)
    kept = clip_paths_to_cells(paths, np.concatenate(owners), layout.cells)
    worms = gaussian_blur(draw_paths(fields.shape, kept), 0.7 * unit)
    return 1.3 * worms * fields.cytoplasm * (0.5 + 0.5 * fields.thickness) + 0.04 * _cytosol(fields)


def aggresome(fields, structures, rng, carriers):
    """15: one bright, lumpy perinuclear blob per cell, kept inside its own cell."""
    layout = fields.layout
    out = np.zeros(fields.shape, np.float32)
    for cell_id in carriers:
        i = cell_id - 1
        r = layout.nucleus_radii[i]
        y, x = _angle_point(layout.nucleus_shapes[i][0], rng.uniform(0, 2 * np.pi), rng.uniform(0.1, 0.25) * r)
        box = fields.cell_box(cell_id)
        local_shape = (box[0].stop - box[0].start, box[1].stop - box[1].start)
        lumps = render_spots(local_shape, y - box[0].start + rng.normal(0, 0.08 * r, size=3),
                             x - box[1].start + rng.normal(0, 0.08 * r, size=3), rng.uniform(0.6, 1.0, size=3),
                             0.2 * r)
        out[box] += np.clip(lumps, 0.0, 1.6) * (layout.cells[box] == cell_id)
    return out + 0.03 * _cytosol(fields)


def cytosol(fields, structures, rng, carriers):
    """16: diffuse fill of the cytoplasm (faint in the nucleus), following cell thickness."""
    texture = _texture(rng, fields, 1.5, 0.08)
    return (fields.thickness * texture * np.where(fields.in_nucleus, 0.15, 1.0)).astype(np.float32)


def vesicles(fields, structures, rng, carriers):
    """17: many small dots scattered through the cytoplasm."""
    layout, unit = fields.layout, fields.unit
    ys, xs = [], []
    for cell_id in carriers:
        area = float(np.count_nonzero(layout.cells[fields.cell_box(cell_id)] == cell_id))
        count = int(np.clip(area / (140.0 * unit * unit), 15, 1500))
        y, x = fields.sample_pixels(rng, cell_id, "cytoplasm", count, fields.thickness)
        ys.append(y)
        xs.append(x)
    ys, xs = np.concatenate(ys or [np.zeros(0)]), np.concatenate(xs or [np.zeros(0)])
    sigmas = rng.uniform(0.8, 1.6, size=len(ys)) * unit
    dots = render_spots_varied(fields.shape, ys, xs, rng.lognormal(0.0, 0.35, size=len(ys)), sigmas)
    return dots * fields.cytoplasm + 0.03 * _cytosol(fields)


def negative(fields, structures, rng, carriers):
    """18: no specific signal."""
    return np.zeros(fields.shape, np.float32)


GREEN_PATTERNS: dict[int, PatternFn] = {
    0: nucleoplasm, 1: nuclear_membrane, 2: nucleoli, 3: fibrillar_centers, 4: nuclear_speckles,
    5: nuclear_bodies, 6: endoplasmic_reticulum, 7: golgi, 8: intermediate_filaments,
    9: actin_filaments, 10: microtubules, 11: mitotic_spindle, 12: centrosome, 13: plasma_membrane,
    14: mitochondria, 15: aggresome, 16: cytosol, 17: vesicles, 18: negative,
}

# Compartments that disassemble in mitosis: a mitotic cell never carries these labels, because
# its pattern would have nothing to show.
MITOSIS_EXCLUDED = frozenset({1, 2, 3, 4, 5})
