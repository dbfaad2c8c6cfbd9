"""The ResNeXt-class Keras model (hpacam.tf.resnext): torchvision's network, converted exactly.

A tiny torchvision ResNeXt (random weights and batch-norm statistics) goes through
tools/resnext_weights.py; the Keras model built from the file gives torchvision's features."""

import os
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("tensorflow")

import torch  # noqa: E402
from torchvision.models.resnet import Bottleneck, ResNet  # noqa: E402

from hpacam.config import load_config  # noqa: E402
from hpacam.tf.config import ImgTrainConfig, ModelConfig  # noqa: E402
from hpacam.tf.models import build_model  # noqa: E402
from hpacam.tf.resnext import IMAGENET_MEAN, IMAGENET_STD, RESNEXT_TINY, shape_of_state  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO / "tools" / "resnext_weights.py"


@pytest.fixture(scope="module")
def torch_resnext(tmp_path_factory):
    """torchvision's ResNet(Bottleneck, [1, 1, 1, 1], groups=4, width_per_group=4), statistics randomised."""
    torch.manual_seed(0)
    net = ResNet(Bottleneck, [1, 1, 1, 1], groups=4, width_per_group=4).eval()
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    path = tmp_path_factory.mktemp("resnext") / "tiny_resnext.pth"
    torch.save(net.state_dict(), path)
    return net, path


def test_the_shape_is_read_from_the_state_dict(torch_resnext):
    net, _ = torch_resnext
    assert shape_of_state({k: v.numpy() for k, v in net.state_dict().items()}) == RESNEXT_TINY


def test_converted_weights_give_torchvisions_features(torch_resnext, tmp_path):
    net, path = torch_resnext
    out = tmp_path / "tiny.weights.h5"
    done = subprocess.run([sys.executable, str(TOOL), "--torch", str(path), "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert out.is_file() and not list(tmp_path.glob(".*tmp*"))
    model = build_model(ModelConfig(architecture="resnext_tiny", weights=str(out), weights_scope="backbone",
                                    dropout=0.0), 64)
    backbone = model.get_layer("resnext_tiny")
    images = np.random.default_rng(0).random((2, 64, 64, 3), dtype=np.float32)  # [0, 1], as hpacam.tf.data gives
    normalised = (images - np.array(IMAGENET_MEAN, np.float32)) / np.array(IMAGENET_STD, np.float32)
    net.fc = torch.nn.Identity()
    with torch.no_grad():
        expected = net(torch.from_numpy(normalised.transpose(0, 3, 1, 2))).numpy()
    got = np.asarray(backbone(images))
    assert got.shape == expected.shape == (2, 2048)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    assert model(images).shape == (2, 19)


def test_bad_torch_files_are_one_line_naming_them(tmp_path):
    other = tmp_path / "not_resnext.pth"
    torch.save({"fc.weight": torch.zeros(2, 2)}, other)
    done = subprocess.run([sys.executable, str(TOOL), "--torch", str(other), "--out", str(tmp_path / "x.weights.h5")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and done.stderr.strip().splitlines()[-1] == (
        f"resnext_weights: error: {other}: not a torchvision ResNet/ResNeXt state dict (no layer1..layer4 blocks)")
    assert not (tmp_path / "x.weights.h5").exists()
    with pytest.raises(ValueError, match="no library ImageNet weights"):
        build_model(ModelConfig(architecture="resnext_tiny", weights="imagenet"), 64)


def test_the_resnext_recipe_names_its_local_weights():
    cfg = load_config(ImgTrainConfig, REPO / "configs" / "img" / "resnext101_rgb_600.yaml")
    assert (cfg.model.architecture, cfg.model.weights_scope) == ("resnext101_32x8d", "backbone")
    assert cfg.model.weights == "weights/resnext101_32x8d.weights.h5"
    assert (cfg.train.epochs, cfg.data.image_size) == (10, 600)
