"""Atomic file writes: a crash or a kill never leaves a half-written output behind."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import tempfile
import zipfile
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` only if the block succeeds.

    The temporary file lives in the same folder so the final `os.replace` is atomic on POSIX.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs get the usual permissions
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


STALE_TEMP = re.compile(r"^\..+\.[A-Za-z0-9_]{8}\.tmp$")  # the names atomic_path's mkstemp gives


def remove_stale_temp_files(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files `atomic_path` left in `folder` when its process was killed.

    SIGKILL skips atomic_path's cleanup, so every kill during a write leaves one behind (each as
    large as a checkpoint); a resumed run calls this so they do not pile up on disk. Call it only
    on a folder that no other process is writing to.
    """
    folder = Path(folder)
    stale = [path for path in folder.iterdir() if STALE_TEMP.match(path.name) and path.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


class OutputBusyError(OSError):
    """Another process holds the lock on these outputs."""


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike, what: str) -> Iterator[None]:
    """Hold an advisory lock on `path` (created if absent) for the block; refuse at once if it is held.

    Two runs writing the same outputs would each rename its own files into place, and the later
    rename silently wins: refusing the second run is the only outcome that loses no work. The
    lock file stays (removing it would race with a process about to lock it); the kernel drops
    the lock when its holder exits, even on SIGKILL.
    """
    path = Path(path)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputBusyError(f"{what}: another run is writing these outputs now (it holds {path}); "
                                  "wait for it to finish or choose another output") from None
        yield
    finally:
        os.close(fd)


def check_writable_file(path: str | os.PathLike) -> Path:
    """Fail now, naming `path`, if a file cannot be written there (a folder, a read-only place).

    Called before a long run, so that a bad output path is not found after all the work is done.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder; give the path of the file to write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise OSError(f"{path}: cannot write here ({exc.strerror or exc})") from None
    os.close(fd)
    os.unlink(probe)
    return path


def read_npz(path: str | os.PathLike, names: Sequence[str], max_bytes: int, what: str) -> dict[str, np.ndarray]:
    """The named arrays of an `.npz`, never unpickling, refusing any that would take over `max_bytes` in all.

    Each array's size is read from its `.npy` header before any data: a few megabytes of
    compressed zeros can claim gigabytes, and `np.load` would allocate them first. ValueError
    names the file and says it is not `what`.
    """
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            members = {name[:-len(".npy")]: name for name in archive.namelist() if name.endswith(".npy")}
            total = sum(_npy_nbytes(archive, member) for member in members.values())
            if total > max_bytes:
                raise ValueError(f"{path}: its arrays would take {total} bytes, over the limit of {max_bytes} "
                                 f"for {what} (crafted or corrupt)")
            missing = sorted(set(names) - set(members))
            if missing:
                raise ValueError(f"{path}: missing arrays {missing}")
            arrays = {}
            for name in names:
                with archive.open(members[name]) as fh:
                    arrays[name] = np.lib.format.read_array(fh, allow_pickle=False)
            return arrays
    except (OSError, EOFError, zipfile.BadZipFile, ValueError) as exc:
        if str(exc).startswith(str(path)):
            raise
        raise ValueError(f"{path}: not {what} ({type(exc).__name__}: {exc})") from None


def _npy_nbytes(archive: zipfile.ZipFile, member: str) -> int:
    """Bytes one `.npy` member asks for, from its header alone; object (pickled) arrays are refused."""
    with archive.open(member) as fh:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            raise ValueError(f"{member}: unsupported .npy format version {version}")
    if dtype.hasobject:
        raise ValueError(f"{member} holds Python objects, which would need unpickling; refused")
    return int(np.prod(shape, dtype=object)) * dtype.itemsize
