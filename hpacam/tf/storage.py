"""Paths that may be local or in a bucket (`gs://`), through `tf.io.gfile`.

A Kaggle TPU reads its data from Google Cloud Storage, so every path of this stage goes through
`tf.io.gfile`, which handles both. Writes go to a temporary name beside the target and are then
renamed over it, so a pre-empted run never leaves a half-written file under the final name.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from pathlib import Path
from typing import Iterator

import tensorflow as tf


def is_remote(path: str) -> bool:
    return "://" in str(path)


def join(*parts: str) -> str:
    """Join path parts; `os.path.join` also works for `gs://bucket/...` strings."""
    return os.path.join(*[str(p) for p in parts])


def exists(path: str) -> bool:
    return tf.io.gfile.exists(str(path))


def makedirs(path: str) -> None:
    tf.io.gfile.makedirs(str(path))


def read_text(path: str) -> str:
    with tf.io.gfile.GFile(str(path), "r") as fh:
        return fh.read()


def temporary_sibling(path: str, suffix: str = "") -> str:
    """A unique hidden name in the same folder, so the final rename stays on one file system."""
    folder, name = os.path.split(str(path))
    return join(folder, f".{name}.{uuid.uuid4().hex[:8]}.partial{suffix}")


@contextlib.contextmanager
def atomic_output(path: str, suffix: str = "") -> Iterator[str]:
    """Yield a temporary path; rename it over `path` only if the block succeeds.

    `suffix` keeps an extension that a writer insists on (Keras needs `.keras`).
    """
    path = str(path)
    folder = os.path.dirname(path)
    if folder:
        makedirs(folder)
    tmp = temporary_sibling(path, suffix)
    try:
        yield tmp
        tf.io.gfile.rename(tmp, path, overwrite=True)
    finally:
        if tf.io.gfile.exists(tmp):
            tf.io.gfile.remove(tmp)


def write_text(path: str, text: str) -> None:
    with atomic_output(path) as tmp:
        with tf.io.gfile.GFile(tmp, "w") as fh:
            fh.write(text)


@contextlib.contextmanager
def local_copy(path: str) -> Iterator[Path]:
    """A local file with the content of `path` (a bucket object is copied to a temp file)."""
    if not is_remote(path):
        yield Path(path)
        return
    if not exists(path):
        raise FileNotFoundError(f"{path}: file not found")
    with tempfile.TemporaryDirectory() as tmp_dir:
        local = Path(tmp_dir) / os.path.basename(path)
        tf.io.gfile.copy(path, str(local), overwrite=True)
        yield local
