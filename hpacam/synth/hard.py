"""Hard cases for measuring segmentation: options of the generator, all off by default.

The default images are what the demo and the tuned settings were built on; these options make
the cases where a segmenter tuned on them breaks (see docs/segmentation.md for the figures):

- brightness_spread: nucleus brightness varies `spread`-fold within one image (log-uniform
  between 1/spread and 1, the two ends always present), as with cell-cycle and staining spread.
- clumps: nuclei come in groups of 2-6 that touch (centres ~0.9 of the summed radii apart).
- texture: coarse chromatin texture and dark gaps, `texture` x stronger than the default.
- focus_blur: this share of the nuclei is out of focus (blurred by ~a third of their radius, so
  they are dimmer and softer-edged; their truth outline stays the in-focus one).
- cell_count: (low, high) cells per image instead of the default 9-44: dense fields (60+)
  shrink nuclei and cells to fit (a lower magnification), sparse fields hold a few cells.
- nucleus_scale: nuclei and cells this many times the default size (1 = default).

With every option off the generator makes no extra random draw, so the default images stay
byte-identical. The options are for measuring; the segmenter must not be tuned to one setting.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

DENSE_FROM = 60  # from this many cells on, cells and nuclei shrink to fit the field


@dataclass(frozen=True)
class HardCases:
    brightness_spread: float = 1.0
    clumps: bool = False
    texture: float = 0.0
    focus_blur: float = 0.0
    cell_count: Optional[tuple[int, int]] = None
    nucleus_scale: float = 1.0

    def __post_init__(self):
        problems = []
        if self.brightness_spread < 1:
            problems.append(f"brightness_spread must be >= 1, got {self.brightness_spread}")
        if self.texture < 0:
            problems.append(f"texture must be >= 0, got {self.texture}")
        if not 0 <= self.focus_blur <= 1:
            problems.append(f"focus_blur is a share of nuclei, in [0, 1], got {self.focus_blur}")
        if self.cell_count is not None and not 1 <= self.cell_count[0] <= self.cell_count[1]:
            problems.append(f"cell_count must be (low, high) with 1 <= low <= high, got {self.cell_count}")
        if not 0.3 <= self.nucleus_scale <= 2.0:
            problems.append(f"nucleus_scale must be in [0.3, 2], got {self.nucleus_scale}")
        if problems:
            raise ValueError("hard cases: " + "; ".join(problems))


NONE = HardCases()

# The named cases of bench/segmentation.py --cases (each one option on).
CASES: dict[str, HardCases] = {
    "default": NONE,
    "spread": HardCases(brightness_spread=10.0),
    "clumps": HardCases(clumps=True),
    "texture": HardCases(texture=2.5),
    "blur": HardCases(focus_blur=0.4),
    "dense": HardCases(cell_count=(60, 90)),
    "sparse": HardCases(cell_count=(3, 3)),
    "small": HardCases(nucleus_scale=0.5),
    "all": HardCases(brightness_spread=10.0, clumps=True, texture=2.5, focus_blur=0.4),
    # the same options at other strengths: the figures must not hang on one generator setting
    "spread-20": HardCases(brightness_spread=20.0),
    "texture-5": HardCases(texture=5.0),
    "blur-70": HardCases(focus_blur=0.7),
    "dense-120": HardCases(cell_count=(100, 130)),
    "small-35": HardCases(nucleus_scale=0.35),
    "big": HardCases(nucleus_scale=1.5),
    "clumps-spread": HardCases(clumps=True, brightness_spread=5.0),
}


def hard_case(name: str) -> HardCases:
    """The named case, or a ValueError listing the names."""
    if name not in CASES:
        raise ValueError(f"unknown hard case {name!r}; choose from {', '.join(CASES)}")
    return CASES[name]
