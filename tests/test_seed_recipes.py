"""The seed's recipes are the defaults (docs/seed-fidelity.md): CAM 3 of 10 scheduled epochs with a
local weights file, Keras 10 epochs at 600 px with a green-only ViT; and the two settings behind
them (train.stop_after_epochs, model.pretrained_path + model.pretrained) on real tiny runs."""

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import timm
import torch

from hpacam.cam.config import ModelConfig, TrainCamConfig, choose_weights
from hpacam.cam.train import train
from hpacam.config import load_config, to_dict
from hpacam.tf.config import ImgTrainConfig

REPO = Path(__file__).resolve().parents[1]
CAM, IMG = REPO / "configs" / "cam", REPO / "configs" / "img"
TINY_KWARGS = "model.kwargs={channels: [8, 16, 32, 64], stem_width: 8}"


@pytest.mark.parametrize("name, weights", [("resnest101_640", "resnest101-22405ba7.pth"),
                                           ("efficientnet_b4_640", "efficientnet-b4-6ed6700e.pth")])
def test_cam_recipes_are_the_seeds_schedule_and_the_longer_one_is_kept(name, weights):
    seed = load_config(TrainCamConfig, CAM / f"{name}.yaml")
    assert (seed.train.epochs, seed.train.stop_after_epochs) == (10, 3)
    assert seed.model.pretrained is False and seed.model.pretrained_path == Path("weights") / weights
    longer = to_dict(load_config(TrainCamConfig, CAM / f"{name}_10ep.yaml"))
    assert longer["train"]["stop_after_epochs"] == 0
    seed_dict = to_dict(seed)
    for tree in (seed_dict, longer):
        tree.pop("run_dir"), tree["train"].pop("stop_after_epochs")
    assert longer == seed_dict  # nothing else differs


@pytest.mark.parametrize("name, size, mode", [("effb7_rgb_600", 600, "rgb"), ("effb7_ggg_600", 600, "ggg"),
                                              ("convnext_base_rgb_600", 600, "rgb"), ("vit_b16_ggg_384", 384, "ggg")])
def test_keras_recipes_are_the_seeds(name, size, mode):
    cfg = load_config(ImgTrainConfig, IMG / f"{name}.yaml")
    assert (cfg.train.epochs, cfg.data.image_size, cfg.data.color_mode) == (10, size, mode)


@pytest.fixture(scope="module")
def dataset(random_rgby_set):
    """conftest's 24 random 32x32 RGBY images, 1-2 labels each (the loop needs no signal)."""
    return random_rgby_set


def tiny(data: Path, run_dir: Path, *overrides: str) -> TrainCamConfig:
    """The tiny CPU recipe on `data`: 24 images / (batch 4 x 2) = 3 steps per epoch, poly SGD."""
    return load_config(TrainCamConfig, CAM / "tiny_cpu.yaml", [
        f"run_dir={run_dir}", f"data.sources=[{{images: {data / 'images'}, labels: {data / 'labels.csv'}}}]",
        "data.image_size=32", "data.fold=-1", TINY_KWARGS, "train.batch_size=4", "train.accumulation=2",
        "train.progress=false", "optim.name=sgd", "optim.schedule=poly", "optim.lr=0.01", *overrides])


def test_stop_after_epochs_keeps_the_whole_schedule(dataset, tmp_path):
    """1 of 3 epochs: 3 steps taken, and the rate is where a 9-step poly schedule is after 3."""
    result = train(tiny(dataset, tmp_path / "run", "train.epochs=3", "train.stop_after_epochs=1"))
    assert result.step == 3
    rows = pd.read_csv(tmp_path / "run" / "metrics.csv")
    assert rows["epoch"].tolist() == [0] and rows["finished"].all()
    assert rows["lr"].iloc[0] == pytest.approx(0.01 * (1 - 3 / 9) ** 0.9, rel=1e-6)
    with pytest.raises(ValueError, match="train.stop_after_epochs"):
        tiny(dataset, tmp_path / "bad", "train.stop_after_epochs=-1")


def test_a_local_weights_file_is_loaded_without_any_download(dataset, tmp_path):
    source = timm.create_model("resnet10t", pretrained=False, channels=(8, 16, 32, 64), stem_width=8)
    path = tmp_path / "weights" / "resnet10t.pth"
    path.parent.mkdir()
    torch.save(source.state_dict(), path)
    cfg = tiny(dataset, tmp_path / "run", "train.epochs=1", "train.stop_after_steps=1", "optim.lr=0.0",
               f"model.pretrained_path={path}")
    assert choose_weights(cfg.model) == (False, path)
    train(cfg)
    assert f"loaded pretrained backbone weights from {path}" in (tmp_path / "run" / "log.txt").read_text()
    trained = torch.load(tmp_path / "run" / "last.pt", weights_only=True)["model"]
    torch.testing.assert_close(trained["backbone.net.layer4.0.conv1.weight"], source.layer4[0].conv1.weight)


def test_a_missing_weights_file_is_one_line_naming_it_unless_downloads_are_allowed(dataset, tmp_path):
    absent = tmp_path / "weights" / "resnest101-22405ba7.pth"
    done = subprocess.run([sys.executable, str(REPO / "train-cam-model" / "train_cam.py"), "--config",
                           str(CAM / "tiny_cpu.yaml"), f"run_dir={tmp_path / 'run'}", f"model.pretrained_path={absent}",
                           f"data.sources=[{{images: {dataset / 'images'}, labels: {dataset / 'labels.csv'}}}]"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines()[-1] == (
        f"train_cam: error: {absent}: pretrained weights file not found (model.pretrained_path). Put the "
        "ImageNet weights there, set model.pretrained=true on a machine that may download them, or "
        "model.pretrained_path=null to start from random weights")
    assert not (tmp_path / "run").exists()  # nothing written before the check
    # The one switch: on a machine that may download, the library fetches what the file would hold.
    assert choose_weights(ModelConfig(pretrained=True, pretrained_path=absent)) == (True, None)
    assert choose_weights(ModelConfig(pretrained=True)) == (True, None)
    assert choose_weights(ModelConfig()) == (False, None)
