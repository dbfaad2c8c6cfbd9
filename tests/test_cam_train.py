"""The training loop end to end on tiny random data: run folder, exact resume, NaN stop, AMP, CLI, torchrun."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from hpacam.cam.checkpoint import CheckpointError, load_cam_model, read_checkpoint
from hpacam.cam.config import TrainCamConfig
from hpacam.cam.train import NonFiniteLossError, train
from hpacam.classes import CHANNELS, CLASS_NAMES, NUM_CLASSES
from hpacam.config import load_config

REPO = Path(__file__).resolve().parents[1]
TINY_RECIPE = REPO / "configs" / "cam" / "tiny_cpu.yaml"
SCRIPT = REPO / "train-cam-model" / "train_cam.py"


@pytest.fixture(scope="module")
def dataset(random_rgby_set):
    """conftest's 24 random 32x32 RGBY images, 1-2 labels each (the loop needs no signal)."""
    return random_rgby_set


def tiny_config(data: Path, run_dir: Path, *overrides: str) -> TrainCamConfig:
    base = [
        f"run_dir={run_dir}",
        f"data.sources=[{{images: {data / 'images'}, labels: {data / 'labels.csv'}}}]",
        "data.image_size=32",
        "model.kwargs={channels: [8, 16, 32, 64], stem_width: 8}",
        "train.batch_size=4",
        "train.epochs=2",
        "train.progress=false",
        "train.log_every=1",
    ]
    return load_config(TrainCamConfig, TINY_RECIPE, base + list(overrides))


def test_a_run_folder_holds_config_log_metrics_and_loadable_checkpoints(dataset, tmp_path):
    result = train(tiny_config(dataset, tmp_path / "run", "data.n_folds=4", "data.fold=0"))
    run = tmp_path / "run"
    assert {p.name for p in run.iterdir()} >= {"config.yaml", "log.txt", "metrics.csv", "last.pt", "best.pt"}
    assert not list(run.glob(".*.tmp"))
    metrics = pd.read_csv(run / "metrics.csv")
    assert metrics["epoch"].tolist() == [0, 1] and metrics["finished"].all()
    assert {"val_loss", "macro_auc", "macro_f1@0.3", "micro_f1@0.3", "train_reconstruction"} <= set(metrics)
    assert np.isfinite(metrics["train_loss"]).all()
    assert result.step == 2 * (18 // 4)  # 18 training images, batch 4, no accumulation

    checkpoint = read_checkpoint(run / "last.pt")  # weights_only=True inside
    assert checkpoint["arch"]["name"] == "resnet10t" and checkpoint["arch"]["output_stride"] == 8
    assert checkpoint["classes"] == list(CLASS_NAMES) and checkpoint["channels"] == list(CHANNELS)
    assert checkpoint["config"]["data"]["image_size"] == 32 and checkpoint["epoch"] == 2
    assert {"optimizer", "scheduler", "scaler", "rng", "metric"} <= set(checkpoint)
    model = load_cam_model(run / "best.pt")
    logits, cams = model(torch.rand(1, 4, 32, 32), with_cam=True)
    assert logits.shape == (1, NUM_CLASSES) and cams.shape == (1, NUM_CLASSES, 4, 4)
    assert model.class_names == list(CLASS_NAMES)
    assert "epoch 1 (step 8)" in (run / "log.txt").read_text()


@pytest.mark.parametrize("optimizer", [
    ("optim.name=adam", "optim.schedule=cosine"),
    ("optim.name=sgd", "optim.schedule=poly", "optim.lr=0.05", "optim.lr_multipliers=[1, 2, 10, 20]"),
])
def test_resuming_after_n_steps_equals_training_2n_steps_straight(dataset, tmp_path, optimizer):
    common = ("data.fold=-1", "train.accumulation=2", *optimizer)  # 24 images / (4 x 2) = 3 steps per epoch
    train(tiny_config(dataset, tmp_path / "resumed", "train.stop_after_steps=2", *common))
    assert read_checkpoint(tmp_path / "resumed" / "last.pt")["step"] == 2  # stopped mid-epoch
    train(tiny_config(dataset, tmp_path / "resumed", "train.stop_after_steps=4", "train.resume=auto", *common))
    train(tiny_config(dataset, tmp_path / "straight", "train.stop_after_steps=4", *common))

    resumed = read_checkpoint(tmp_path / "resumed" / "last.pt")
    straight = read_checkpoint(tmp_path / "straight" / "last.pt")
    assert resumed["step"] == straight["step"] == 4
    for key, value in straight["model"].items():
        assert torch.equal(resumed["model"][key], value), key
    assert_same_tree(resumed["optimizer"], straight["optimizer"])
    assert resumed["scheduler"] == straight["scheduler"]
    assert torch.equal(resumed["rng"]["torch"], straight["rng"]["torch"])
    rows = pd.read_csv(tmp_path / "resumed" / "metrics.csv")
    assert rows["step"].tolist() == [2, 3, 4]  # stop, end of epoch 0, stop


def assert_same_tree(a, b, where="optimizer"):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            assert_same_tree(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_tree(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(dataset, tmp_path):
    run = tmp_path / "run"
    train(tiny_config(dataset, run, "data.fold=-1", "train.epochs=1"))
    good_checkpoint = (run / "last.pt").read_bytes()
    good_metrics = (run / "metrics.csv").read_text()
    with pytest.raises(NonFiniteLossError, match="last good checkpoint .* was kept"):
        train(tiny_config(dataset, run, "data.fold=-1", "train.epochs=3", "optim.lr=1e30"))
    assert (run / "last.pt").read_bytes() == good_checkpoint
    assert (run / "metrics.csv").read_text() == good_metrics


def test_bf16_autocast_channels_last_and_accumulation_on_cpu(dataset, tmp_path):
    result = train(tiny_config(dataset, tmp_path / "amp", "data.fold=-1", "train.epochs=1", "train.amp=true",
                               "train.channels_last=true", "train.accumulation=2", "optim.name=sgd",
                               "optim.schedule=poly", "optim.lr=0.01"))
    metrics = pd.read_csv(tmp_path / "amp" / "metrics.csv")
    assert np.isfinite(metrics["train_loss"]).all() and metrics["amp_skipped"].tolist() == [0]
    assert result.step == 3
    model = load_cam_model(tmp_path / "amp" / "last.pt")
    assert torch.isfinite(model(torch.rand(1, 4, 32, 32))).all()


def test_checkpoint_errors_name_the_file(tmp_path):
    with pytest.raises(CheckpointError, match="nothing.pt: checkpoint not found"):
        read_checkpoint(tmp_path / "nothing.pt")
    foreign = tmp_path / "foreign.pt"
    torch.save({"model": {}}, foreign)
    with pytest.raises(CheckpointError, match="foreign.pt: not an hpacam CAM checkpoint"):
        load_cam_model(foreign)


def load_script():
    spec = importlib.util.spec_from_file_location("train_cam_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_bad_input_exits_non_zero_naming_the_problem(dataset, tmp_path, capsys):
    script = load_script()
    rc = script.main(["--config", str(TINY_RECIPE), f"run_dir={tmp_path / 'run'}",
                      f"data.sources=[{{images: {dataset / 'images'}, labels: {tmp_path / 'absent.csv'}}}]"])
    assert rc == 1
    assert "absent.csv: label file not found" in capsys.readouterr().err
    rc = script.main(["--config", str(TINY_RECIPE), f"run_dir={tmp_path / 'run'}", "data.image_size=100"])
    assert rc == 1
    assert "data.image_size=100 must be a multiple of 16" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        script.main(["--config", str(TINY_RECIPE), "train.epochz=3"])
    assert exit_info.value.code == 2
    assert "epochz" in capsys.readouterr().err


def test_every_recipe_in_configs_cam_is_valid():
    from hpacam.cam.config import check_config

    recipes = sorted((REPO / "configs" / "cam").glob("*.yaml"))
    assert len(recipes) >= 3
    for recipe in recipes:
        check_config(load_config(TrainCamConfig, recipe))


def run_torchrun(dataset: Path, run: Path, *overrides: str) -> None:
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(SCRIPT),
        "--config", str(TINY_RECIPE), f"run_dir={run}",
        f"data.sources=[{{images: {dataset / 'images'}, labels: {dataset / 'labels.csv'}}}]",
        "data.image_size=32", "model.kwargs={channels: [8, 16, 32, 64], stem_width: 8}",
        "train.batch_size=4", "train.epochs=1", "train.device=cpu", "train.dist_backend=gloo",
        "train.progress=false", *overrides,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]


def test_torchrun_with_two_processes_trains_and_writes_one_checkpoint(dataset, tmp_path):
    run = tmp_path / "ddp"
    run_torchrun(dataset, run, "data.fold=-1")
    assert sorted(p.name for p in run.glob("*.pt")) == ["last.pt"]
    assert not list(run.glob(".*.tmp"))
    checkpoint = read_checkpoint(run / "last.pt")
    assert checkpoint["step"] == 3  # 24 images over 2 processes, batch 4 each: 3 steps
    assert not any(key.startswith("module.") for key in checkpoint["model"])
    assert load_cam_model(run / "last.pt") is not None
    assert len(pd.read_csv(run / "metrics.csv")) == 1


def test_torchrun_validation_gathers_both_shards(dataset, tmp_path):
    """Validation split over two processes gives the metrics of one process seeing the whole fold."""
    from hpacam.cam.data import CamDataset, read_sources, split_folds
    from hpacam.cam.metrics import classification_metrics
    from hpacam.cam.puzzle import classification_loss

    run = tmp_path / "ddp_val"
    run_torchrun(dataset, run, "data.n_folds=4", "data.fold=0")
    row = pd.read_csv(run / "metrics.csv").iloc[-1]
    cfg = load_config(TrainCamConfig, run / "config.yaml")
    _, valid = split_folds(read_sources(cfg.data), cfg.data)
    images = torch.stack([item[0] for item in CamDataset(valid, 32, "rgby")])
    targets = torch.from_numpy(valid.targets)
    with torch.no_grad():
        logits = load_cam_model(run / "last.pt")(images)
    expected = classification_metrics(torch.sigmoid(logits).numpy(), valid.targets)
    assert row["macro_auc"] == pytest.approx(expected["macro_auc"], abs=1e-6)
    assert row["val_loss"] == pytest.approx(float(classification_loss(logits, targets, cfg.loss)), rel=1e-4)
