"""Load triton so that TensorFlow and torch can share one process, in either import order.

Measured with TensorFlow 2.21 and triton 3.8 (the GPU compiler that CUDA builds of torch install):
`import tensorflow` then `import triton` kills the process with a segmentation fault while
triton's native library (`triton._C.libtriton`) is loaded; the reverse order works. torchvision,
timm, resnest and efficientnet-pytorch all import triton, so every torch backbone after
TensorFlow would crash. Loading `libtriton` with `RTLD_DEEPBIND` (its own symbols before the
ones already loaded by TensorFlow) makes the TensorFlow-first order work as well.

This module imports neither TensorFlow nor torch: it only looks at what is already loaded.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import warnings

CRASH_WARNING = (
    "hpacam: TensorFlow was imported before triton and this platform cannot load triton safely "
    "after it (no RTLD_DEEPBIND): importing triton would crash the process with a segmentation "
    "fault, so hpacam has disabled triton in this process (torch, timm and torchvision still "
    "work, without triton kernels). To keep triton, import hpacam.tf (or triton) before tensorflow."
)


def triton_installed() -> bool:
    """Whether triton can be imported here (False also once `block_triton` has run)."""
    if "triton" in sys.modules:
        return sys.modules["triton"] is not None
    return importlib.util.find_spec("triton") is not None


def load_triton_first() -> str:
    """Import triton now, in the way that cannot crash; say what was done.

    Called before every import of TensorFlow (`hpacam.tf`) and of a torch backbone library
    (`hpacam.cam.models`), so hpacam is never the module that crashes a process. Returns one of
    "absent", "loaded" (already imported, or blocked), "imported", "imported-deepbind", "blocked".
    """
    if "triton" in sys.modules:
        return "loaded"
    if importlib.util.find_spec("triton") is None:
        return "absent"
    if "tensorflow" not in sys.modules:
        importlib.import_module("triton")
        return "imported"
    if hasattr(os, "RTLD_DEEPBIND"):
        _import_deepbind("triton")
        return "imported-deepbind"
    block_triton()
    warnings.warn(CRASH_WARNING, RuntimeWarning, stacklevel=2)
    return "blocked"


def _import_deepbind(name: str) -> None:
    """Import `name` with RTLD_DEEPBIND added to the dlopen flags, then restore the flags.

    Only the native libraries loaded during this import get the flag; later imports are as before.
    """
    flags = sys.getdlopenflags()
    sys.setdlopenflags(flags | os.RTLD_NOW | os.RTLD_DEEPBIND)
    try:
        importlib.import_module(name)
    finally:
        sys.setdlopenflags(flags)


def block_triton() -> None:
    """Make `import triton` raise ImportError instead of crashing; torch then runs without it.

    torch and torchvision treat an ImportError from triton as "not installed" (they catch it).
    """
    sys.modules["triton"] = None  # type: ignore[assignment]
