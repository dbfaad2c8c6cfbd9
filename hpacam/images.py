"""Reading HPA images: one grayscale file per channel, `{ID}_{red,green,blue,yellow}.{png,jpg,tif}`.

HPA data comes as 8-bit JPEGs (public HPA), 16-bit PNGs (Kaggle) and 16-bit PNGs that only hold
8-bit values (part of the Kaggle set). Scaling each correctly matters: dividing real 16-bit data
by 255 saturates the image, and dividing 8-bit data stored as uint16 by 65535 makes it black.

Every failure raises `ImageReadError` naming the file and the problem; `cv2.imread` returning
None never passes through.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

import cv2
import numpy as np

from hpacam.classes import CHANNELS
from hpacam.config import check_at_least
from hpacam.fileio import atomic_write_bytes

log = logging.getLogger(__name__)

COLOR_MODES: dict[str, tuple[str, ...]] = {
    "rgby": ("red", "green", "blue", "yellow"),
    "rgb": ("red", "green", "blue"),
    "ggg": ("green", "green", "green"),
    "g": ("green",),
}
EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
DEFAULT_MAX_PIXELS = 8192 * 8192
MAX_ID_BYTES = 200  # file names take 255 bytes; `_yellow.tiff` and temp-file affixes need the rest
ColorPolicy = Literal["convert", "refuse"]


class ImageReadError(ValueError):
    """An image file is missing, unreadable, truncated, or not what the HPA layout promises."""


@dataclass(frozen=True)
class ReadOptions:
    """How strictly to read: what to do with RGB files and how large an image may be."""

    color_file: ColorPolicy = "convert"  # a 3-channel file where grayscale is expected
    max_pixels: int = DEFAULT_MAX_PIXELS  # checked from the header, before decoding pixels

    def __post_init__(self):
        check_at_least(1, max_pixels=self.max_pixels)


def check_image_id(image_id: str) -> str:
    """An image ID that is safe to put in a file name: IDs come from CSVs that anyone can write.

    `{ID}_{channel}.png` is joined to the image folder and `{ID}.png` to output folders, so an
    ID with a path separator (`../x`) would read or write outside them; one too long for a file
    name would fail in the file system instead of as one bad image.
    """
    if not isinstance(image_id, str) or not image_id:
        raise ImageReadError(f"sample ID {image_id!r}: empty or not text")
    shown = image_id if len(image_id) <= 60 else f"{image_id[:40]}... ({len(image_id)} characters)"
    if len(image_id.encode("utf-8", "surrogatepass")) > MAX_ID_BYTES:
        raise ImageReadError(f"sample ID {shown!r}: longer than {MAX_ID_BYTES} bytes, too long for a file name")
    if image_id in (".", "..") or any(c in image_id for c in "/\\") or not image_id.isprintable():
        raise ImageReadError(f"sample ID {shown!r}: holds a path separator, '..' or a control character; "
                             "an ID must be a plain file-name stem")
    return image_id


def id_file(folder: str | os.PathLike, image_id: str, suffix: str = ".png") -> Path:
    """`folder/{ID}{suffix}` (cell label images, pictures) for an ID checked by `check_image_id`."""
    return Path(folder) / f"{check_image_id(image_id)}{suffix}"


def channel_path(folder: str | os.PathLike, image_id: str, channel: str) -> Path:
    """The file of one channel, whatever its extension; ImageReadError if there is none."""
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r}; expected one of {CHANNELS}")
    check_image_id(image_id)
    folder = Path(folder)
    for ext in EXTENSIONS:
        path = folder / f"{image_id}_{channel}{ext}"
        try:
            if path.is_file():
                return path
            if os.path.lexists(path):  # there, but no file: say so rather than "missing"
                kind = "a folder" if path.is_dir() else "a symlink that loops or points nowhere"
                raise ImageReadError(f"{path}: is {kind}, not an image file")
        except OSError as exc:
            raise ImageReadError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    raise ImageReadError(
        f"{folder / (image_id + '_' + channel)}.png: missing channel file "
        f"(looked for {', '.join(EXTENSIONS)})"
    )


def header_size(path: Path) -> tuple[int, int]:
    """(height, width) from the file header alone, so oversized images are refused undecoded."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            width, height = img.size
    except Image.DecompressionBombError as exc:
        raise ImageReadError(f"{path}: image too large ({exc})") from None
    except Exception as exc:  # PIL raises several types for a bad header
        raise ImageReadError(f"{path}: unreadable image header ({type(exc).__name__}: {exc})") from None
    return height, width


def check_header(path: str | os.PathLike, options: ReadOptions = ReadOptions()) -> tuple[int, int]:
    """(height, width) of a channel file that exists, is not empty and is within the pixel limit.

    Reads the header only, so callers that decode with other libraries (tf.data) can refuse an
    oversized image before any of its pixels are decoded.
    """
    path = Path(path)
    try:
        if not path.is_file():
            raise ImageReadError(f"{path}: file not found")
        if path.stat().st_size == 0:
            raise ImageReadError(f"{path}: zero-byte file")
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    height, width = header_size(path)
    if height * width > options.max_pixels:
        raise ImageReadError(
            f"{path}: {width}x{height} = {height * width} pixels exceeds the limit of "
            f"{options.max_pixels} (read.max_pixels in the config; data.read.max_pixels for CAM training)"
        )
    return height, width


def read_channel_file(path: str | os.PathLike, options: ReadOptions = ReadOptions()) -> np.ndarray:
    """One channel file -> 2-D uint8 or uint16 array, with every failure named."""
    path = Path(path)
    height, width = check_header(path, options)
    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise ImageReadError(f"{path}: unreadable or truncated image file (OpenCV could not decode it)")
    if array.shape[:2] != (height, width):
        raise ImageReadError(f"{path}: decoded size {array.shape[:2]} differs from its header {(height, width)}")
    return _to_grayscale(array, path, options.color_file)


def _to_grayscale(array: np.ndarray, path: Path, policy: ColorPolicy) -> np.ndarray:
    if array.dtype not in (np.uint8, np.uint16):
        raise ImageReadError(f"{path}: unsupported pixel type {array.dtype}; expected 8- or 16-bit")
    if array.ndim == 2:
        return array
    if array.ndim == 3 and array.shape[2] in (3, 4):
        if policy == "refuse":
            raise ImageReadError(
                f"{path}: has {array.shape[2]} colour channels where a grayscale channel is expected "
                "(read.color_file=convert in the config, data.read.color_file for CAM training, "
                "takes the brightest channel)"
            )
        log.warning("%s: %d-channel file where grayscale is expected; using the per-pixel maximum",
                    path, array.shape[2])
        # Public-HPA JPEGs keep the signal in one colour plane: the maximum keeps it intact.
        return array[:, :, :3].max(axis=2)
    raise ImageReadError(f"{path}: unexpected dimensions {array.shape}; expected a 2-D grayscale image")


def unit_scale(channels: Sequence[np.ndarray]) -> float:
    """The divisor that maps one image's channels to [0, 1].

    16-bit files whose values all fit in 0-255 hold 8-bit data (part of the Kaggle set) and are
    scaled by 255; true 16-bit data by 65535. The choice is made per image, not per file, so a
    dim channel of a real 16-bit image is not brightened 257 times.
    """
    if any(c.dtype == np.uint16 for c in channels):
        if max(int(c.max()) for c in channels if c.size) > 255:
            return 65535.0
    return 255.0


def channel_divisors(channels: Sequence[np.ndarray]) -> list[float]:
    """The divisor of each channel file of one image: 8-bit files by 255, 16-bit ones by `unit_scale`.

    An 8-bit file beside 16-bit ones (a converted channel) holds 8-bit values whatever its
    neighbours hold; dividing it by 65535 would make it about 256 times too dark. Among the
    16-bit files the choice stays per image, as `unit_scale` explains.
    """
    wide = [c for c in channels if c.dtype == np.uint16]
    divisor = unit_scale(wide) if wide else 255.0
    return [divisor if c.dtype == np.uint16 else 255.0 for c in channels]


def read_image(
    folder: str | os.PathLike,
    image_id: str,
    mode: str = "rgby",
    size: int | tuple[int, int] | None = None,
    options: ReadOptions = ReadOptions(),
) -> np.ndarray:
    """One image as float32 (H, W, C) in [0, 1], channels in the order of `mode`.

    `size` resizes to (size, size) or (height, width) with area interpolation when shrinking.
    """
    if mode not in COLOR_MODES:
        raise ValueError(f"unknown colour mode {mode!r}; expected one of {sorted(COLOR_MODES)}")
    names = COLOR_MODES[mode]
    raw = {name: read_channel_file(channel_path(folder, image_id, name), options) for name in dict.fromkeys(names)}
    _check_same_size(folder, image_id, raw)
    divisors = dict(zip(raw, channel_divisors(list(raw.values()))))
    planes = [raw[name].astype(np.float32) / divisors[name] for name in names]
    image = np.stack(planes, axis=-1)
    if size is not None:
        image = resize_image(image, size)
    return image


def _check_same_size(folder, image_id: str, raw: dict[str, np.ndarray]) -> None:
    shapes = {name: arr.shape for name, arr in raw.items()}
    if len(set(shapes.values())) > 1:
        detail = ", ".join(f"{name} {h}x{w}" for name, (h, w) in shapes.items())
        raise ImageReadError(f"{Path(folder) / image_id}_*: channels of different sizes ({detail})")


def resize_image(image: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """Resize (H, W[, C]) to `size`; area interpolation when shrinking, linear when enlarging."""
    height, width = (size, size) if isinstance(size, int) else size
    if (height, width) == image.shape[:2]:
        return image
    shrinking = height * width < image.shape[0] * image.shape[1]
    interp = cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR
    if image.ndim == 3 and image.shape[2] > 4:  # cv2 handles at most 512 planes, but be explicit
        return np.stack([cv2.resize(image[..., i], (width, height), interpolation=interp)
                         for i in range(image.shape[2])], axis=-1)
    out = cv2.resize(image, (width, height), interpolation=interp)
    return out[..., None] if image.ndim == 3 and out.ndim == 2 else out


def image_shape(folder: str | os.PathLike, image_id: str, channel: str = "blue") -> tuple[int, int]:
    """(height, width) of an image from one channel's header, without decoding pixels."""
    return header_size(channel_path(folder, image_id, channel))


def list_image_ids(folder: str | os.PathLike) -> list[str]:
    """Sorted IDs that have at least one channel file in `folder`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: image folder not found")
    ids = set()
    for path in folder.iterdir():
        stem, ext = path.stem, path.suffix.lower()
        if ext in EXTENSIONS and "_" in stem:
            image_id, channel = stem.rsplit("_", 1)
            if channel in CHANNELS:
                ids.add(image_id)
    return sorted(ids)


# ----------------------------------------------------------------------------- label images and PNG files


def read_label_png(path: str | os.PathLike) -> np.ndarray:
    """A cell label image (one 8- or 16-bit integer channel, 0 = background) as int32, unscaled.

    The one reader of the label PNGs that segmentation writes and the synthetic set's truth
    (`cells/{ID}.png`); errors (ValueError) name the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such cell label image")
    labels = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if labels is None:
        raise ValueError(f"{path}: not a readable image")
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{path}: a cell label image must be one integer channel, got {labels.dtype} {labels.shape}")
    return labels.astype(np.int32)


def encode_png(array: np.ndarray) -> bytes:
    """PNG bytes with OpenCV's default settings (fast zlib, RLE strategy): on noisy 16-bit images
    they are ~3x faster than an explicit compression level and compress as well."""
    ok, buffer = cv2.imencode(".png", array)
    if not ok:
        raise OSError(f"PNG encoding failed for an array of shape {array.shape} and type {array.dtype}")
    return buffer.tobytes()


def write_png(path: str | os.PathLike, array: np.ndarray) -> Path:
    """The one PNG writer: atomically (temp file + rename), so a reader never sees half a file."""
    return atomic_write_bytes(path, encode_png(array))
