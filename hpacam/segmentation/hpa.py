"""Adapter for HPA's own segmenter, `hpacellseg` (CellProfiling/HPA-Cell-Segmentation), optional.

Its API: `CellSegmentator(nuclei_model, cell_model, scale_factor, device, padding,
multi_channel_model)`, `pred_nuclei([blue, ...])`, `pred_cells([[red, ...], [yellow, ...],
[blue, ...]])` (yellow None for the 2-channel model), and `utils.label_cell(nuc_pred, cell_pred)
-> (nuclei, cells)`. This adapter keeps three promises:

- never download: hpacellseg fetches weights from the web when a path does not exist, so we
  require both paths, check that the files exist, load them ourselves and hand it the loaded
  models (it downloads only when given a path);
- never run untrusted code: the weight files are whole pickled modules, and `torch.load` of a
  pickle executes whatever code the file holds, so loading needs
  `segmentation.hpa.trust_weights=true`, set by a person who trusts the files' source;
- batch by size: the U-Nets take images of one size per call, so images are grouped by shape
  and sent `batch_size` at a time.

hpacellseg resizes its predictions back with `cv2.resize(pred, (rows, cols))`, which transposes
non-square images; predictions of the wrong shape are resized to the image's shape before
labelling. The package is imported only when this backend is chosen.
"""

from __future__ import annotations

import hashlib
import importlib
from collections import defaultdict
from pathlib import Path
from typing import Any, Callable, Sequence

import cv2
import numpy as np

from hpacam.devices import resolve_device
from hpacam.images import unit_scale
from hpacam.segmentation.core import Channels, LabelPair, SegmentationError
from hpacam.segmentation.settings import HpaSettings, SegmentationConfig

INSTALL_HINT = ("install it from its source (pip install "
                "https://github.com/CellProfiling/HPA-Cell-Segmentation/archive/master.zip) or use "
                "segmentation.backend=classic")
TRUST_REASON = (
    "hpacellseg's weight files are whole pickled torch modules, and torch.load of a pickle runs "
    "whatever code the file contains. Set segmentation.hpa.trust_weights=true only for files from a "
    "source you trust (HPA's own release), checked against the checksum it publishes."
)


def check_settings(settings: HpaSettings) -> tuple[Path, Path]:
    """Both weight files given and present, sane numbers, and the trust switch on; else a clear error."""
    given = {"segmentation.hpa.nuclei_model": settings.nuclei_model,
             "segmentation.hpa.cell_model": settings.cell_model}
    missing = [key for key, path in given.items() if path is None]
    if missing:
        raise SegmentationError(
            f"the hpa backend needs local weight files: set {' and '.join(missing)} "
            "(it never downloads them; see docs/segmentation.md)")
    absent = [f"{key}={path}" for key, path in given.items() if not Path(path).is_file()]
    if absent:
        raise SegmentationError(f"weight file(s) not found: {', '.join(absent)} (nothing is downloaded)")
    if not 0 < settings.scale_factor <= 1:
        raise SegmentationError(f"segmentation.hpa.scale_factor must be in (0, 1], got {settings.scale_factor}")
    if settings.batch_size < 1:
        raise SegmentationError(f"segmentation.hpa.batch_size must be >= 1, got {settings.batch_size}")
    if not settings.trust_weights:
        raise SegmentationError(f"refusing to load {settings.nuclei_model} and {settings.cell_model}: {TRUST_REASON}")
    return Path(settings.nuclei_model), Path(settings.cell_model)


def import_hpacellseg() -> tuple[Any, Any]:
    """(cellsegmentator module, utils module), or SegmentationError saying how to install it."""
    try:
        return importlib.import_module("hpacellseg.cellsegmentator"), importlib.import_module("hpacellseg.utils")
    except ImportError as exc:
        raise SegmentationError(f"segmentation.backend=hpa needs the hpacellseg package ({exc}); {INSTALL_HINT}") from None


def load_trusted_model(path: Path, device: str) -> Any:
    """torch.load of a whole pickled module; call only after `check_settings` passed."""
    import torch

    from hpacam.torchfile import load_trusted_pickle

    return load_trusted_pickle(path, torch.device(device))


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def to_uint8(plane: np.ndarray, divisor: float) -> np.ndarray:
    """A channel as hpacellseg expects it from an 8-bit file: uint8 0..255."""
    if plane.dtype == np.uint8:
        return plane
    scaled = np.asarray(plane, dtype=np.float32) * (255.0 / divisor)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


def image_divisor(channels: Channels, names: Sequence[str]) -> float:
    """Integer images: `unit_scale` (8-bit data in 16-bit files too); float images are in [0, 1]."""
    planes = [np.asarray(channels[name]) for name in names]
    if all(np.issubdtype(p.dtype, np.integer) for p in planes):
        return unit_scale(planes)
    return 1.0


def group_by_shape(images: Sequence[Channels], batch_size: int) -> list[list[int]]:
    """Indices of images in batches of at most `batch_size`, each batch of one shape."""
    groups: dict[tuple[int, int], list[int]] = defaultdict(list)
    for index, channels in enumerate(images):
        groups[tuple(np.shape(channels["blue"]))].append(index)
    return [members[i:i + batch_size] for members in groups.values() for i in range(0, len(members), batch_size)]


def restore_shape(prediction: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A (h, w, 3) prediction resized to the image's (H, W) when hpacellseg got it wrong."""
    if prediction.shape[:2] == tuple(shape):
        return prediction
    return cv2.resize(prediction, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def convert_output(nuclei: np.ndarray, cells: np.ndarray, shape: tuple[int, int]) -> LabelPair:
    """label_cell's (nuclei, cells) -> our (cells, nuclei) int32 pair, checked against the image shape."""
    cells, nuclei = np.asarray(cells), np.asarray(nuclei)
    if cells.shape != tuple(shape) or nuclei.shape != tuple(shape):
        raise SegmentationError(f"hpacellseg returned labels of shape {cells.shape}/{nuclei.shape} for an image of {shape}")
    return cells.astype(np.int32), nuclei.astype(np.int32)


class HpaBackend:
    """hpacellseg's nuclei and cell U-Nets plus its `label_cell` post-processing."""

    name = "hpa"

    def __init__(self, settings: HpaSettings, segmentator_factory: Callable[[], Any] | None = None,
                 label_cell: Callable[[np.ndarray, np.ndarray], tuple] | None = None):
        """Checks settings and the package at once; the models load on the first image.

        `segmentator_factory` and `label_cell` replace the real package (for tests).
        """
        self.config = settings
        self.channels = ("red", "yellow", "blue") if settings.multi_channel_model else ("red", "blue")
        self._weights = check_settings(settings)
        if label_cell is None:
            label_cell = import_hpacellseg()[1].label_cell  # fail fast, before any image is read
        self._factory = segmentator_factory or self._load_segmentator
        self._label_cell = label_cell
        self._segmentator: Any = None
        self._digests: dict[str, str] | None = None

    @classmethod
    def from_config(cls, cfg: SegmentationConfig) -> "HpaBackend":
        return cls(cfg.hpa)

    def settings(self) -> dict:
        """What changes the output: the weights' content (not their paths) and the scaling."""
        if self._digests is None:
            self._digests = {"nuclei_model_sha256": file_digest(self._weights[0]),
                             "cell_model_sha256": file_digest(self._weights[1])}
        return {**self._digests, "scale_factor": self.config.scale_factor, "padding": self.config.padding,
                "multi_channel_model": self.config.multi_channel_model}

    def _load_segmentator(self) -> Any:
        nuclei_path, cell_path = self._weights
        device = resolve_device(self.config.device, "segmentation.hpa.device")
        nuclei_model = self._load_model(nuclei_path, "nuclei", device)
        cell_model = self._load_model(cell_path, "cell", device)
        cellsegmentator, _ = import_hpacellseg()
        return cellsegmentator.CellSegmentator(
            nuclei_model=nuclei_model, cell_model=cell_model,
            scale_factor=self.config.scale_factor, device=device,
            padding=self.config.padding, multi_channel_model=self.config.multi_channel_model,
        )

    def _load_model(self, path: Path, role: str, device: str) -> Any:
        """One trusted weight file; a damaged or foreign one is a SegmentationError naming it (the run's fault)."""
        try:
            return load_trusted_model(path, device)
        except Exception as exc:  # torch raises several types for a damaged or foreign file
            detail = " ".join(str(exc).split()).split(". ")[0][:200]  # torch's first sentence is the reason
            raise SegmentationError(f"{path}: cannot load the hpa backend's {role} model "
                                    f"({type(exc).__name__}: {detail})") from None

    def segmentator(self) -> Any:
        if self._segmentator is None:
            self._segmentator = self._factory()
        return self._segmentator

    def label(self, channels: Channels) -> LabelPair:
        return self.label_many([channels])[0]

    def label_many(self, images: Sequence[Channels]) -> list[LabelPair]:
        results: list[LabelPair | None] = [None] * len(images)
        for batch in group_by_shape(images, self.config.batch_size):
            for index, pair in zip(batch, self._run_batch([images[i] for i in batch])):
                results[index] = pair
        return results  # type: ignore[return-value]

    def _run_batch(self, batch: Sequence[Channels]) -> list[LabelPair]:
        """One call of each U-Net on images of one shape, then `label_cell` per image."""
        segmentator = self.segmentator()
        planes = {name: [] for name in ("red", "yellow", "blue")}
        for channels in batch:
            divisor = image_divisor(channels, self.channels)
            for name in self.channels:
                planes[name].append(to_uint8(np.asarray(channels[name]), divisor))
        shape = tuple(np.shape(batch[0]["blue"]))
        nuclei_preds = segmentator.pred_nuclei(planes["blue"])
        yellow = planes["yellow"] if self.config.multi_channel_model else None
        cell_preds = segmentator.pred_cells([planes["red"], yellow, planes["blue"]])
        if len(nuclei_preds) != len(batch) or len(cell_preds) != len(batch):
            raise SegmentationError(f"hpacellseg returned {len(nuclei_preds)}/{len(cell_preds)} predictions for {len(batch)} images")
        return [convert_output(*self._label_cell(restore_shape(n, shape), restore_shape(c, shape)), shape)
                for n, c in zip(nuclei_preds, cell_preds)]
