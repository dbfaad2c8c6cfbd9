"""Hand-drawn test images and a counting backend shared by the segmentation tests (no tests here)."""

from __future__ import annotations

import numpy as np

from hpacam.segmentation.core import LabelPair


def draw_cells(shape: tuple[int, int], cells: list[tuple[float, float, float, float]], noise: float = 0.01,
               seed: int = 0, background: float = 0.02) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Channels and the truth cell labels of cells given as (cy, cx, cell radius, nucleus radius).

    Cytoplasm fades towards the cell edge (so touching cells meet at a dim seam, as in HPA
    images); nuclei are bright in blue. Overlapping discs go to the nearest centre.
    """
    yy, xx = np.mgrid[:shape[0], :shape[1]].astype(np.float32)
    truth = np.zeros(shape, np.int32)
    best = np.full(shape, np.inf, np.float32)
    red = np.zeros(shape, np.float32)
    blue = np.zeros(shape, np.float32)
    for index, (cy, cx, radius, nucleus) in enumerate(cells, start=1):
        distance = np.hypot(yy - cy, xx - cx)
        mine = (distance < radius) & (distance / radius < best)
        truth[mine] = index
        best[mine] = (distance / radius)[mine]
        blue[distance < nucleus] = 0.8
    inside = truth > 0
    red[inside] = 0.2 + 0.6 * (1.0 - best[inside]) ** 0.7
    rng = np.random.default_rng(seed)
    planes = {name: plane + background + noise * rng.standard_normal(shape).astype(np.float32)
              for name, plane in (("red", red), ("yellow", 0.8 * red), ("blue", blue))}
    planes["green"] = 0.5 * red
    to16 = {name: (np.clip(plane, 0, 1) * 65535).astype(np.uint16) for name, plane in planes.items()}
    return to16, truth


class CountingBackend:
    """Wraps a backend and counts the images it segments (to tell cache hits from misses)."""

    def __init__(self, inner):
        self.inner = inner
        self.name = inner.name
        self.channels = inner.channels
        self.calls = 0

    def settings(self) -> dict:
        return self.inner.settings()

    def label(self, channels) -> LabelPair:
        self.calls += 1
        return self.inner.label(channels)

    def label_many(self, images) -> list[LabelPair]:
        return [self.label(channels) for channels in images]
