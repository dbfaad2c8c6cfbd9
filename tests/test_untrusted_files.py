"""Crafted malicious model files are refused by the project's own loaders, and their code never runs.

Each file is a live exploit: loading it the unsafe way (`torch.load(weights_only=False)`, Keras
with `safe_mode=False`) creates a marker file, which the last step of each test checks, so a
passing test shows the loaders refuse real attacks and not merely unusual files. (The code-free
regressor format has its own crafted-file test in tests/test_calibration.py.)
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

from hpacam.cam.checkpoint import CheckpointError, load_cam_model, read_checkpoint
from hpacam.cam.loading import load_cam_models
from hpacam.cam.models import PretrainedWeightsError, create_model


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
    refused = rf"{path.name}: refused as unsafe: the checkpoint holds objects other than tensors and plain data \(.*exec"
    for load in (read_checkpoint, load_cam_model, lambda p: load_cam_models([p])):  # inspection, training, inference
        with pytest.raises(CheckpointError, match=refused):
            load(path)
    with pytest.raises(PretrainedWeightsError, match=rf"{path.name}: refused as unsafe"):  # model.pretrained_path
        create_model("resnet10t", pretrained_path=path, in_chans=4)
    assert not marker.exists()

    torch.load(path, weights_only=False)  # the file really is an exploit
    assert marker.exists()


class RunsShell:
    """Unpickling this object runs a shell command (`os.system`) that creates `marker`."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def write_payload(path: Path, payload, kind: str) -> None:
    """The same code payload in each container torch.load reads: zip at protocol 2 or 4, legacy, bare pickle."""
    import pickle

    entry = {"format": "hpacam.cam", "version": 1, "model": payload}
    if kind == "zip":
        torch.save(entry, path)
    elif kind == "zip_protocol_4":
        torch.save(entry, path, pickle_protocol=4)
    elif kind == "legacy":
        torch.save(entry, path, _use_new_zipfile_serialization=False)
    else:
        with open(path, "wb") as fh:
            pickle.dump(entry, fh, protocol=0 if kind == "pickle_protocol_0" else 4)


@pytest.mark.parametrize("kind", ["zip", "zip_protocol_4", "legacy", "pickle_protocol_0", "pickle_protocol_4"])
def test_every_code_payload_is_refused_as_unsafe_and_unpickling_it_unsafely_is_never_suggested(tmp_path, kind):
    marker, path = tmp_path / "pwned", tmp_path / "evil.pt"
    write_payload(path, RunsShell(marker), kind)
    for load in (read_checkpoint, lambda p: create_model("resnet10t", pretrained_path=p, in_chans=4)):
        with pytest.raises((CheckpointError, PretrainedWeightsError)) as caught:
            load(path)
        message = str(caught.value)
        assert message.startswith(f"{path}: refused as unsafe: the ") and "system" in message, message
        assert "objects other than tensors and plain data" in message
        assert "weights_only" not in message and "unreadable" not in message and "\n" not in message
    assert not marker.exists()


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_damaged_checkpoint_is_unreadable_not_unsafe_and_no_unsafe_load_is_suggested(tmp_path, damage):
    path = tmp_path / "damaged.pt"
    torch.save({"format": "hpacam.cam", "version": 1, "model": {"w": torch.zeros(64)}}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "truncated" else b"not a checkpoint at all")
    with pytest.raises(CheckpointError) as caught:
        read_checkpoint(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: unreadable checkpoint (") and "unsafe" not in message
    assert "weights_only" not in message and "\n" not in message


def test_every_torch_load_goes_through_the_one_loader():
    """hpacam.torchfile is the only module that calls torch.load (the safe loader and HPA's trusted one)."""
    root = Path(__file__).resolve().parents[1] / "hpacam"
    callers = sorted(str(p.relative_to(root)) for p in root.rglob("*.py") if "torch.load(" in p.read_text())
    assert callers == ["torchfile.py"]


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


@pytest.mark.parametrize("damage", ["truncated", "not_a_zip", "empty", "no_config"])
def test_a_damaged_keras_file_is_named_as_not_a_readable_archive(tmp_path, damage):
    """A truncated `.keras` file read "File not found" (Keras's words for any zip it cannot open)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import zipfile

    import keras

    from hpacam.tf.predict import load_image_model

    path = tmp_path / "damaged.keras"
    inputs = keras.Input((8, 8, 3))
    keras.Model(inputs, keras.layers.Dense(19)(keras.layers.GlobalAveragePooling2D()(inputs))).save(path)
    data = path.read_bytes()
    if damage == "no_config":
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("model.weights.h5", b"")
    else:
        path.write_bytes({"truncated": data[: len(data) // 2], "not_a_zip": b"PK\x03\x04 not really a zip archive",
                          "empty": b""}[damage])
    with pytest.raises(ValueError) as caught:
        load_image_model(str(path))
    message = str(caught.value)
    assert message.startswith(f"{path}: not a readable Keras archive (") and "not found" not in message.lower()


def test_every_keras_model_load_is_the_safe_one():
    """Keras models are loaded in one place, hpacam.tf.predict.load_image_model, with safe_mode=True."""
    root = Path(__file__).resolve().parents[1] / "hpacam"
    keras_load = re.compile(r"(?<![\w])load_model\(")  # not our own `_load_model` of torch weight files
    loads = {str(p.relative_to(root)): len(keras_load.findall(p.read_text())) for p in root.rglob("*.py")}
    assert {name: n for name, n in loads.items() if n} == {"tf/predict.py": 1}
    assert "load_model(path, safe_mode=True, compile=False)" in (root / "tf" / "predict.py").read_text()
