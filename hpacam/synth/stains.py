"""The three reference stains: blue (nuclei), red (microtubules), yellow (ER).

The microtubule, ER and spindle structures are built once per image and shared with the green
channel: a green Microtubules (10) cell shows the same filaments as red, a green ER (6) cell the
same reticulum as yellow, as with real co-localising antibodies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hpacam.synth.drawing import (clip_paths_to_cells, draw_paths, gaussian_blur, random_walks,
                                  render_spots, smooth_noise)
from hpacam.synth.fields import Fields, per_cell
from hpacam.synth.hard import NONE, HardCases
from hpacam.synth.layout import Layout, StarShape


@dataclass
class Structures:
    """Cytoskeleton and organelle networks shared between reference stains and green."""

    microtubules: np.ndarray  # filaments in [0, 1] (interphase cells)
    er: np.ndarray  # reticular network in [0, ~1], denser around the nucleus
    spindle: np.ndarray  # mitotic spindles in [0, ~1]
    poles: dict[int, np.ndarray]  # mitotic cell id -> (2, 2) pole positions (y, x)


def microtubule_filaments(fields: Fields, rng: np.random.Generator) -> np.ndarray:
    """Filaments radiating from just outside the nucleus to the cell edge, cut at the cell border."""
    layout, unit = fields.layout, fields.unit
    starts, headings, owners = [], [], []
    for i in np.flatnonzero(~layout.mitotic):
        nucleus = layout.nucleus_shapes[i][0]
        area = float(layout.cell_radii[i]) ** 2 * np.pi
        count = int(np.clip(area / (220.0 * unit * unit), 20, 300))
        angles = rng.uniform(0, 2 * np.pi, size=count)
        rho = nucleus.radius_at(angles) + rng.uniform(0.0, 0.35, size=count) * layout.nucleus_radii[i]
        starts.append(np.stack([nucleus.cy + rho * np.sin(angles), nucleus.cx + rho * np.cos(angles)], axis=1))
        headings.append(angles + rng.normal(0.0, 0.6, size=count))
        owners.append(np.full(count, i + 1))
    if not starts:
        return np.zeros(fields.shape, np.float32)
    step = 3.0 * unit
    n_steps = int(np.ceil(2.2 * layout.cell_radii.max() / step))
    paths = random_walks(rng, np.concatenate(starts), np.concatenate(headings), n_steps, step, turn_sd=0.11)
    kept = clip_paths_to_cells(paths, np.concatenate(owners), layout.cells)
    return gaussian_blur(draw_paths(fields.shape, kept), 0.45 * unit)


def er_network(fields: Fields, rng: np.random.Generator) -> np.ndarray:
    """Reticulum: thin ridges at the zero crossings of a random field, plus sheets near the nucleus."""
    unit = fields.unit
    fine = smooth_noise(rng, fields.shape, 2.2 * unit)
    ridges = np.exp(-(fine / 0.35) ** 2)
    sheets = np.clip(smooth_noise(rng, fields.shape, 5.0 * unit), 0.0, None) * 0.35
    perinuclear = 0.3 + 0.7 * np.exp(-fields.nucleus_distance / np.maximum(0.7 * fields.nucleus_radius, 1.0))
    network = (0.75 * ridges + sheets + 0.15) * perinuclear * fields.thickness
    mitotic = per_cell(fields.layout.mitotic.astype(np.float32), fields.layout.cells) > 0
    network = np.where(mitotic, 0.45 * fields.thickness * (0.8 + 0.4 * ridges), network)
    return (network * fields.cytoplasm).astype(np.float32)


def spindle_poles(fields: Fields, cell_id: int) -> np.ndarray:
    layout = fields.layout
    i = cell_id - 1
    axis = layout.spindle_angles[i]
    reach = 0.62 * float(layout.cell_shapes[i].radius_at(np.array([axis]))[0])
    cy, cx = layout.centres[i]
    direction = np.array([np.sin(axis), np.cos(axis)])
    return np.array([[cy, cx]]) + np.array([[-1.0], [1.0]]) * reach * direction


def mitotic_spindles(fields: Fields, rng: np.random.Generator) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Bipolar spindles: fibres from two poles to the chromatin, astral rays, bright poles."""
    layout, unit = fields.layout, fields.unit
    paths, poles_by_cell, pole_points = [], {}, []
    for i in np.flatnonzero(layout.mitotic):
        poles = spindle_poles(fields, i + 1)
        poles_by_cell[i + 1] = poles
        pole_points.append(poles)
        axis = layout.spindle_angles[i]
        across = np.array([np.cos(axis), -np.sin(axis)])  # perpendicular to the axis, (y, x)
        for pole, piece in zip(poles, pieces_for_poles(layout, i)):
            count = 22
            offsets = rng.uniform(-0.85, 0.85, size=count) * piece.max_radius
            targets = np.array([piece.cy, piece.cx]) + offsets[:, None] * across
            middles = 0.5 * (targets + pole) + 0.25 * offsets[:, None] * across
            paths.extend(np.stack([np.broadcast_to(pole, targets.shape), middles, targets], axis=1))
            rays = rng.uniform(0, 2 * np.pi, size=10)
            ends = pole + 0.3 * layout.cell_radii[i] * np.stack([np.sin(rays), np.cos(rays)], axis=1)
            paths.extend(np.stack([np.broadcast_to(pole, ends.shape), ends], axis=1))
    spindle = draw_paths(fields.shape, paths, value=0.8)
    if pole_points:
        pts = np.concatenate(pole_points)
        spindle = np.maximum(spindle, render_spots(fields.shape, pts[:, 0], pts[:, 1],
                                                   np.ones(len(pts)), 1.6 * unit))
    mitotic = per_cell(layout.mitotic.astype(np.float32), layout.cells)
    return gaussian_blur(spindle, 0.6 * unit) * mitotic, poles_by_cell


def pieces_for_poles(layout: Layout, i: int) -> list[StarShape]:
    """The chromatin piece each pole pulls on: the same plate for both, or one anaphase set each."""
    pieces = layout.nucleus_shapes[i]
    if len(pieces) == 1:
        return [pieces[0], pieces[0]]
    axis = np.array([np.sin(layout.spindle_angles[i]), np.cos(layout.spindle_angles[i])])
    return sorted(pieces, key=lambda p: float(np.dot([p.cy, p.cx], axis)))  # pole 0: negative side


def build_structures(fields: Fields, rng: np.random.Generator) -> Structures:
    spindle, poles = mitotic_spindles(fields, rng)
    return Structures(microtubules=microtubule_filaments(fields, rng), er=er_network(fields, rng),
                      spindle=spindle, poles=poles)


def blue_stain(fields: Fields, rng: np.random.Generator, hard: HardCases = NONE) -> np.ndarray:
    """Nuclei: domed, textured chromatin with darker nucleoli; condensed mitotic chromatin is bright."""
    layout, unit = fields.layout, fields.unit
    n = layout.n_cells
    brightness = rng.lognormal(0.0, 0.2, size=n) * np.where(layout.mitotic, 1.9, 1.0)
    if hard.brightness_spread > 1:
        brightness = brightness * spread_factors(rng, n, hard.brightness_spread)
    depth = fields.nucleus_depth / np.maximum(0.45 * fields.nucleus_radius, 1.0)
    dome = 0.55 + 0.45 * np.sqrt(np.clip(depth, 0.0, 1.0))
    coarse, fine = smooth_noise(rng, fields.shape, 1.6 * unit), smooth_noise(rng, fields.shape, 0.7 * unit)
    texture = 1.0 + 0.18 * (1.0 + hard.texture) * coarse + 0.08 * (1.0 + hard.texture) * fine
    nucleoli = 1.0 - 0.35 * fields.nucleoli
    blue = per_cell(brightness, layout.nuclei) * dome * np.clip(texture, 0.3, None) * nucleoli
    blue = (blue * fields.in_nucleus).astype(np.float32)
    return defocus(blue, layout, rng, hard.focus_blur) if hard.focus_blur > 0 else blue


def spread_factors(rng: np.random.Generator, n: int, spread: float) -> np.ndarray:
    """Log-uniform factors in [1/spread, 1], the two ends always present (with >= 2 nuclei)."""
    factors = np.exp(rng.uniform(-np.log(spread), 0.0, size=n))
    if n >= 2:
        ends = rng.choice(n, size=2, replace=False)
        factors[ends] = (1.0, 1.0 / spread)
    return factors


def defocus(blue: np.ndarray, layout, rng: np.random.Generator, share: float) -> np.ndarray:
    """Blur a `share` of the nuclei by a third of the mean nucleus radius (out of focus)."""
    chosen = np.flatnonzero(rng.random(layout.n_cells) < share) + 1
    if not len(chosen):
        return blue
    mask = np.isin(layout.nuclei, chosen)
    sigma = float(np.mean(layout.nucleus_radii)) / 3.0
    blurred = gaussian_blur(np.where(mask, blue, 0.0).astype(np.float32), sigma)
    return np.where(mask, 0.0, blue).astype(np.float32) + blurred


def red_stain(fields: Fields, structures: Structures, rng: np.random.Generator) -> np.ndarray:
    """Microtubules over diffuse tubulin, fading towards the cell edge; spindles in mitotic cells."""
    brightness = per_cell(fields.layout.mitotic * 0.3 + rng.lognormal(0.0, 0.35, size=fields.layout.n_cells),
                          fields.layout.cells)
    diffuse = 0.3 * fields.thickness * np.where(fields.in_nucleus, 0.25, 1.0)
    over_nucleus = np.where(fields.in_nucleus, 0.3, 1.0)  # filaments above/below the nucleus are out of focus
    red = brightness * (0.9 * structures.microtubules * (0.35 + 0.65 * fields.thickness) * over_nucleus + diffuse)
    return (red + 0.9 * structures.spindle).astype(np.float32)


def yellow_stain(fields: Fields, structures: Structures, rng: np.random.Generator) -> np.ndarray:
    """ER network, plus the faint nuclear envelope that is continuous with it."""
    brightness = per_cell(rng.lognormal(0.0, 0.35, size=fields.layout.n_cells), fields.layout.cells)
    envelope = 0.35 * np.exp(-(fields.nucleus_depth / (1.5 * fields.unit)) ** 2) * fields.in_nucleus
    inside = 0.06 * fields.in_nucleus
    return (brightness * (structures.er + envelope + inside)).astype(np.float32)
