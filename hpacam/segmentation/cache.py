"""The mask cache: one compressed label image per image content and segmentation setting.

Segmentation is the slowest weight-free step every later stage needs, so its result is kept:

    <root>/<backend>-<settings hash>/<content hash[:2]>/<content hash>.npz

- the settings hash covers the backend name, its resolved settings, the border settings and
  `CODE_VERSION` (bumped whenever the code's output changes), so a changed setting or a new
  algorithm never meets an old mask: it looks in another folder;
- the content hash covers the bytes of the channel files the backend reads (or, for images
  held in memory, their decoded arrays with dtype and shape), so an edited image never meets
  its old mask either;
- each entry holds the cells and nuclei (uint16 when they fit), the border flags and a JSON
  header repeating its own key and a checksum of the arrays; it is written atomically (temp
  file + rename);
- a corrupt or inconsistent entry (bad zip, bad checksum, missing array, wrong key, shape or
  cell count) is logged, ignored and recomputed, never trusted.

Each settings folder also holds `settings.json`, so a person can tell what made it.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from hpacam.fileio import atomic_path, atomic_write_text
from hpacam.segmentation.border import FIELDS, BorderFlags
from hpacam.segmentation.core import Segmentation

log = logging.getLogger(__name__)

CODE_VERSION = "seg-2"  # seg-2: issue 16 (measured nucleus size, per-nucleus cut, orphan seeds)
HASH_CHUNK = 1 << 20


def _digest() -> "hashlib._Hash":
    return hashlib.blake2b(digest_size=20)


def settings_key(description: dict) -> str:
    """`<backend>-<hash>` of everything that changes a segmentation's content."""
    text = json.dumps({"code_version": CODE_VERSION, **description}, sort_keys=True, default=str)
    digest = _digest()
    digest.update(text.encode())
    return f"{description['backend']}-{digest.hexdigest()[:16]}"


def hash_files(paths: Mapping[str, Path]) -> str:
    """Content hash of channel files (name -> path): their bytes, not their names or dates."""
    digest = _digest()
    digest.update(b"files\0")
    for name in sorted(paths):
        digest.update(f"{name}\0".encode())
        with open(paths[name], "rb") as fh:
            while chunk := fh.read(HASH_CHUNK):
                digest.update(chunk)
        digest.update(b"\0")
    return digest.hexdigest()


def hash_arrays(channels: Mapping[str, np.ndarray], names: Sequence[str]) -> str:
    """Content hash of decoded channels: dtype, shape and values of each named channel."""
    digest = _digest()
    digest.update(b"arrays\0")
    for name in sorted(names):
        array = np.ascontiguousarray(channels[name])
        digest.update(f"{name}\0{array.dtype.str}\0{array.shape}\0".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


@dataclass(frozen=True)
class CacheKey:
    settings: str  # folder name: backend and settings hash
    content: str  # image content hash

    def __str__(self) -> str:
        return f"{self.settings}/{self.content}"


class MaskCache:
    """Segmentations on disk under `root` (default `data/masks`)."""

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def path(self, key: CacheKey) -> Path:
        return self.root / key.settings / key.content[:2] / f"{key.content}.npz"

    def load(self, key: CacheKey, shape: tuple[int, int] | None = None) -> Segmentation | None:
        """The cached segmentation, or None when absent, corrupt or inconsistent (logged)."""
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            segmentation = _read_entry(path, key, shape)
        except Exception as exc:  # any failure to read an entry means: recompute it
            log.warning("%s: ignoring corrupt mask cache entry (%s: %s); recomputing", path, type(exc).__name__, exc)
            return None
        return segmentation

    def store(self, key: CacheKey, segmentation: Segmentation, description: dict | None = None,
              image_id: str | None = None) -> Path:
        """Write one entry atomically; also `settings.json` of its folder the first time."""
        path = self.path(key)
        if description is not None:
            self._describe_folder(key, description)
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as fh:
                fh.write(_encode_entry(key, segmentation, image_id))
        return path

    def _describe_folder(self, key: CacheKey, description: dict) -> None:
        info = self.root / key.settings / "settings.json"
        if not info.is_file():
            text = json.dumps({"code_version": CODE_VERSION, **description}, indent=2, sort_keys=True, default=str)
            atomic_write_text(info, text + "\n")


def _label_dtype(labels: np.ndarray) -> np.dtype:
    return np.dtype(np.uint16) if labels.size == 0 or int(labels.max()) <= np.iinfo(np.uint16).max else np.dtype(np.int32)


def _arrays_digest(arrays: Mapping[str, np.ndarray]) -> str:
    """Checksum of the stored arrays: zip's own CRC is not always checked when numpy reads."""
    digest = _digest()
    for name in ("cells", "nuclei", *FIELDS):
        array = np.ascontiguousarray(arrays[name])
        digest.update(f"{name}\0{array.dtype.str}\0{array.shape}\0".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def _encode_entry(key: CacheKey, segmentation: Segmentation, image_id: str | None) -> bytes:
    dtype = _label_dtype(segmentation.cells)
    arrays = {"cells": segmentation.cells.astype(dtype), "nuclei": segmentation.nuclei.astype(dtype),
              **segmentation.border.as_arrays()}
    header = {"key": str(key), "backend": segmentation.backend, "shape": list(segmentation.shape),
              "n_cells": segmentation.n_cells, "image_id": image_id, "code_version": CODE_VERSION,
              "digest": _arrays_digest(arrays)}
    buffer = io.BytesIO()
    np.savez_compressed(buffer, header=np.array(json.dumps(header)), **arrays)
    return buffer.getvalue()


def _read_entry(path: Path, key: CacheKey, shape: tuple[int, int] | None) -> Segmentation:
    with np.load(path, allow_pickle=False) as data:
        arrays = {name: data[name] for name in ("header", "cells", "nuclei", *FIELDS)}
    header = json.loads(str(arrays["header"]))
    if header.get("digest") != _arrays_digest(arrays):
        raise ValueError("checksum mismatch")
    cells = arrays["cells"].astype(np.int32)
    nuclei = arrays["nuclei"].astype(np.int32)
    border = BorderFlags.from_arrays(arrays)
    n_cells = int(cells.max()) if cells.size else 0
    problems = [
        header.get("key") != str(key) and f"holds key {header.get('key')}",
        header.get("code_version") != CODE_VERSION and f"code version {header.get('code_version')}",
        cells.ndim != 2 and f"cells of shape {cells.shape}",
        cells.shape != nuclei.shape and f"nuclei {nuclei.shape} vs cells {cells.shape}",
        shape is not None and tuple(cells.shape) != tuple(shape) and f"shape {cells.shape}, image {shape}",
        any(len(a) != n_cells for a in border.as_arrays().values()) and "border flags of another length",
        n_cells != header.get("n_cells") and f"{n_cells} cells, header says {header.get('n_cells')}",
    ]
    problems = [p for p in problems if p]
    if problems:
        raise ValueError("; ".join(problems))
    return Segmentation(cells=cells, nuclei=nuclei, border=border, backend=str(header.get("backend")))
