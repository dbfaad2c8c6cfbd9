"""Sharded TFRecords: the TPU-friendly copy of an HPA image folder.

A TPU host reads a few hundred large files from a bucket far faster than four small PNGs per
image. The converter decodes each image exactly as `hpacam.tf.data` does (same bit-depth rule,
same resize), then stores it unit-scaled as a lossless PNG of 16 (or 8) bits, so reading a
record back gives the folder pipeline's image to 1/65535 (or 1/255).

Layout of an output folder:
- `fold{k}-{nnn}.tfrec`: the images of fold k, in label-table order, `images_per_shard` a file;
- `manifest.json`: colour mode, stored size and bits, folds (count and seed) and the shard list.
  It is written last, so a folder without it is an unfinished conversion. A new conversion first
  removes the folder's previous manifest and shards, and a failed one removes what it wrote;
- `config.yaml`: the resolved config of the conversion.
Each example holds `id` (bytes), `image` (PNG of the mode's distinct channels: red, green, blue
for rgb; green alone for ggg), `target` (19 int64, multi-hot) and `fold` (int64).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import tensorflow as tf

from hpacam.classes import NUM_CLASSES
from hpacam.config import dump_config
from hpacam.tf import storage
from hpacam.tf.config import ImgTrainConfig, data_sources
from hpacam.tf.data import (AUTOTUNE, LabeledImages, decoded_dataset, finish_pipeline,
                            mode_channels, named_decode_error, read_sources, resize_like_cv2,
                            table_channel_paths)

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
FORMAT = "hpacam-tfrecords-1"
FEATURES = {
    "id": tf.io.FixedLenFeature([], tf.string),
    "image": tf.io.FixedLenFeature([], tf.string),
    "target": tf.io.FixedLenFeature([NUM_CLASSES], tf.int64),
    "fold": tf.io.FixedLenFeature([], tf.int64),
}


class RecordsError(ValueError):
    """A TFRecord folder is missing, unfinished, or made for other settings than the run's."""


# ----------------------------------------------------------------------------- writing


def _bytes(value: bytes) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _ints(values: Sequence[int]) -> tf.train.Feature:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))


def serialize_example(image_id: str, png: bytes, target: np.ndarray, fold: int) -> bytes:
    features = {"id": _bytes(image_id.encode()), "image": _bytes(png),
                "target": _ints(np.asarray(target).round().astype(int)), "fold": _ints([fold])}
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString()


def encode_unit_png(image: tf.Tensor, bits: int) -> tf.Tensor:
    """Float [0, 1] (H, W, C) -> PNG bytes of `bits` bits per sample (lossless for its precision)."""
    top = 2 ** bits - 1
    dtype = tf.uint16 if bits == 16 else tf.uint8
    return tf.io.encode_png(tf.cast(tf.round(tf.clip_by_value(image, 0.0, 1.0) * top), dtype))


def _encoded_images(cfg: ImgTrainConfig, part: LabeledImages) -> tf.data.Dataset:
    files, _ = mode_channels(cfg.data.color_mode)
    paths = table_channel_paths(part, cfg.data.color_mode)
    ds = decoded_dataset(paths, list(range(len(files))), cfg.data.image_size)
    return ds.map(lambda image: encode_unit_png(image, cfg.records.bits), num_parallel_calls=AUTOTUNE)


def _write_shard(path: str, examples: list[bytes]) -> None:
    with storage.atomic_output(path) as tmp:
        with tf.io.TFRecordWriter(tmp) as writer:
            for example in examples:
                writer.write(example)


def write_fold(cfg: ImgTrainConfig, out: str, part: LabeledImages, fold: int, written: list[str]) -> list[dict]:
    """Write one fold's shards (their paths appended to `written` as they land); returns their manifest entries.

    A file that cannot be decoded is an ImageReadError naming it (tf.data's own error names none).
    """
    shards, batch, per_shard, row = [], [], cfg.records.images_per_shard, 0
    try:
        for row, png in enumerate(_encoded_images(cfg, part)):
            batch.append(serialize_example(part.ids[row], png.numpy(), part.targets[row], fold))
            if len(batch) == per_shard or row == len(part.ids) - 1:
                name = f"fold{fold}-{len(shards):03d}.tfrec"
                written.append(storage.join(out, name))
                _write_shard(written[-1], batch)
                shards.append({"file": name, "fold": fold, "count": len(batch)})
                batch = []
    except tf.errors.OpError as exc:
        remaining = table_channel_paths(part, cfg.data.color_mode)[len(shards) * per_shard:]
        raise named_decode_error(exc, remaining.ravel().tolist()) from None
    return shards


def make_tfrecords(cfg: ImgTrainConfig, out: str) -> dict:
    """Convert the labelled images of `cfg.data` into sharded TFRecords in `out` (local or gs://)."""
    data = cfg.data
    if not (data.images or data.sources):
        raise ValueError("data.images is empty: give the image folder to convert (or data.sources)")
    if cfg.records.images_per_shard < 1:
        raise ValueError("records.images_per_shard must be at least 1")
    table = read_sources(data)
    table_channel_paths(table, data.color_mode)  # every file present before any writing
    storage.makedirs(out)
    remove_quietly([storage.join(out, MANIFEST), *tf.io.gfile.glob(storage.join(out, "fold*-*.tfrec"))])
    written = [storage.join(out, "config.yaml")]
    try:
        storage.write_text(written[0], dump_config(cfg))
        shards = []
        for fold in range(data.n_folds):
            part = table.subset(table.folds == fold)
            shards += write_fold(cfg, out, part, fold, written)
            log.info("fold %d: %d images in %d shard(s)", fold, len(part.ids), sum(s["fold"] == fold for s in shards))
    except BaseException:
        remove_quietly(written)  # a failed conversion leaves none of its files behind
        raise
    manifest = {"format": FORMAT, "color_mode": data.color_mode, "channels": list(mode_channels(data.color_mode)[0]),
                "image_size": data.image_size, "bits": cfg.records.bits, "n_folds": data.n_folds,
                "fold_seed": data.fold_seed, "labels": data.labels, "images": data.images,
                "sources": [{"images": src.images, "labels": src.labels} for src in data_sources(data)], "shards": shards}
    storage.write_text(storage.join(out, MANIFEST), json.dumps(manifest, indent=1))
    return manifest


def remove_quietly(paths: Sequence[str]) -> None:
    """Delete a previous conversion (its manifest first) or what a failed one wrote; a missing file is no error."""
    for path in paths:
        try:
            if storage.exists(path):
                tf.io.gfile.remove(path)
        except tf.errors.OpError as exc:
            log.warning("%s: could not remove it (%s)", path, exc)


# ----------------------------------------------------------------------------- reading


def read_manifest(folder: str) -> dict:
    path = storage.join(folder, MANIFEST)
    if not storage.exists(path):
        raise RecordsError(f"{path}: not found; the folder is not a finished make_tfrecords.py output")
    try:
        manifest = json.loads(storage.read_text(path))
    except json.JSONDecodeError as exc:
        raise RecordsError(f"{path}: not valid JSON ({exc})") from None
    if manifest.get("format") != FORMAT:
        raise RecordsError(f"{path}: format {manifest.get('format')!r}, expected {FORMAT!r}")
    return manifest


def check_manifest(manifest: dict, cfg: ImgTrainConfig, folder: str) -> None:
    """The records must hold the colour mode and folds the run asks for, or validation would leak."""
    for key in ("color_mode", "n_folds", "fold_seed"):
        if manifest[key] != getattr(cfg.data, key):
            raise RecordsError(f"{storage.join(folder, MANIFEST)}: made with {key}={manifest[key]!r} but the run "
                               f"has data.{key}={getattr(cfg.data, key)!r}; convert again or change the config")


@dataclass
class RecordImages:
    """Decoded examples as numpy, for checks and small sets."""

    ids: list[str]
    images: np.ndarray
    targets: np.ndarray
    folds: np.ndarray


def parse_example(serialized: tf.Tensor, bits: int, channel_index: Sequence[int],
                  size: int | None) -> dict[str, tf.Tensor]:
    """One serialized example -> id, float32 image in [0, 1] (channels of the mode), target, fold."""
    example = tf.io.parse_single_example(serialized, FEATURES)
    image = tf.io.decode_png(example["image"], channels=0, dtype=tf.uint16 if bits == 16 else tf.uint8)
    image = tf.gather(tf.cast(image, tf.float32) / float(2 ** bits - 1), list(channel_index), axis=-1)
    if size is not None:
        image = resize_like_cv2(image, size)
    return {"id": example["id"], "image": image, "target": tf.cast(example["target"], tf.float32),
            "fold": example["fold"]}


def record_dataset(folder: str, folds: Sequence[int], size: int | None = None,
                   deterministic: bool = True, manifest: dict | None = None) -> tf.data.Dataset:
    """Parsed examples of the given folds; shard order (and record order) kept if deterministic."""
    manifest = manifest or read_manifest(folder)
    files = [storage.join(folder, s["file"]) for s in manifest["shards"] if s["fold"] in set(folds)]
    if not files:
        raise RecordsError(f"{folder}: no shards for folds {list(folds)}")
    missing = [f for f in files if not storage.exists(f)]
    if missing:
        raise RecordsError(f"{missing[0]}: shard listed in {MANIFEST} but missing ({len(missing)} missing)")
    _, channel_index = mode_channels(manifest["color_mode"])
    ds = tf.data.TFRecordDataset(files, num_parallel_reads=AUTOTUNE if not deterministic else None)
    if not deterministic:
        options = tf.data.Options()
        options.deterministic = False
        ds = ds.with_options(options)
    return ds.map(lambda s: parse_example(s, manifest["bits"], channel_index, size), num_parallel_calls=AUTOTUNE)


def load_tfrecords(folder: str, folds: Sequence[int] | None = None, size: int | None = None) -> RecordImages:
    """Every example of the folds (all by default) as numpy, in manifest order."""
    manifest = read_manifest(folder)
    folds = range(manifest["n_folds"]) if folds is None else folds
    rows = list(record_dataset(folder, folds, size, manifest=manifest).as_numpy_iterator())
    return RecordImages([r["id"].decode() for r in rows], np.stack([r["image"] for r in rows]),
                        np.stack([r["target"] for r in rows]), np.array([r["fold"] for r in rows]))


def count_images(manifest: dict, folds: Sequence[int]) -> int:
    return sum(s["count"] for s in manifest["shards"] if s["fold"] in set(folds))


def record_datasets(cfg: ImgTrainConfig, global_batch: int,
                    drop_remainder_valid: bool = False) -> tuple[tf.data.Dataset, tf.data.Dataset | None]:
    """Training and validation batches from TFRecords, split by the fold of each shard."""
    folder, data = cfg.data.tfrecords, cfg.data
    manifest = read_manifest(folder)
    check_manifest(manifest, cfg, folder)
    if manifest["image_size"] != data.image_size:
        log.warning("%s holds %d px images; resizing them to data.image_size=%d (a second resize: "
                    "convert at the training size for the folder pipeline's exact images)",
                    folder, manifest["image_size"], data.image_size)
    train_folds = [f for f in range(data.n_folds) if f != data.fold]
    log.info("TFRecords from %s: %d train, %d valid (fold %d)", folder, count_images(manifest, train_folds),
             count_images(manifest, [data.fold]) if data.fold >= 0 else 0, data.fold)

    def batches(folds: list[int], training: bool) -> tf.data.Dataset:
        ds = record_dataset(folder, folds, data.image_size, deterministic=not training, manifest=manifest)
        ds = ds.map(lambda r: (r["image"], r["target"]), num_parallel_calls=AUTOTUNE)
        ds = ds.apply(tf.data.experimental.assert_cardinality(count_images(manifest, folds)))  # Keras knows the steps
        return finish_pipeline(ds, batch_size=global_batch, training=training, augment=cfg.augment,
                               cache=data.cache, shuffle_buffer=data.shuffle_buffer, seed=cfg.seed,
                               drop_remainder=training or drop_remainder_valid)

    return batches(train_folds, True), None if data.fold < 0 else batches([data.fold], False)
