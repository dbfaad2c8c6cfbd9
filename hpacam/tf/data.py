"""`tf.data` input for the image-level models: HPA channel files (local or `gs://`) -> batches.

Decoding follows `hpacam.images.read_image` to the number, so the TensorFlow models see exactly
what the torch models see:
- 8-bit files are read as 8-bit values. `tf.io.decode_png(dtype=uint16)` would multiply them by
  257, so the bit depth is taken from the PNG header (byte 24 of the file) first.
- 8-bit files are divided by 255; the 16-bit files of an image share one divisor: 65535 if any
  of them holds a value above 255 (true 16-bit data), else 255 (8-bit data stored in 16-bit
  files) - `hpacam.images.channel_divisors`.
- colour files (RGB or RGBA where grayscale is expected) take the per-pixel maximum of the colour
  planes; resizing uses area averaging when shrinking and bilinear when enlarging, as cv2 does.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import tensorflow as tf

from hpacam.classes import CHANNELS
from hpacam.images import COLOR_MODES, EXTENSIONS, ImageReadError
from hpacam.labels import combine_label_tables, make_folds, multi_hot, read_labels
from hpacam.tf import storage
from hpacam.tf.config import AugmentConfig, DataConfig, ImgTrainConfig, data_sources

log = logging.getLogger(__name__)

AUTOTUNE = tf.data.AUTOTUNE
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8"
PNG_BIT_DEPTH_OFFSET = 24  # 8 signature bytes, IHDR length and type, width, height
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the IEND chunk that every complete PNG ends with
TF_EXTENSIONS = (".png", ".jpg", ".jpeg")  # what TensorFlow can decode; TIFFs need converting
TF_COLOR_MODES = ("rgb", "ggg")


# ----------------------------------------------------------------------------- colour modes


def mode_channels(mode: str) -> tuple[tuple[str, ...], list[int]]:
    """The distinct channel files a mode reads, and which of them fills each output channel.

    `ggg` reads the green file once and copies it, and its divisor is decided from green alone,
    as `read_image(mode="ggg")` does.
    """
    if mode not in TF_COLOR_MODES:
        raise ValueError(f"unknown colour mode {mode!r}; the image-level models use one of {TF_COLOR_MODES}")
    names = COLOR_MODES[mode]
    files = tuple(dict.fromkeys(names))
    return files, [files.index(name) for name in names]


# ----------------------------------------------------------------------------- file lists


def list_channel_files(folder: str) -> dict[tuple[str, str], str]:
    """(ID, channel) -> file name, from one listing of `folder` (one request on a bucket)."""
    if not storage.exists(folder):
        raise FileNotFoundError(f"{folder}: image folder not found")
    found: dict[tuple[str, str], str] = {}
    rank = {ext: i for i, ext in enumerate(EXTENSIONS)}  # .png first, as hpacam.images looks
    for name in tf.io.gfile.listdir(folder):
        stem, dot, ext = name.rpartition(".")
        ext = f".{ext.lower()}"
        if not dot or "_" not in stem or ext not in rank:
            continue
        image_id, channel = stem.rsplit("_", 1)
        key = (image_id, channel)
        if channel in CHANNELS and (key not in found or rank[ext] < rank[_extension(found[key])]):
            found[key] = name
    return found


def _extension(name: str) -> str:
    return "." + name.rpartition(".")[2].lower()


def channel_paths(folder: str, image_ids: Sequence[str], mode: str) -> np.ndarray:
    """(N, files of the mode) full paths; a missing or undecodable file is an error naming it."""
    files, _ = mode_channels(mode)
    listing = list_channel_files(folder)
    paths = np.empty((len(image_ids), len(files)), dtype=object)
    for row, image_id in enumerate(image_ids):
        for col, channel in enumerate(files):
            name = listing.get((image_id, channel))
            if name is None:
                raise ImageReadError(f"{storage.join(folder, f'{image_id}_{channel}.png')}: missing channel file "
                                     f"(looked for {', '.join(TF_EXTENSIONS)})")
            if not name.lower().endswith(TF_EXTENSIONS):
                raise ImageReadError(f"{storage.join(folder, name)}: TensorFlow cannot decode this format; "
                                     f"convert it to PNG (readable: {', '.join(TF_EXTENSIONS)})")
            paths[row, col] = storage.join(folder, name)
    return paths.astype(str)


# ----------------------------------------------------------------------------- decoding


def _png_bit_depth(contents: tf.Tensor) -> tf.Tensor:
    """Bit depth from the IHDR chunk; padded so that a truncated file cannot fail here unnamed."""
    head = tf.strings.join([tf.strings.substr(contents, 0, 32), tf.constant(b"\0" * 32)])
    return tf.cast(tf.io.decode_raw(tf.strings.substr(head, PNG_BIT_DEPTH_OFFSET, 1), tf.uint8)[0], tf.int32)


def _to_grayscale(image: tf.Tensor) -> tf.Tensor:
    """(H, W, C) -> (H, W): the channel itself, or the maximum of the colour planes (as cv2 side)."""
    return tf.cond(tf.shape(image)[-1] >= 3,
                   lambda: tf.reduce_max(image[..., :3], axis=-1),
                   lambda: image[..., 0])


def decode_channel(contents: tf.Tensor, path: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """One channel file's bytes -> ((H, W) uint16 holding the file's own values (8-bit stays 0-255),
    whether the file is 16-bit)."""
    is_png = tf.equal(tf.strings.substr(contents, 0, len(PNG_SIGNATURE)), PNG_SIGNATURE)
    is_jpeg = tf.equal(tf.strings.substr(contents, 0, len(JPEG_SIGNATURE)), JPEG_SIGNATURE)
    check = tf.debugging.Assert(is_png | is_jpeg,
                                ["not a PNG or JPEG file (empty, truncated or another format):", path])
    tail = tf.strings.substr(contents, tf.maximum(tf.strings.length(contents) - len(PNG_END), 0), len(PNG_END))
    complete = tf.debugging.Assert(tf.logical_not(is_png) | tf.equal(tail, PNG_END),
                                   ["truncated PNG file (it does not end with its IEND chunk):", path])
    with tf.control_dependencies([check, complete]):
        is_16_bit = is_png & tf.equal(_png_bit_depth(contents), 16)
        image = tf.cond(
            is_16_bit,
            lambda: tf.io.decode_png(contents, channels=0, dtype=tf.uint16),
            lambda: tf.cast(tf.io.decode_image(contents, channels=0, dtype=tf.uint8,
                                               expand_animations=False), tf.uint16),
        )
    return _to_grayscale(image), is_16_bit


def resize_like_cv2(image: tf.Tensor, size: int) -> tf.Tensor:
    """Resize (H, W, C) to (size, size) as `hpacam.images.resize_image` does (area / bilinear)."""
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    unchanged = tf.logical_and(tf.equal(height, size), tf.equal(width, size))
    shrinking = size * size < height * width
    resized = tf.cond(
        unchanged,
        lambda: image,
        lambda: tf.cond(shrinking,
                        lambda: tf.image.resize(image, (size, size), method="area"),
                        lambda: tf.image.resize(image, (size, size), method="bilinear")),
    )
    return tf.ensure_shape(resized, (size, size, image.shape[-1]))


def channel_divisors(raw: tf.Tensor, wide: tf.Tensor) -> tf.Tensor:
    """(files,) divisors as `hpacam.images.channel_divisors`: 8-bit files 255, 16-bit files 65535 if
    any of them holds a value above 255, else 255."""
    peaks = tf.reduce_max(tf.reshape(raw, (-1, tf.shape(raw)[-1])), axis=0)
    wide_peak = tf.reduce_max(tf.where(wide, peaks, tf.zeros_like(peaks)))
    return tf.where(wide & (wide_peak > 255), 65535.0, 255.0)


def load_image(paths: tf.Tensor, channel_index: Sequence[int], size: int | None) -> tf.Tensor:
    """Paths of one image's distinct channel files -> float32 (H, W, len(channel_index)) in [0, 1]."""
    planes, wide = [], []
    for k in range(paths.shape[0]):
        plane, is_16_bit = decode_channel(tf.io.read_file(paths[k]), paths[k])
        planes.append(plane)
        wide.append(is_16_bit)
    checks = [tf.debugging.Assert(tf.reduce_all(tf.equal(tf.shape(plane), tf.shape(planes[0]))),
                                  ["channels of different sizes:", paths[0], paths[k]])
              for k, plane in enumerate(planes[1:], start=1)]
    with tf.control_dependencies(checks):
        raw = tf.stack(planes, axis=-1)
    image = tf.cast(raw, tf.float32) / channel_divisors(raw, tf.stack(wide))
    image = tf.gather(image, list(channel_index), axis=-1)
    return image if size is None else resize_like_cv2(image, size)


def image_dataset(paths: np.ndarray, mode: str, size: int | None,
                  targets: np.ndarray | None = None) -> tf.data.Dataset:
    """Decoded images (and targets when given), in the order of `paths`."""
    return decoded_dataset(paths, mode_channels(mode)[1], size, targets)


def decoded_dataset(paths: np.ndarray, channel_index: Sequence[int], size: int | None,
                    targets: np.ndarray | None = None) -> tf.data.Dataset:
    """As `image_dataset`, with the output channels chosen by index into the columns of `paths`."""
    inputs = tf.constant(paths, dtype=tf.string)
    ds = tf.data.Dataset.from_tensor_slices(inputs if targets is None else (inputs, targets.astype(np.float32)))
    if targets is None:
        return ds.map(lambda p: load_image(p, channel_index, size), num_parallel_calls=AUTOTUNE)
    return ds.map(lambda p, t: (load_image(p, channel_index, size), t), num_parallel_calls=AUTOTUNE)


def named_decode_error(exc: tf.errors.OpError, candidates: Sequence[str]) -> ImageReadError:
    """A tf.data decoding failure as one line naming the file.

    Our own checks (signature, a complete PNG) put the path in the message; a decoder's error
    (corrupt data inside a complete file) does not, so the candidate files are decoded one by one,
    eagerly, until one fails: a cost paid only on this error path.
    """
    text = str(exc)
    asserted = re.search(r"assertion failed: \[([^\]]*?):?\] \[([^\]]+)\]", text)
    if asserted:
        return ImageReadError(f"{asserted.group(2)}: {asserted.group(1)}")
    reason = re.sub(r"\s+", " ", text.split("transformation with iterator: ")[-1].split("\n")[0])
    reason = re.sub(r"^(Iterator::\S+: )+", "", reason).strip()
    for path in candidates:
        try:
            decode_channel(tf.io.read_file(path), tf.constant(path))
        except tf.errors.OpError as file_exc:
            detail = str(file_exc).split("}}")[-1].split("[Op:")[0].strip() or reason
            return ImageReadError(f"{path}: TensorFlow cannot decode it ({detail})")
    return ImageReadError(f"an image file could not be decoded ({reason}); no single file fails on its own")


def load_images(folder: str, image_ids: Sequence[str], mode: str, size: int | None = None) -> np.ndarray:
    """Numpy (N, H, W, 3) of the images as the models see them; for checks and small sets."""
    if not len(image_ids):
        return np.zeros((0, size or 0, size or 0, 3), dtype=np.float32)
    ds = image_dataset(channel_paths(folder, image_ids, mode), mode, size)
    return np.stack([image.numpy() for image in ds])


# ----------------------------------------------------------------------------- augmentation


def augment_image(image: tf.Tensor, cfg: AugmentConfig) -> tf.Tensor:
    """Flips and 90-degree rotations: the dihedral group, free of interpolation, fine for cells."""
    shape = image.shape
    if cfg.hflip:
        image = tf.cond(tf.random.uniform([]) < 0.5, lambda: tf.image.flip_left_right(image), lambda: image)
    if cfg.vflip:
        image = tf.cond(tf.random.uniform([]) < 0.5, lambda: tf.image.flip_up_down(image), lambda: image)
    if cfg.rot90:
        image = tf.image.rot90(image, k=tf.random.uniform([], 0, 4, dtype=tf.int32))
    return tf.ensure_shape(image, shape)


def finish_pipeline(ds: tf.data.Dataset, *, batch_size: int, training: bool, augment: AugmentConfig,
                    cache: str = "", shuffle_buffer: int = 2048, seed: int = 0,
                    drop_remainder: bool = False) -> tf.data.Dataset:
    """Decoded (image, target) pairs -> cached, shuffled, augmented, batched, prefetched."""
    if cache == "memory":
        ds = ds.cache()
    elif cache:
        ds = ds.cache(cache + ("-train" if training else "-valid"))
    if training:
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
        ds = ds.map(lambda image, target: (augment_image(image, augment), target), num_parallel_calls=AUTOTUNE)
    return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(AUTOTUNE)


# ----------------------------------------------------------------------------- labels and folds


@dataclass
class LabeledImages:
    """The label table as the torch stage sees it: same IDs, same targets, same folds."""

    ids: list[str]
    targets: np.ndarray  # (N, 19) float32
    folds: np.ndarray  # (N,) int64
    folders: list[str] | None = None  # image folder of each row (several sources); None: one folder

    def subset(self, mask: np.ndarray) -> "LabeledImages":
        folders = None if self.folders is None else [f for f, keep in zip(self.folders, mask) if keep]
        return LabeledImages([i for i, keep in zip(self.ids, mask) if keep], self.targets[mask], self.folds[mask],
                             folders)


def read_labeled_images(labels_path: str, n_folds: int, fold_seed: int) -> LabeledImages:
    """Labels CSV (local or gs://) -> IDs, multi-hot targets and the seeded stratified folds."""
    if not labels_path:
        raise ValueError("data.labels is empty: give the label CSV (Kaggle ID,Label format)")
    with storage.local_copy(labels_path) as local:
        frame = read_labels(local)
    targets = multi_hot(frame["labels"])
    folds = make_folds(targets, n_folds, fold_seed)
    return LabeledImages(frame["ID"].tolist(), targets, folds)


def read_sources(data: DataConfig) -> LabeledImages:
    """Every {images, labels} source combined, with folds over the combined table.

    As the torch stage's `hpacam.cam.data.read_sources`: tables concatenated in order (an ID in
    two tables is an error), then one seeded stratified split, so both stages validate on the
    same images when they read the same sources.
    """
    frames = []
    for source in data_sources(data):
        if not source.images:
            raise ValueError("data.images is empty: give the image folder (or data.tfrecords)")
        with storage.local_copy(source.labels) as local:
            frames.append(read_labels(local).assign(folder=source.images))
    table = combine_label_tables(*frames)
    targets = multi_hot(table["labels"])
    return LabeledImages(table["ID"].tolist(), targets, make_folds(targets, data.n_folds, data.fold_seed),
                         table["folder"].tolist())


def table_channel_paths(table: LabeledImages, mode: str) -> np.ndarray:
    """(N, files) full paths of every row, each from its own source folder (one listing per folder)."""
    folders = table.folders or []
    if not folders:
        raise ValueError("table has no image folders; read it with read_sources")
    files, _ = mode_channels(mode)
    paths = np.empty((len(table.ids), len(files)), dtype=object)
    for folder in dict.fromkeys(folders):
        rows = [i for i, f in enumerate(folders) if f == folder]
        paths[rows] = channel_paths(folder, [table.ids[i] for i in rows], mode)
    return paths.astype(str)


def split_folds(table: LabeledImages, fold: int) -> tuple[LabeledImages, LabeledImages | None]:
    """(train, valid); fold -1 trains on everything and has no validation set."""
    if fold < 0:
        return table, None
    return table.subset(table.folds != fold), table.subset(table.folds == fold)


def folder_files(cfg: ImgTrainConfig) -> list[str]:
    """Every channel file the folder pipeline of `cfg` reads (the candidates of `named_decode_error`)."""
    if cfg.data.tfrecords or not (cfg.data.images or cfg.data.sources):
        return []
    return table_channel_paths(read_sources(cfg.data), cfg.data.color_mode).ravel().tolist()


def folder_datasets(cfg: ImgTrainConfig, global_batch: int,
                    drop_remainder_valid: bool = False) -> tuple[tf.data.Dataset, tf.data.Dataset | None]:
    """Training and validation batches read from the image folder (the non-TFRecord path)."""
    data = cfg.data
    train, valid = split_folds(read_sources(data), data.fold)
    log.info("images from %s: %d train, %d valid (fold %d)", ", ".join(s.images for s in data_sources(data)),
             len(train.ids), 0 if valid is None else len(valid.ids), data.fold)

    def batches(part: LabeledImages, training: bool) -> tf.data.Dataset:
        ds = image_dataset(table_channel_paths(part, data.color_mode), data.color_mode,
                           data.image_size, part.targets)
        return finish_pipeline(ds, batch_size=global_batch, training=training, augment=cfg.augment,
                               cache=data.cache, shuffle_buffer=data.shuffle_buffer, seed=cfg.seed,
                               drop_remainder=training or drop_remainder_valid)

    return batches(train, True), None if valid is None else batches(valid, False)
