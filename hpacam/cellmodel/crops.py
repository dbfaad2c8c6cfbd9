"""One fixed-size crop per segmented cell, and the on-disk cache that holds them for training.

A crop is the cell's bounding box, grown by `margin` on each side and made square around the
box's centre (so a cell's shape is not distorted), cut from all four channels plus the cell's own
mask, and resized to `size` x `size`. Pixels outside the image are zero. Crops are stored as
uint8 (channels x 255, mask x 255): a 64 px crop of five channels is 20 KB, so the demo's 10k
training cells fit in 200 MB and a real set's million cells at 224 px sit on disk as a memory map.

The cache is what lets training epochs neither re-segment nor re-decode: crops of a whole
training set are written once, with their index (image, cell) and the settings that made them;
a change of segmentation settings, crop settings or image bytes gives another key, so a stale
cache is never read.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

import cv2
import numpy as np
import pandas as pd
from scipy import ndimage
from tqdm import tqdm

from hpacam.classes import CHANNELS
from hpacam.images import ReadOptions, channel_path, read_image
from hpacam.segmentation.cache import hash_files

log = logging.getLogger(__name__)

CROP_CHANNELS = 5  # red, green, blue, yellow, the cell's mask
CACHE_FORMAT = 1


@dataclass(frozen=True)
class CropSettings:
    size: int = 64  # side of a crop in pixels
    margin: float = 0.1  # the box grows by this share of its longer side on each side

    def __post_init__(self):
        if self.size < 8:
            raise ValueError(f"crop size must be at least 8 px, got {self.size}")
        if not 0.0 <= self.margin <= 1.0:
            raise ValueError(f"crop margin must be in [0, 1], got {self.margin}")


def crop_window(box: tuple[slice, slice], margin: float) -> tuple[int, int, int]:
    """(top, left, side) of the square window around a cell's bounding box."""
    rows, cols = box
    height, width = rows.stop - rows.start, cols.stop - cols.start
    side = max(int(round(max(height, width) * (1 + 2 * margin))), 2)
    centre_y, centre_x = (rows.start + rows.stop) / 2, (cols.start + cols.stop) / 2
    return int(round(centre_y - side / 2)), int(round(centre_x - side / 2)), side


def cut_padded(planes: np.ndarray, top: int, left: int, side: int) -> np.ndarray:
    """planes[top:top+side, left:left+side] with zeros where the window leaves the image."""
    height, width = planes.shape[:2]
    out = np.zeros((side, side, planes.shape[2]), dtype=planes.dtype)
    y0, x0, y1, x1 = max(top, 0), max(left, 0), min(top + side, height), min(left + side, width)
    if y1 > y0 and x1 > x0:
        out[y0 - top:y1 - top, x0 - left:x1 - left] = planes[y0:y1, x0:x1]
    return out


def resize_planes(planes: np.ndarray, size: int) -> np.ndarray:
    """(side, side, C) float -> (C, size, size); area interpolation when shrinking (OpenCV takes <= 4 channels)."""
    interp = cv2.INTER_AREA if planes.shape[0] > size else cv2.INTER_LINEAR
    return np.stack([cv2.resize(np.ascontiguousarray(planes[..., c]), (size, size), interpolation=interp)
                     for c in range(planes.shape[2])])


def cell_crops(image: np.ndarray, cells: np.ndarray, settings: CropSettings = CropSettings()) -> np.ndarray:
    """(cells, 5, size, size) uint8 crops of cells 1..N of a label image; `image` is (H, W, 4) in [0, 1].

    Crop i belongs to cell i + 1 (the order every later stage uses). Its fifth channel is that
    cell's mask only: neighbours inside the window are in the stain channels but not in the mask.
    """
    if image.shape[:2] != cells.shape or image.ndim != 3 or image.shape[2] != len(CHANNELS):
        raise ValueError(f"image {image.shape} and cells {cells.shape} must be (H, W, 4) and (H, W)")
    n_cells = int(cells.max(initial=0))
    out = np.zeros((n_cells, CROP_CHANNELS, settings.size, settings.size), dtype=np.uint8)
    for index, box in enumerate(ndimage.find_objects(cells, max_label=n_cells)):
        if box is None:  # a label with no pixels keeps an empty crop
            continue
        top, left, side = crop_window(box, settings.margin)
        stains = cut_padded(image, top, left, side)
        mask = cut_padded((cells == index + 1)[..., None].astype(np.float32), top, left, side)
        planes = resize_planes(np.concatenate([stains.astype(np.float32), mask], axis=2), settings.size)
        out[index] = np.clip(planes * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return out


# ----------------------------------------------------------------------------- the cache


@dataclass
class CropSet:
    """Crops of many images: `crops[i]` is cell `index.cell[i]` of image `index.ID[i]`."""

    crops: np.ndarray  # (N, 5, size, size) uint8, usually a read-only memory map
    index: pd.DataFrame  # ID, cell, border (one row per crop)
    folder: Optional[Path] = None

    def rows_of(self, image_ids: Sequence[str]) -> np.ndarray:
        wanted = set(image_ids)
        return np.flatnonzero(self.index["ID"].isin(wanted).to_numpy())


class ChainedCrops:
    """Several crop sets (e.g. memory maps of two sources) indexed as one, without copying them."""

    def __init__(self, parts: Sequence[np.ndarray]):
        self.parts = list(parts)
        self.starts = np.cumsum([0] + [len(p) for p in self.parts])

    def __len__(self) -> int:
        return int(self.starts[-1])

    def __getitem__(self, index: int) -> np.ndarray:
        if not 0 <= index < len(self):
            raise IndexError(index)
        part = int(np.searchsorted(self.starts, index, side="right")) - 1
        return self.parts[part][index - self.starts[part]]


def cache_key(folder: Path, image_ids: Sequence[str], settings: CropSettings, segmentation_key: str,
              extra: dict | None = None) -> str:
    """Hash of everything a crop depends on: image bytes, segmentation settings, crop settings."""
    digest = hashlib.blake2b(digest_size=20)
    digest.update(json.dumps({"format": CACHE_FORMAT, "crop": asdict(settings), "segmentation": segmentation_key,
                              "extra": extra or {}}, sort_keys=True).encode())
    for image_id in image_ids:
        paths = {name: channel_path(folder, image_id, name) for name in CHANNELS}
        digest.update(f"{image_id}\0{hash_files(paths)}\0".encode())
    return digest.hexdigest()[:24]


def load_crop_set(folder: Path) -> CropSet:
    meta = json.loads((folder / "meta.json").read_text())
    shape = tuple(meta["shape"])
    crops = np.memmap(folder / "crops.u8", dtype=np.uint8, mode="r", shape=shape) if shape[0] else \
        np.zeros(shape, np.uint8)
    index = pd.read_csv(folder / "index.csv", dtype={"ID": str})
    if len(index) != shape[0]:
        raise ValueError(f"{folder}: index.csv has {len(index)} rows but crops.u8 holds {shape[0]} crops")
    return CropSet(crops, index, folder)


def build_crop_set(cache_root: Path, folder: Path, image_ids: Sequence[str], segmenter,
                   settings: CropSettings, read_options: ReadOptions = ReadOptions(),
                   extra: dict | None = None, progress: bool = True) -> CropSet:
    """The crops of every cell of `image_ids`, from the cache when it holds this exact set.

    A new set is written to a temporary folder and renamed into place, so a killed build leaves
    no half-written cache behind (the next run starts it again).
    """
    key = cache_key(folder, image_ids, settings, segmenter.settings_key, extra)
    target = Path(cache_root) / key
    if (target / "meta.json").is_file():
        log.info("crops: reusing %s", target)
        return load_crop_set(target)
    for stale in Path(cache_root).glob(f".{key}.tmp*"):  # left by a killed build of this same set
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(cache_root) / f".{key}.tmp{os.getpid()}"
    tmp.mkdir(parents=True)
    rows, count = [], 0
    with open(tmp / "crops.u8", "wb") as fh:
        for image_id, crops, border in tqdm(_crops_of_images(folder, image_ids, segmenter, settings, read_options),
                                            total=len(image_ids), desc="crops", unit="img", disable=not progress):
            fh.write(crops.tobytes())
            rows += [(image_id, cell + 1, bool(border[cell])) for cell in range(len(crops))]
            count += len(crops)
    pd.DataFrame(rows, columns=["ID", "cell", "border"]).to_csv(tmp / "index.csv", index=False)
    meta = {"format": CACHE_FORMAT, "shape": [count, CROP_CHANNELS, settings.size, settings.size],
            "crop": asdict(settings), "segmentation": segmenter.description, "images": len(image_ids),
            "extra": extra or {}}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1, default=str))
    try:
        os.replace(tmp, target)
    except OSError:  # another process finished the same set first: theirs is as good
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("crops: %d cells of %d images written to %s", count, len(image_ids), target)
    return load_crop_set(target)


def _crops_of_images(folder: Path, image_ids: Sequence[str], segmenter, settings: CropSettings,
                     read_options: ReadOptions) -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
    for image_id in image_ids:
        seg = segmenter.segment_file(folder, image_id)
        image = read_image(folder, image_id, "rgby", options=read_options)
        if image.shape[:2] != seg.shape:
            raise ValueError(f"{folder / image_id}_*: image {image.shape[:2]} and its segmentation {seg.shape} differ")
        border = seg.border.is_border if seg.n_cells else np.zeros(0, bool)
        yield image_id, cell_crops(image, seg.cells, settings), border
