"""Every `torch.load` of hpacam: tensors and plain data only, or a whole pickle behind a trust switch.

`load_tensors` is the loader for checkpoints and weight files that anyone may hand us. It uses
`weights_only=True`, which builds tensors, containers and numbers but refuses any other object
(a class, a function such as `os.system`), so nothing in the file can run. When torch refuses a
file, its message says to retry with `weights_only=False`: advice that would run the file's code.
We never pass it on. Instead the file's pickle is read statically (`pickletools`, which decodes
opcodes without executing any) to tell the two cases apart:

- the pickle names objects other than tensors and plain data: *refused as unsafe*, naming them;
- anything else (truncated, not a torch file, a pickle instruction the safe loader lacks): *unreadable*.

`load_trusted_pickle` is the one unsafe load (HPA's segmenter weights are whole pickled modules);
its callers must have checked an explicit trust switch first.
"""

from __future__ import annotations

import io
import pickletools
import re
import zipfile
from pathlib import Path
from typing import Any

SCAN_LIMIT = 256 << 20  # bytes of pickle read when explaining a refusal (a model's pickle is small)
STRING_OPCODES = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING",
                  "STRING"}


def load_tensors(path: str | Path, what: str, error: type[Exception] = ValueError,
                 map_location: Any = "cpu") -> Any:
    """`torch.load(path, weights_only=True)`; on failure `error("{path}: refused as unsafe/unreadable ...")`."""
    import torch

    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several types for truncated, foreign or unsafe files
        raise error(f"{path}: {load_failure(Path(path), exc, what)}") from None


def load_trusted_pickle(path: str | Path, map_location: Any) -> Any:
    """A whole pickled object (runs the file's code): only after the caller's trust switch was checked."""
    import torch

    return torch.load(str(path), map_location=map_location, weights_only=False)


def load_failure(path: Path, exc: Exception, what: str) -> str:
    """Why the safe load of `path` failed, in one line that never suggests an unsafe load."""
    unsafe = named_global(str(exc)) or unsafe_globals(path)
    if unsafe:
        return (f"refused as unsafe: the {what} holds objects other than tensors and plain data ({unsafe}); "
                "rebuilding them would run code from the file, so it is not loaded")
    return f"unreadable {what} ({type(exc).__name__}: {torch_reason(str(exc))})"


def named_global(text: str) -> str:
    """The object torch's safe unpickler refused, when its message names one."""
    found = re.search(r"Unsupported global: GLOBAL (\S+)", text) or re.search(r"unsupported GLOBAL (\S+)", text)
    return found.group(1) if found else ""


def torch_reason(text: str) -> str:
    """torch's own reason, without its advice (to load unsafely, or to allow-list a global)."""
    found = re.search(r"WeightsUnpickler error: \s*(\S[^\n]*)", text)
    if found:
        return found.group(1).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    plain = [line for line in lines if "weights_only" not in line and not line.startswith(("Weights only", "Check the"))]
    return (plain or ["no detail"])[0][:300]


def unsafe_globals(path: Path) -> str:
    """The objects (module.name) that the file's pickles name beyond torch's safe set, joined; "" if none."""
    try:
        names = [name for data in pickles_of(path) for name in pickle_globals(data)]
    except OSError:
        return ""
    allowed = safe_global_names()
    unsafe = list(dict.fromkeys(name for name in names if name not in allowed))
    return ", ".join(unsafe[:3]) + (f" and {len(unsafe) - 3} more" if len(unsafe) > 3 else "")


def pickles_of(path: Path) -> list[bytes]:
    """The pickle streams of a torch file: each `.pkl` of a zip checkpoint, else the file itself."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            return [archive.open(info).read(SCAN_LIMIT) for info in archive.infolist() if info.filename.endswith(".pkl")]
    with open(path, "rb") as fh:
        return [fh.read(SCAN_LIMIT)]


def pickle_globals(data: bytes) -> list[str]:
    """Every global (module.name) the pickles in `data` name, read without running any; legacy files
    hold several pickles in a row (then raw storage bytes, where reading stops)."""
    stream, names = io.BytesIO(data), []
    while stream.tell() < len(data):
        try:
            names += stream_globals(stream)
        except Exception:  # not (or no longer) a pickle: what was read so far is what there is
            break
    return names


def stream_globals(stream: io.BytesIO) -> list[str]:
    """The globals of one pickle (up to its STOP); STACK_GLOBAL takes the two strings pushed before it."""
    names, strings, memo, last = [], [], {}, None
    for opcode, arg, _ in pickletools.genops(stream):
        name, top = opcode.name, None
        if name in ("GLOBAL", "INST"):
            names.append(str(arg).replace(" ", "."))
        elif name == "STACK_GLOBAL":
            names.append(".".join(strings[-2:]) if len(strings) >= 2 else "an object (STACK_GLOBAL)")
        elif name in ("EXT1", "EXT2", "EXT4"):
            names.append(f"copyreg extension {arg}")
        elif name in STRING_OPCODES:
            top = arg.decode("latin-1") if isinstance(arg, bytes) else str(arg)
            strings.append(top)
        elif name == "MEMOIZE":
            memo[len(memo)], top = last, last
        elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
            memo[arg], top = last, last
        elif name in ("GET", "BINGET", "LONG_BINGET") and isinstance(memo.get(arg), str):
            top = memo[arg]
            strings.append(top)
        last = top
    return names


def safe_global_names() -> set[str]:
    """The globals torch's weights-only unpickler accepts (its own set and any registered safe globals)."""
    import torch

    names = set()
    try:
        from torch._weights_only_unpickler import _get_allowed_globals

        names |= set(_get_allowed_globals())
    except Exception:  # a private helper: without it, the objects every tensor file names
        names |= TORCH_FALLBACK
    for item in torch.serialization.get_safe_globals():
        item = item[0] if isinstance(item, tuple) else item
        names.add(f"{getattr(item, '__module__', '')}.{getattr(item, '__qualname__', '')}")
    return names


TORCH_FALLBACK = {"collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter", "torch.FloatStorage",
                  "torch.LongStorage", "torch.IntStorage", "torch.HalfStorage", "torch.BFloat16Storage",
                  "torch.DoubleStorage", "torch.ByteStorage", "torch.BoolStorage", "torch.device", "torch.Size",
                  "torch.storage.UntypedStorage", "torch._tensor._rebuild_from_type_v2"}
