"""Image label sets drawn from the real HPA distribution, and which cell carries which label.

The heterogeneity between cells is what makes the task weakly supervised, so it is drawn with
care (see the package docstring for the negative-cell policy):

- every image label gets a per-image *penetrance*: the chance that a cell carries it. Penetrance
  is high (most cells) for about 60% of labels and low (a few cells) for the rest;
- every image label is carried by at least one cell;
- Mitotic spindle (11) is carried only by mitotic cells; mitotic cells never carry the nuclear
  compartments that disassemble in mitosis (1-5);
- a cell carrying none of its image's labels is Negative (18), and so its image gets 18 in its
  union. Only NEGATIVE_IMAGE_SHARE of images may keep such cells; in the others an unlabelled
  cell is given one of the image's labels.
"""

from __future__ import annotations

import numpy as np

from hpacam.classes import MITOTIC_SPINDLE, NEGATIVE, NUM_CLASSES
from hpacam.synth.patterns import MITOSIS_EXCLUDED

NEGATIVE_IMAGE_SHARE = 0.12
HIGH_PENETRANCE_SHARE = 0.6


def draw_image_labels(rng: np.random.Generator, stats: dict) -> tuple[int, ...]:
    """One label set, drawn with the frequency of its combination in the Kaggle training set."""
    combos = stats["combinations"]
    counts = np.array([count for _, count in combos], dtype=np.float64)
    pick = rng.choice(len(combos), p=counts / counts.sum())
    return tuple(sorted(int(label) for label in combos[pick][0]))


def check_label_set(labels) -> tuple[int, ...]:
    """Validate a forced label set: known classes, and Negative only on its own."""
    try:
        labels = tuple(sorted({int(label) for label in labels}))
    except (TypeError, ValueError):
        raise ValueError(f"label set must be a collection of integers, got {labels!r}") from None
    if not labels:
        raise ValueError("label set is empty; use (18,) for a negative image")
    bad = [label for label in labels if not 0 <= label < NUM_CLASSES]
    if bad:
        raise ValueError(f"labels {bad} outside 0..{NUM_CLASSES - 1}")
    if NEGATIVE in labels and len(labels) > 1:
        raise ValueError(f"Negative ({NEGATIVE}) cannot be combined with other labels: {labels}")
    return labels


def mitosis_allowed(labels: tuple[int, ...]) -> bool:
    """Mitotic cells appear only where they can carry one of the image's labels (or the image is negative)."""
    specific = [label for label in labels if label != NEGATIVE]
    return not specific or any(label not in MITOSIS_EXCLUDED for label in specific)


def draw_penetrance(rng: np.random.Generator, n: int) -> np.ndarray:
    high = rng.random(n) < HIGH_PENETRANCE_SHARE
    return np.where(high, rng.uniform(0.65, 1.0, size=n), rng.uniform(0.12, 0.65, size=n))


def eligibility(labels: list[int], mitotic: np.ndarray) -> np.ndarray:
    """(cells, labels) bool: which cell may carry which label."""
    eligible = np.ones((len(mitotic), len(labels)), dtype=bool)
    for j, label in enumerate(labels):
        if label == MITOTIC_SPINDLE:
            eligible[:, j] = mitotic
        elif label in MITOSIS_EXCLUDED:
            eligible[:, j] = ~mitotic
    return eligible


def assign_cell_labels(rng: np.random.Generator, image_labels: tuple[int, ...],
                       mitotic: np.ndarray) -> list[tuple[int, ...]]:
    """The label set of every cell (index i -> cell i + 1)."""
    n_cells = len(mitotic)
    specific = [label for label in image_labels if label != NEGATIVE]
    if not specific:
        return [(NEGATIVE,)] * n_cells
    eligible = eligibility(specific, np.asarray(mitotic, dtype=bool))
    penetrance = draw_penetrance(rng, len(specific))
    carries = (rng.random((n_cells, len(specific))) < penetrance) & eligible
    ensure_every_label_carried(rng, carries, eligible)
    if rng.random() >= NEGATIVE_IMAGE_SHARE:
        fill_unlabelled_cells(rng, carries, eligible, penetrance)
    return [tuple(specific[j] for j in np.flatnonzero(row)) or (NEGATIVE,) for row in carries]


def ensure_every_label_carried(rng: np.random.Generator, carries: np.ndarray, eligible: np.ndarray) -> None:
    for j in range(carries.shape[1]):
        if not carries[:, j].any():
            candidates = np.flatnonzero(eligible[:, j])
            if len(candidates) == 0:
                raise ValueError("a label has no eligible cell (Mitotic spindle needs a mitotic cell)")
            carries[rng.choice(candidates), j] = True


def fill_unlabelled_cells(rng: np.random.Generator, carries: np.ndarray, eligible: np.ndarray,
                          penetrance: np.ndarray) -> None:
    """Give every cell without a label one label it may carry, favouring high-penetrance labels."""
    for i in np.flatnonzero(~carries.any(axis=1)):
        options = np.flatnonzero(eligible[i])
        if len(options):
            weights = penetrance[options] / penetrance[options].sum()
            carries[i, rng.choice(options, p=weights)] = True
