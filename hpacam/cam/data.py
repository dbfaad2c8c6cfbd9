"""Training data: label tables -> folds -> a dataset of augmented RGBY tensors -> resumable batches.

Augmentations are drawn from a generator seeded by (seed, epoch, index) rather than from global
state, so a sample looks the same whichever worker loads it and whether or not the run was
resumed: that is what makes "resume after N steps == 2N steps straight" hold exactly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from hpacam.cam.config import AugmentConfig, DataConfig
from hpacam.images import COLOR_MODES, EXTENSIONS, ImageReadError, ReadOptions, read_image, resize_image
from hpacam.labels import combine_label_tables, make_folds, multi_hot, read_labels

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- tables and folds


@dataclass
class LabelledImages:
    """Image IDs, the folder of each, and their (N, 19) multi-hot targets."""

    ids: list[str]
    folders: list[Path]
    targets: np.ndarray

    def subset(self, rows: np.ndarray) -> "LabelledImages":
        rows = np.asarray(rows)
        return LabelledImages([self.ids[i] for i in rows], [self.folders[i] for i in rows], self.targets[rows])

    def __len__(self) -> int:
        return len(self.ids)


def read_sources(cfg: DataConfig) -> LabelledImages:
    """Read every {images, labels} source, check the images exist, and combine them.

    Missing images are found here, from one directory listing per source, so a bad path fails
    in the first second rather than hours into an epoch.
    """
    frames = []
    for source in cfg.sources:
        frame = read_labels(source.labels)
        check_images_present(frame["ID"].tolist(), Path(source.images), Path(source.labels), cfg.mode)
        frames.append(frame.assign(folder=str(source.images)))
    table = combine_label_tables(*frames)
    return LabelledImages(table["ID"].tolist(), [Path(f) for f in table["folder"]], multi_hot(table["labels"]))


def check_images_present(ids: Sequence[str], folder: Path, labels_path: Path, mode: str) -> None:
    """Every channel file of every listed image exists (any extension read_image accepts)."""
    if not folder.is_dir():
        raise ImageReadError(f"{folder}: image folder (for {labels_path}) not found")
    stems = {path.stem for path in folder.iterdir() if path.suffix.lower() in EXTENSIONS}
    channels = dict.fromkeys(COLOR_MODES[mode])
    missing = [f"{image_id}_{channel}" for image_id in ids for channel in channels
               if f"{image_id}_{channel}" not in stems]
    if missing:
        raise ImageReadError(f"{folder}: {len(missing)} channel file(s) of images listed in {labels_path} "
                             f"are missing, e.g. {missing[:3]}")


def split_folds(images: LabelledImages, cfg: DataConfig) -> tuple[LabelledImages, LabelledImages | None]:
    """(train, validation) for `cfg.fold`; fold -1 trains on everything and validates on nothing."""
    if cfg.fold < 0:
        return images, None
    folds = make_folds(images.targets, cfg.n_folds, cfg.fold_seed)
    return images.subset(np.flatnonzero(folds != cfg.fold)), images.subset(np.flatnonzero(folds == cfg.fold))


# ----------------------------------------------------------------------------- augmentations


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, epoch, index])


def random_resized_crop(image: np.ndarray, size: int, scale: tuple[float, float],
                        ratio: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """torchvision's RandomResizedCrop on a numpy (H, W, C) image, output (size, size, C)."""
    height, width = image.shape[:2]
    area = height * width
    for _ in range(10):
        target_area = area * rng.uniform(*scale)
        aspect = np.exp(rng.uniform(np.log(ratio[0]), np.log(ratio[1])))
        crop_w = int(round(np.sqrt(target_area * aspect)))
        crop_h = int(round(np.sqrt(target_area / aspect)))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            top = int(rng.integers(0, height - crop_h + 1))
            left = int(rng.integers(0, width - crop_w + 1))
            return resize_image(image[top:top + crop_h, left:left + crop_w], size)
    return resize_image(image, size)  # the whole image when no crop fits


def augment(image: np.ndarray, size: int, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Crop, dihedral pose and per-channel brightness: the variations microscopy really has.

    Cells have no preferred orientation, and each stain's intensity varies independently from
    image to image; colour, blur or perspective changes of natural-image pipelines do not apply.
    """
    if cfg.crop_scale != (1.0, 1.0):
        image = random_resized_crop(image, size, cfg.crop_scale, cfg.crop_ratio, rng)
    else:
        image = resize_image(image, size)
    if cfg.hflip and rng.random() < 0.5:
        image = image[:, ::-1]
    if cfg.vflip and rng.random() < 0.5:
        image = image[::-1]
    if cfg.rot90:
        image = np.rot90(image, k=int(rng.integers(4)))
    if cfg.brightness > 0:
        gains = 1.0 + rng.uniform(-cfg.brightness, cfg.brightness, size=image.shape[2])
        image = np.clip(image * gains.astype(np.float32), 0.0, 1.0)
    return np.ascontiguousarray(image, dtype=np.float32)


# ----------------------------------------------------------------------------- dataset


class CamDataset(Dataset):
    """(image (C, S, S) float32 in [0, 1], targets (19,), index) per item; augmented when training."""

    def __init__(self, images: LabelledImages, image_size: int, mode: str = "rgby",
                 augment_cfg: AugmentConfig | None = None, seed: int = 0,
                 read_options: ReadOptions = ReadOptions(), cache: bool = False):
        self.images = images
        self.cache: dict[int, np.ndarray] | None = {} if cache else None
        self.read_options = read_options
        self.image_size = image_size
        self.mode = mode
        self.augment_cfg = augment_cfg if augment_cfg is not None and augment_cfg.enabled else None
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """New augmentations each epoch; call before creating the epoch's DataLoader iterator."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.images)

    def read(self, index: int, size: int | None) -> np.ndarray:
        """The decoded image, from the cache when it holds it (the cache never changes what is read)."""
        if self.cache is not None and index in self.cache:
            return self.cache[index]
        image = read_image(self.images.folders[index], self.images.ids[index], self.mode, size=size,
                           options=self.read_options)
        if self.cache is not None:
            self.cache[index] = image
        return image

    def __getitem__(self, index: int):
        if self.augment_cfg is None:
            image = self.read(index, self.image_size)
        else:
            image = augment(self.read(index, None), self.image_size, self.augment_cfg,
                            sample_rng(self.seed, self.epoch, index))
        tensor = torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))
        return tensor, torch.from_numpy(self.images.targets[index]), index


# ----------------------------------------------------------------------------- sampling


class ShardedSampler(Sampler[int]):
    """A seeded per-epoch order, split across processes, that can start part-way into an epoch.

    Like DistributedSampler (pad to a multiple of the world size, then take every world_size-th
    index), plus `limit` (use only the first `limit` indices of this rank's share, so every epoch
    has a whole number of optimizer steps) and `skip` (start after the first `skip`, for resuming).
    """

    def __init__(self, size: int, shuffle: bool, seed: int, rank: int = 0, world_size: int = 1,
                 pad: bool = True):
        self.size, self.shuffle, self.seed = size, shuffle, seed
        self.rank, self.world_size, self.pad = rank, world_size, pad
        self.epoch, self.skip, self.limit = 0, 0, None

    def shard(self) -> list[int]:
        """This rank's indices for the current epoch, before `limit` and `skip`."""
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = list(range(self.size))
        if self.pad and self.size % self.world_size:
            order += order[: self.world_size - self.size % self.world_size]
        return order[self.rank::self.world_size]

    def set_epoch(self, epoch: int, skip: int = 0, limit: int | None = None) -> None:
        self.epoch, self.skip, self.limit = epoch, skip, limit

    def _indices(self) -> list[int]:
        shard = self.shard()
        if self.limit is not None:
            shard = shard[: self.limit]
        return shard[self.skip:]

    def __iter__(self) -> Iterator[int]:
        return iter(self._indices())

    def __len__(self) -> int:
        return len(self._indices())


def shard_size(size: int, world_size: int) -> int:
    """How many indices each rank gets from a padded ShardedSampler."""
    return -(-size // world_size)


def summarise_images(images: LabelledImages) -> str:
    """One log line on a training or validation split: its size and how many images carry each class."""
    counts = images.targets.sum(axis=0).astype(int)
    return f"{len(images)} images; per-class counts {counts.tolist()}"

