"""Typed settings of the segmentation stage (the `segmentation:` section of a config).

Lengths of the classic backend are fractions of the image's longer side: HPA's 1728, 2048 and
3072 px images show about the same field of view, so a nucleus is ~9% of the width at every
size and one set of numbers serves them all. Areas are fractions of a typical nucleus's area.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from hpacam.devices import check_device


@dataclass
class ClassicSettings:
    """The weight-free default backend (see `hpacam.segmentation.classic`)."""

    work_size: int = 512  # longer side of the working image in px; labels are resized back
    nucleus_diameter: Optional[float] = None  # typical nucleus diameter, fraction of the longer side; None: measured
    blue_sigma: float = 0.04  # Gaussian smoothing of blue, in nucleus diameters
    floor_level: float = 0.1  # nucleus candidates: above this far from background to Otsu's level
    seed_sigma: float = 0.12  # smoothing of blue for the nucleus peaks, in nucleus diameters
    seed_shape_weight: float = 1.5  # weight of the distance to the edge (in diameters) added to log blue for the peaks
    seed_depth: float = 0.1  # a nucleus peak stands this much (relative) above the saddle to a brighter one
    cut_sigma: float = 0.0  # extra smoothing of blue for that cut, in diameters (0.05-0.1: smoother outlines of coarse chromatin, but clumps merge more)
    region_cut: float = 0.5  # each nucleus keeps pixels above this x its own bright level
    min_nucleus_area: float = 0.12  # smaller blue objects are debris, in typical nucleus areas
    min_nucleus_contrast: float = 4.0  # nuclei stand this many background spreads above it (noise: ~3)
    chromatin_brightness: float = 1.1  # mitotic chromatin: >= this x the median nucleus brightness...
    chromatin_max_area: float = 0.35  # ...and smaller than this (typical nucleus areas)
    min_chromatin_area: float = 0.03  # condensed chromatin is kept down to this area
    chromatin_pair_distance: float = 0.9  # anaphase: two pieces this close (centroids, in diameters) are one nucleus
    split_depth: float = 0.06  # h-maxima depth of the distance map that splits touching nuclei, in diameters
    cyto_red: float = 1.0  # weights of the normalised channels in the cytoplasm signal
    cyto_yellow: float = 1.0
    cyto_blue: float = 0.5
    cyto_sigma: float = 0.04  # Gaussian smoothing of the cytoplasm signal, in nucleus diameters
    background_percentile: float = 1.0  # the background level of the cytoplasm signal
    foreground_level: float = 0.16  # foreground: this far from background to Otsu's level
    cell_cut: float = 0.12  # a cell keeps pixels above this x its own median (over background)
    orphan_distance: float = 1.2  # a cytoplasm peak this far (diameters) from every nucleus is a cell whose nucleus was missed; 0 = off
    orphan_sigma: float = 0.3  # smoothing of the cytoplasm for those peaks, in diameters
    orphan_depth: float = 0.25  # such a peak stands this much (relative) above the saddle to a brighter one
    compactness: float = 0.0  # skimage watershed compactness (0 = follow the signal only)
    min_cell_area: float = 0.3  # smaller cells are dropped, in typical nucleus areas
    percentile: float = 99.5  # channels are divided by this percentile (bit depth and gain free)


@dataclass
class HpaSettings:
    """HPA's `hpacellseg` U-Nets (optional; see `hpacam.segmentation.hpa`)."""

    nuclei_model: Optional[Path] = None  # e.g. dpn_unet_nuclei_v1.pth, never downloaded
    cell_model: Optional[Path] = None  # e.g. dpn_unet_cell_3ch_v1.pth, never downloaded
    trust_weights: bool = False  # the files are whole pickles: loading them runs their code
    scale_factor: float = 0.25
    device: str = "cpu"  # "auto", "cpu", "cuda" or "cuda:N"
    padding: bool = False
    multi_channel_model: bool = True  # 3-channel cell model (red, yellow, blue) or 2-channel (red, blue)
    batch_size: int = 8  # images of one size sent together

    def __post_init__(self):
        check_device("segmentation.hpa.device", self.device)


@dataclass
class BorderSettings:
    """Which cells count as cut by the image border (see `hpacam.segmentation.border`)."""

    min_contact_ratio: float = 0.5  # border contact / equivalent diameter; 0.5 ~ 3% of a disc cut off


@dataclass
class CacheSettings:
    enabled: bool = True
    dir: Path = Path("data/masks")


@dataclass
class SegmentationConfig:
    backend: str = "classic"  # a registered backend: "classic" or "hpa"
    classic: ClassicSettings = field(default_factory=ClassicSettings)
    hpa: HpaSettings = field(default_factory=HpaSettings)
    border: BorderSettings = field(default_factory=BorderSettings)
    cache: CacheSettings = field(default_factory=CacheSettings)


@dataclass
class SegmentRunConfig:
    """The config of `python -m hpacam.segmentation`: overrides read `segmentation.hpa.device=cuda`."""

    segmentation: SegmentationConfig = field(default_factory=SegmentationConfig)


