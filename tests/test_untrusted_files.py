"""Crafted malicious model files are refused by the project's own loaders, and their code never runs.

Each file is a live exploit: loading it the unsafe way (`torch.load(weights_only=False)`, Keras
with `safe_mode=False`) creates a marker file, which the last step of each test checks, so a
passing test shows the loaders refuse real attacks and not merely unusual files. (The code-free
regressor format has its own crafted-file test in tests/test_calibration.py.)
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from hpacam.cam.checkpoint import CheckpointError, load_cam_model, read_checkpoint
from hpacam.cam.models import PretrainedWeightsError, create_model
from hpacam.cam.tta import load_cam_models


class RunsCode:
    """Unpickling this object runs `exec` on a line of Python that creates `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return exec, (f"import pathlib; pathlib.Path({str(self.marker)!r}).touch()",)


@pytest.fixture
def evil_checkpoint(tmp_path) -> tuple[Path, Path]:
    """A file shaped like an hpacam checkpoint whose pickle runs code."""
    marker, path = tmp_path / "pwned-by-checkpoint", tmp_path / "evil.pt"
    torch.save({"format": "hpacam.cam", "version": 1, "arch": {"name": "resnet10t"}, "model": RunsCode(marker)}, path)
    return path, marker


def test_a_checkpoint_whose_pickle_runs_code_is_refused_naming_the_file(evil_checkpoint):
    path, marker = evil_checkpoint
    refused = rf"{path.name}: refused: the checkpoint holds pickled Python objects \(it needs .*exec\)"
    for load in (read_checkpoint, load_cam_model, lambda p: load_cam_models([p])):  # inspection, training, inference
        with pytest.raises(CheckpointError, match=refused):
            load(path)
    with pytest.raises(PretrainedWeightsError, match=rf"{path.name}: refused"):  # model.pretrained_path
        create_model("resnet10t", pretrained_path=path, in_chans=4)
    assert not marker.exists()

    torch.load(path, weights_only=False)  # the file really is an exploit
    assert marker.exists()


def test_the_resume_path_refuses_it_too(evil_checkpoint, tmp_path):
    from hpacam.cam.train import restore

    path, marker = evil_checkpoint
    with pytest.raises(CheckpointError, match="refused"):
        restore(path, None, None, None, None, steps_per_epoch=1)  # nothing is touched before the file is read
    assert not marker.exists()


def test_a_keras_model_with_a_lambda_layer_is_refused_without_running_it(tmp_path):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    from hpacam.tf.predict import load_image_model

    marker, path = tmp_path / "pwned-by-keras", tmp_path / "evil.keras"
    inputs = keras.Input((8, 8, 3))
    code = f"lambda x: (__import__('pathlib').Path({str(marker)!r}).touch(), x)[1]"  # the path as a constant
    touch = keras.layers.Lambda(eval(code))
    pooled = keras.layers.GlobalAveragePooling2D()(touch(inputs))
    keras.Model(inputs, keras.layers.Dense(19, activation="sigmoid")(pooled)).save(path)
    marker.unlink()  # building the model ran the lambda once; the file is what is under test

    with pytest.raises(ValueError, match=rf"{path.name}: refused: the model file holds Python code .*Lambda"):
        load_image_model(str(path))
    assert not marker.exists()

    keras.models.load_model(path, safe_mode=False)  # the file really is an exploit
    assert marker.exists()


def test_a_damaged_keras_file_is_named(tmp_path):
    from hpacam.tf.predict import load_image_model

    path = tmp_path / "damaged.keras"
    path.write_bytes(b"PK\x03\x04 not really a zip archive")
    with pytest.raises(ValueError, match=r"damaged\.keras: not a loadable Keras model"):
        load_image_model(str(path))
