"""Segmenting images stored as HPA channel files, through the mask cache.

This is the entry point of every later stage: `segment_image(folder, image_id, cfg)` returns the
cached segmentation when the channel files and settings are unchanged (hashing the files'
bytes, without decoding them), and otherwise reads, segments and caches it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Sequence

import numpy as np

from hpacam.images import ImageReadError, ReadOptions, channel_path, read_channel_file, write_png
from hpacam.segmentation.cache import CacheKey, MaskCache, hash_arrays, hash_files, settings_key
from hpacam.segmentation.core import (Backend, Channels, Segmentation, SegmentationError, as_channels,
                                      check_channels, content_settings, finish_segmentation, make_backend)
from hpacam.segmentation.settings import SegmentationConfig

log = logging.getLogger(__name__)


class _FromConfig:
    """Sentinel: open the cache the config describes (or none when `cache.enabled` is false)."""


FROM_CONFIG = _FromConfig()


def open_cache(cfg: SegmentationConfig) -> MaskCache | None:
    return MaskCache(cfg.cache.dir) if cfg.cache.enabled else None


def _resolve_cache(cache: MaskCache | None | _FromConfig, cfg: SegmentationConfig) -> MaskCache | None:
    return open_cache(cfg) if isinstance(cache, _FromConfig) else cache


def read_channels(folder: str | os.PathLike, image_id: str, names: Sequence[str],
                  options: ReadOptions = ReadOptions()) -> dict[str, np.ndarray]:
    """The named channel files of one image as raw uint8/uint16 arrays (ImageReadError names the file).

    Channels of different sizes are the files' fault, so an ImageReadError too (a bad image, which
    a caller may skip), never a SegmentationError (a backend that cannot run, which ends a run).
    """
    channels = {name: read_channel_file(channel_path(folder, image_id, name), options) for name in names}
    shapes = {name: np.shape(array) for name, array in channels.items()}
    if len(set(shapes.values())) > 1:
        detail = ", ".join(f"{name} {h}x{w}" for name, (h, w) in shapes.items())
        raise ImageReadError(f"{Path(folder) / image_id}_*: channels of different sizes ({detail})")
    return channels


class Segmenter:
    """A backend, its settings key and the cache, built once and used for many images."""

    def __init__(self, cfg: SegmentationConfig = SegmentationConfig(), backend: Backend | None = None,
                 cache: MaskCache | None | _FromConfig = FROM_CONFIG, read_options: ReadOptions = ReadOptions()):
        self.cfg = cfg
        self.read_options = read_options  # the caller's pixel limit and RGB policy, applied before decoding
        self.backend = backend or make_backend(cfg)
        self.cache = _resolve_cache(cache, cfg)
        self.cache_write_failed = False
        self.description = content_settings(self.backend, cfg)
        self.settings_key = settings_key(self.description)

    def file_key(self, folder: str | os.PathLike, image_id: str) -> CacheKey:
        paths = {name: channel_path(folder, image_id, name) for name in self.backend.channels}
        try:
            return CacheKey(self.settings_key, hash_files(paths))
        except OSError as exc:  # an unreadable channel file is a bad image, not a failed run
            raise ImageReadError(f"{exc.filename or Path(folder) / image_id}: cannot be read "
                                 f"({exc.strerror or exc})") from None

    def array_key(self, channels: Channels) -> CacheKey:
        return CacheKey(self.settings_key, hash_arrays(channels, self.backend.channels))

    def lookup(self, key: CacheKey) -> Segmentation | None:
        return self.cache.load(key) if self.cache is not None else None

    def remember(self, key: CacheKey, segmentation: Segmentation, image_id: str | None = None) -> None:
        """Store a segmentation; a cache that cannot be written (read-only, full) is warned about once.

        The cache only saves time: the segmentation in hand is good, so failing to keep it must
        not cost the image its prediction. Writes stop after the first failure (reads go on).
        """
        if self.cache is None or self.cache_write_failed:
            return
        try:
            self.cache.store(key, segmentation, self.description, image_id)
        except OSError as exc:
            self.cache_write_failed = True
            log.warning("mask cache %s cannot be written (%s); going on without storing masks",
                        self.cache.root, exc.strerror or exc)

    def segment_arrays(self, image: Channels | np.ndarray) -> Segmentation:
        """One in-memory image, through the cache (keyed by the decoded arrays)."""
        channels = as_channels(image)
        check_channels(channels, self.backend.channels)
        key = self.array_key(channels) if self.cache is not None else None
        cached = self.lookup(key) if key is not None else None
        if cached is not None:
            return cached
        result = finish_segmentation(*self.backend.label(channels), self.cfg, self.backend.name)
        if key is not None:
            self.remember(key, result)
        return result

    def segment_file(self, folder: str | os.PathLike, image_id: str) -> Segmentation:
        """One image from its channel files, through the cache (keyed by the files' bytes)."""
        return self.segment_files(folder, [image_id])[0]

    def segment_files(self, folder: str | os.PathLike, image_ids: Sequence[str]) -> list[Segmentation]:
        """Several images: cache hits are loaded, the misses go to the backend together (batched)."""
        keys = [self.file_key(folder, image_id) if self.cache is not None else None for image_id in image_ids]
        results: list[Segmentation | None] = [self.lookup(k) if k is not None else None for k in keys]
        todo = [i for i, r in enumerate(results) if r is None]
        if todo:
            images = [read_channels(folder, image_ids[i], self.backend.channels, self.read_options) for i in todo]
            labelled = self.run_backend(images, [Path(folder) / f"{image_ids[i]}_*" for i in todo])
            for i, segmentation in zip(todo, labelled):
                results[i] = segmentation
                if keys[i] is not None:
                    self.remember(keys[i], results[i], image_ids[i])
        return results  # type: ignore[return-value]

    def run_backend(self, images: Sequence[Channels], where: Sequence[Path]) -> list[Segmentation]:
        """The backend's segmentations of images already read; any failure of it is a SegmentationError.

        The images were read and checked, so what fails here is the backend (its models, its
        settings, a bug): a fault of the run, not of one image. A foreign exception (torch, OpenCV)
        becomes a SegmentationError naming the backend and the image, one line for the user.
        """
        try:
            return [finish_segmentation(cells, nuclei, self.cfg, self.backend.name)
                    for cells, nuclei in self.backend.label_many(images)]
        except (SegmentationError, MemoryError):
            raise
        except Exception as exc:
            shown = ", ".join(map(str, where[:3])) + (f" and {len(where) - 3} more" if len(where) > 3 else "")
            detail = " ".join(str(exc).split())[:300]
            raise SegmentationError(f"segmentation backend {self.backend.name!r} failed on {shown} "
                                    f"({type(exc).__name__}: {detail})") from exc


def segment_image(folder: str | os.PathLike, image_id: str, cfg: SegmentationConfig = SegmentationConfig(),
                  cache: MaskCache | None | _FromConfig = FROM_CONFIG) -> Segmentation:
    """One image's segmentation from its channel files, reusing the mask cache (see `Segmenter`)."""
    return Segmenter(cfg, cache=cache).segment_file(folder, image_id)


def write_label_png(path: str | os.PathLike, labels: np.ndarray) -> Path:
    """A label image as a 16-bit grayscale PNG (the synthetic truth's `cells/` format), atomically."""
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"{path}: a label image must be 2-D, got {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() > np.iinfo(np.uint16).max):
        raise ValueError(f"{path}: labels outside 0..65535 do not fit a 16-bit PNG")
    return write_png(path, labels.astype(np.uint16))
