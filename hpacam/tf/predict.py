"""Image-level probabilities for a list of IDs from a trained `.keras` model: the inference entry point.

The model file is loaded with `safe_mode=True` (no arbitrary code from a model file). Its input
size comes from the model itself; its colour mode from the `config.yaml` that training saved
beside it (or given explicitly). Rows of the result follow the order of the IDs given.

Command line:
    python -m hpacam.tf.predict --model data/img/run/best.keras --images DIR --ids CSV --out probs.csv
"""

from __future__ import annotations

import argparse
import logging
import os
from typing import Sequence

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from hpacam.classes import NUM_CLASSES
from hpacam.config import load_config
from hpacam.fileio import atomic_write_text
from hpacam.tf import storage
from hpacam.tf.config import ImgTrainConfig
from hpacam.tf.data import channel_paths, image_dataset

log = logging.getLogger(__name__)

RUN_CONFIG = "config.yaml"


def load_image_model(path: str) -> keras.Model:
    """A trained classifier from its `.keras` file, safely (no Lambda layers, no pickled code)."""
    path = str(path)
    if not path.endswith(".keras"):
        raise ValueError(f"{path}: expected a native Keras model file ending in .keras")
    if not storage.exists(path):
        raise FileNotFoundError(f"{path}: model file not found")
    if not storage.is_remote(path):
        check_keras_archive(path)
    try:
        model = keras.models.load_model(path, safe_mode=True, compile=False)
    except Exception as exc:  # Keras raises ValueError, TypeError, zip and HDF5 errors for bad files
        raise ValueError(f"{path}: {keras_load_failure(exc)}") from None
    check_image_model(model, path)
    return model


KERAS_MEMBERS = ("config.json", "model.weights.h5")  # what every native .keras archive holds


def check_keras_archive(path: str) -> None:
    """A `.keras` file is a zip of its config and weights: refuse a damaged one before Keras reads it.

    Keras reports any zip it cannot open as "File not found", which sends a user looking for a
    file that is there; the archive's structure and checksums are checked here instead.
    """
    import zipfile

    problem = ""
    try:
        with zipfile.ZipFile(path) as archive:
            missing = [name for name in KERAS_MEMBERS if name not in archive.namelist()]
            bad = archive.testzip()  # reads every member: a damaged one fails its CRC
        if missing:
            problem = f"no {', '.join(missing)} in it"
        elif bad is not None:
            problem = f"member {bad} fails its checksum"
    except (zipfile.BadZipFile, EOFError, OSError, ValueError) as exc:
        problem = f"truncated or not a zip archive: {exc}"
    if problem:
        raise ValueError(f"{path}: not a readable Keras archive ({problem}); save the model again "
                         "with model.save('....keras')")


def check_image_model(model: keras.Model, path: str) -> None:
    """Refuse a model that is not a 19-class classifier of square 3-channel images, at load.

    Found later, the mismatch would fail on every batch and read as one unreadable image after another.
    """
    inputs, outputs = model.input_shape, model.output_shape
    if not (isinstance(inputs, tuple) and len(inputs) == 4 and inputs[3] == 3 and inputs[1] and inputs[1] == inputs[2]):
        raise ValueError(f"{path}: the model takes input {inputs}; an image-level model takes "
                         "(batch, size, size, 3) images")
    if outputs != (None, NUM_CLASSES):
        raise ValueError(f"{path}: the model gives output {outputs}; an image-level model gives "
                         f"(batch, {NUM_CLASSES}) class probabilities")


def predict_images(model: keras.Model, images: np.ndarray, batch_size: int, path: str = "model") -> np.ndarray:
    """(N, 19) float32 probabilities of images already read and sized for the model (inference's path)."""
    probs = np.asarray(model.predict(images, batch_size=batch_size, verbose=0), dtype=np.float32)
    if probs.shape != (len(images), NUM_CLASSES):
        raise ValueError(f"{path}: returned {probs.shape} for {len(images)} images; expected (N, {NUM_CLASSES})")
    return probs


def keras_load_failure(exc: Exception) -> str:
    """Why a `.keras` file did not load, in one line; code that safe mode blocked is named as refused."""
    text = str(exc)
    if "safe_mode" in text or "unsafe_deserialization" in text:
        return ("refused: the model file holds Python code (e.g. a Lambda layer), which safe mode does not run; "
                f"rebuild the model without it ({text.split('. ')[0]})")
    if "File not found" in text:  # Keras's words for a zip it cannot open, though the file exists
        return "not a readable Keras archive (Keras could not open it as a .keras zip file)"
    return f"not a loadable Keras model ({type(exc).__name__}: {text.splitlines()[0] if text else ''})"


def color_mode_of(model_path: str) -> str:
    """The colour mode a model was trained with, from the run config saved beside it."""
    config_path = storage.join(os.path.dirname(str(model_path)), RUN_CONFIG)
    if not storage.exists(config_path):
        raise FileNotFoundError(f"{config_path}: no run config beside the model; pass color_mode explicitly")
    with storage.local_copy(config_path) as local:
        return load_config(ImgTrainConfig, local).data.color_mode


def predict_with_model(model: keras.Model, image_ids: Sequence[str], images: str, color_mode: str,
                       batch_size: int = 16) -> np.ndarray:
    """(len(image_ids), 19) float32 probabilities, row i for image_ids[i]; for an already loaded model."""
    image_ids = list(image_ids)
    if not image_ids:
        return np.zeros((0, NUM_CLASSES), dtype=np.float32)
    size = model.input_shape[1]
    paths = channel_paths(images, image_ids, color_mode)
    ds = image_dataset(paths, color_mode, size).batch(batch_size).prefetch(2)
    probs = np.asarray(model.predict(ds, verbose=0), dtype=np.float32)
    if probs.shape != (len(image_ids), NUM_CLASSES):
        raise RuntimeError(f"model returned {probs.shape} for {len(image_ids)} images; expected (N, {NUM_CLASSES})")
    return probs


def predict_image_probabilities(model_path: str, image_ids: Sequence[str], images: str, *,
                                color_mode: str | None = None, batch_size: int = 16) -> np.ndarray:
    """Load `model_path` (safe mode) and predict every ID of `image_ids` from the folder `images`.

    Returns float32 (len(image_ids), 19), row i the probabilities of image_ids[i].
    """
    model = load_image_model(model_path)
    mode = color_mode or color_mode_of(model_path)
    log.info("%s: %d images, colour mode %s, %d px", model_path, len(image_ids), mode, model.input_shape[1])
    return predict_with_model(model, image_ids, images, mode, batch_size)


def probabilities_frame(image_ids: Sequence[str], probs: np.ndarray) -> pd.DataFrame:
    """ID plus one column per class (0..18), the CSV layout of this stage's outputs."""
    frame = pd.DataFrame(probs, columns=[str(c) for c in range(NUM_CLASSES)])
    frame.insert(0, "ID", list(image_ids))
    return frame


def main(argv: Sequence[str] | None = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description="Image-level probabilities from a trained .keras model")
    parser.add_argument("--model", required=True, help="best.keras of a training run")
    parser.add_argument("--images", required=True, help="folder of {ID}_{channel}.png (local or gs://)")
    parser.add_argument("--ids", required=True, help="CSV with an ID column (labels, sample_submission)")
    parser.add_argument("--out", required=True, help="output CSV: ID and one column per class")
    parser.add_argument("--color-mode", choices=("rgb", "ggg"), help="default: from config.yaml beside the model")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)
    with storage.local_copy(args.ids) as local:
        table = pd.read_csv(local, dtype=str, keep_default_na=False)
    if "ID" not in table.columns:
        parser.exit(2, f"{args.ids}: no ID column (columns: {list(table.columns)})\n")
    ids = table["ID"].tolist()
    probs = predict_image_probabilities(args.model, ids, args.images, color_mode=args.color_mode,
                                        batch_size=args.batch_size)
    frame = probabilities_frame(ids, probs)
    atomic_write_text(args.out, frame.to_csv(index=False))
    return frame


if __name__ == "__main__":
    main()
