"""The cell-level classifier: crops that line up with cells, the crop cache, weak labels that only
ever lower, training through the CAM stage's loop (exact resume, SIGKILL), and inference/tuning.

Tiny data: eight synthetic 128 px training images, six public ones, a resnet10t with 8-64
channels on 32 px crops. The numbers mean nothing about quality; every path runs for real.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from hpacam.cellmodel.crops import CropSettings, build_crop_set, cell_crops, crop_window
from hpacam.cellmodel.pseudo import soft_targets
from hpacam.config import load_config

REPO = Path(__file__).resolve().parents[1]
CELL_RECIPE = REPO / "configs" / "cell" / "tiny_cpu.yaml"
CAM_RECIPE = REPO / "configs" / "cam" / "tiny_cpu.yaml"
SCRIPT = REPO / "train-cell-model" / "train_cell.py"


@pytest.fixture(scope="module")
def sets(tmp_path_factory):
    from hpacam.synth import generate_dataset

    root = tmp_path_factory.mktemp("cellmodel")
    generate_dataset(root / "train", 8, 128, seed=41, progress=False)
    generate_dataset(root / "public", 6, 128, seed=42, progress=False)
    return root


def cell_overrides(root: Path, run_dir: Path, *extra: str) -> list[str]:
    return [f"run_dir={run_dir}", f"data.sources=[{{images: {root / 'train' / 'images'}, "
            f"labels: {root / 'train' / 'labels.csv'}}}]", "data.image_size=32",
            "model.kwargs={channels: [8, 16, 32, 64], stem_width: 8}", "train.batch_size=16", "train.epochs=2",
            "train.progress=false", f"cells.segmentation.cache.dir={root / 'masks'}", *extra]


def single_threaded(fn, *args):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return fn(*args)
    finally:
        torch.set_num_threads(threads)


def train_cells(root: Path, run_dir: Path, *extra: str):
    from hpacam.cellmodel.config import TrainCellConfig
    from hpacam.cellmodel.train import train_cell_model

    return single_threaded(train_cell_model, load_config(TrainCellConfig, CELL_RECIPE, cell_overrides(root, run_dir, *extra)))


@pytest.fixture(scope="module")
def cell_run(sets):
    run = sets / "cell"
    train_cells(sets, run)
    return run


# ----------------------------------------------------------------------------- crops


def test_crops_line_up_with_their_cells():
    cells = np.zeros((64, 64), np.int32)
    cells[10:20, 10:20] = 1  # a 10 px square: with margin 0 the window is the box itself
    cells[30:50, 40:52] = 2
    cells[0:8, 56:64] = 3  # cut by the corner: the window leaves the image
    image = np.zeros((64, 64, 4), np.float32)
    for cell in (1, 2, 3):
        for channel in range(4):
            image[cells == cell, channel] = 0.1 * cell + 0.02 * channel
    image[cells == 0] = 0.9  # bright background, so a misplaced window shows

    exact = cell_crops(image, cells, CropSettings(size=10, margin=0.0))
    assert exact.shape == (3, 5, 10, 10) and exact.dtype == np.uint8
    assert (exact[0, 4] == 255).all()  # cell 1 fills its own window
    np.testing.assert_array_equal(exact[0, :4], np.round(image[10:20, 10:20].transpose(2, 0, 1) * 255))

    crops = cell_crops(image, cells, CropSettings(size=32, margin=0.1))
    for index, cell in enumerate((1, 2, 3)):
        inside = crops[index, 4] == 255
        assert inside.sum() > 100
        for channel in range(4):
            assert np.median(crops[index, channel][inside]) == pytest.approx(255 * (0.1 * cell + 0.02 * channel), abs=1)
    top, left, side = crop_window((slice(0, 8), slice(56, 64)), 0.1)
    assert top < 0 and left + side > 64  # so part of crop 3 is padding
    assert (crops[2, :, 0, :] == 0).all() or (crops[2, :, :, -1] == 0).all()
    assert len(cell_crops(image, np.zeros((64, 64), np.int32))) == 0


def test_crop_cache_round_trips_and_a_change_of_settings_or_bytes_gives_a_new_set(sets, tmp_path):
    import cv2

    from hpacam.segmentation import SegmentationConfig, Segmenter
    from hpacam.segmentation.settings import CacheSettings

    images = tmp_path / "images"
    images.mkdir()
    ids = sorted({p.name.rsplit("_", 1)[0] for p in (sets / "train" / "images").glob("*.png")})[:3]
    for image_id in ids:
        for path in (sets / "train" / "images").glob(f"{image_id}_*.png"):
            (images / path.name).write_bytes(path.read_bytes())
    segmenter = Segmenter(SegmentationConfig(cache=CacheSettings(enabled=False)))
    first = build_crop_set(tmp_path / "crops", images, ids, segmenter, CropSettings(size=32), progress=False)
    again = build_crop_set(tmp_path / "crops", images, ids, segmenter, CropSettings(size=32), progress=False)
    assert again.folder == first.folder
    np.testing.assert_array_equal(np.asarray(again.crops), np.asarray(first.crops))
    assert again.index["ID"].tolist() == first.index["ID"].tolist()
    n_cells = sum(segmenter.segment_file(images, i).n_cells for i in ids)
    assert len(first.crops) == n_cells and first.index.groupby("ID")["cell"].max().sum() == n_cells

    other_seg = Segmenter(replace(segmenter.cfg, classic=replace(segmenter.cfg.classic, cell_cut=0.2)))
    changed = build_crop_set(tmp_path / "crops", images, ids, other_seg, CropSettings(size=32), progress=False)
    bigger = build_crop_set(tmp_path / "crops", images, ids, segmenter, CropSettings(size=48), progress=False)
    green = images / f"{ids[0]}_green.png"
    plane = cv2.imread(str(green), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(green), plane // 2)
    edited = build_crop_set(tmp_path / "crops", images, ids, segmenter, CropSettings(size=32), progress=False)
    folders = {first.folder, changed.folder, bigger.folder, edited.folder}
    assert len(folders) == 4
    assert not list((tmp_path / "crops").glob(".*"))  # no temporary folder is left behind


def test_a_killed_crop_build_leaves_nothing_that_is_read(sets, tmp_path):
    from hpacam.cellmodel.crops import cache_key
    from hpacam.segmentation import SegmentationConfig, Segmenter
    from hpacam.segmentation.settings import CacheSettings

    folder = sets / "train" / "images"
    ids = sorted({p.name.rsplit("_", 1)[0] for p in folder.glob("*.png")})[:2]
    segmenter = Segmenter(SegmentationConfig(cache=CacheSettings(enabled=False)))
    key = cache_key(folder, ids, CropSettings(size=32), segmenter.settings_key)
    stale = tmp_path / "crops" / f".{key}.tmp999999"
    stale.mkdir(parents=True)
    (stale / "crops.u8").write_bytes(b"\0" * 10)  # what a kill mid-write leaves
    built = build_crop_set(tmp_path / "crops", folder, ids, segmenter, CropSettings(size=32), progress=False)
    assert built.folder.name == key and not stale.exists()
    assert len(built.crops) == len(built.index) > 0


# ----------------------------------------------------------------------------- weak labels


def test_soft_targets_never_give_a_cell_a_label_its_image_lacks():
    rng = np.random.default_rng(0)
    for _ in range(200):
        labels = (rng.random((7, 19)) < 0.2).astype(np.float32)
        standing = rng.random((7, 19)) * rng.choice([0.0, 1.0, 2.0])
        standing[rng.random((7, 19)) < 0.05] = np.nan
        threshold = float(rng.choice([0.0, 0.1, 0.5, 1.0]))
        targets = soft_targets(labels, standing, threshold)
        assert ((targets >= 0) & (targets <= labels)).all()
        assert (targets[labels == 0] == 0).all()
        if threshold == 0:
            np.testing.assert_array_equal(targets, labels)
    full = np.ones((3, 19))
    np.testing.assert_array_equal(soft_targets(full, np.ones((3, 19)), 0.5), full)  # strongest cells keep labels
    with pytest.raises(ValueError, match="threshold"):
        soft_targets(full, full, 1.5)


def test_pseudo_labels_from_cam_evidence_lower_the_image_labels_only(sets, tmp_path):
    from hpacam.cam.config import TrainCamConfig
    from hpacam.cam.train import train
    from hpacam.cellmodel.config import TrainCellConfig
    from hpacam.cellmodel.train import cell_training_data
    from hpacam.cam.train import Processes

    single_threaded(train, load_config(TrainCamConfig, CAM_RECIPE, [
        f"run_dir={tmp_path / 'cam'}", f"data.sources=[{{images: {sets / 'train' / 'images'}, "
        f"labels: {sets / 'train' / 'labels.csv'}}}]", "data.image_size=32", "data.fold=-1",
        "model.kwargs={channels: [8, 16, 32, 64], stem_width: 8}", "train.batch_size=4", "train.epochs=1",
        "train.progress=false"]))
    cfg = load_config(TrainCellConfig, CELL_RECIPE, cell_overrides(
        sets, tmp_path / "cell", f"cells.pseudo.cam_checkpoints=[{tmp_path / 'cam' / 'last.pt'}]",
        "cells.pseudo.threshold=0.5"))
    plain = load_config(TrainCellConfig, CELL_RECIPE, cell_overrides(sets, tmp_path / "cell"))
    procs = Processes(0, 1, torch.device("cpu"))
    soft = cell_training_data(cfg, procs).train_set.targets
    hard = cell_training_data(plain, procs).train_set.targets
    assert soft.shape == hard.shape and ((soft <= hard) & (soft >= 0)).all()
    assert (soft < hard).any()  # the CAM evidence lowered some labels
    assert list((tmp_path / "cell" / "crops").glob("*/standing-*.npy"))  # computed once, kept with the crops


def test_out_of_fold_rounds_lower_labels_by_models_that_never_saw_the_cell(sets, tmp_path):
    import json

    from hpacam.cam.checkpoint import read_checkpoint
    from hpacam.cam.train import Processes
    from hpacam.cellmodel.config import TrainCellConfig
    from hpacam.cellmodel.rounds import read_oof, refine_with
    from hpacam.cellmodel.train import cell_training_data
    from hpacam.labels import read_labels

    run = tmp_path / "rounds"
    rounds = ["cells.pseudo.rounds=1", "cells.pseudo.folds=2", "cells.pseudo.round_epochs=1", "data.fold=-1"]
    train_cells(sets, run, *rounds)
    round0 = run / "rounds" / "round0"
    held = [json.loads((round0 / f"fold{k}" / "held_out.json").read_text()) for k in (0, 1)]
    ids = read_labels(sets / "train" / "labels.csv")["ID"].tolist()
    assert sorted(held[0] + held[1]) == sorted(ids) and not set(held[0]) & set(held[1])  # a partition
    for k in (0, 1):  # each fold model trained one epoch on the other fold's cells only
        assert read_checkpoint(round0 / f"fold{k}" / "last.pt")["config"]["train"]["epochs"] == 1
        log = (round0 / f"fold{k}" / "log.txt").read_text()
        assert f"learns from the {len(held[1 - k])} images of the other folds" in log
    cfg = load_config(TrainCellConfig, CELL_RECIPE, cell_overrides(sets, run, *rounds))
    procs = Processes(0, 1, torch.device("cpu"))
    table = read_oof(round0 / "oof.npz")
    plain = cell_training_data(cfg, procs).train_set.targets  # the image labels
    # threshold 1: every cell below its image's best for a label is lowered (one epoch leaves the models unsure)
    refined = cell_training_data(cfg, procs, refine=refine_with(table, 1.0)).train_set.targets
    assert len(table) == len(plain) and not table.duplicated(["ID", "cell"]).any()  # every cell, once
    assert ((refined <= plain) & (refined >= 0)).all() and (refined < plain).any()
    assert (refined[plain == 0] == 0).all()  # never a label the image lacks
    assert "round 0: out-of-fold probabilities" in (run / "log.txt").read_text()
    assert not (round0 / "fold0" / "crops").exists()  # the fold models read the stage's crop cache
    final = read_checkpoint(run / "last.pt")
    assert final["config"]["cells"]["pseudo"]["rounds"] == 1 and final["step"] > 0
    # resuming reuses the finished round: its oof.npz is read, not recomputed
    stamp = (round0 / "oof.npz").stat().st_mtime_ns
    train_cells(sets, run, *rounds, "train.resume=auto")
    assert (round0 / "oof.npz").stat().st_mtime_ns == stamp
    # out-of-fold rows of other images are refused, naming the way out
    with pytest.raises(ValueError, match="out-of-fold predictions hold no row"):
        cell_training_data(cfg, procs, refine=refine_with(table.iloc[1:], 0.5))


# ----------------------------------------------------------------------------- training


def test_a_cell_run_folder_holds_a_checkpoint_that_rebuilds_the_model(cell_run):
    from hpacam.cam.checkpoint import read_checkpoint
    from hpacam.cellmodel.predict import load_cell_models

    assert {p.name for p in cell_run.iterdir()} >= {"config.yaml", "log.txt", "metrics.csv", "last.pt", "crops"}
    checkpoint = read_checkpoint(cell_run / "last.pt")
    assert checkpoint["config"]["cells"]["crops"]["mask"] == "apply" and checkpoint["arch"]["in_chans"] == 4
    (member,) = load_cell_models([cell_run / "last.pt"])
    assert member.crop == CropSettings(size=32, margin=0.1)
    assert "cell crops" in (cell_run / "log.txt").read_text()
    metrics = pd.read_csv(cell_run / "metrics.csv")
    assert len(metrics) == 2 and np.isfinite(metrics["train_loss"]).all()


def test_resuming_a_cell_run_equals_training_straight(sets, tmp_path):
    from hpacam.cam.checkpoint import read_checkpoint

    train_cells(sets, tmp_path / "resumed", "train.stop_after_steps=3")
    train_cells(sets, tmp_path / "resumed", "train.stop_after_steps=6", "train.resume=auto")
    train_cells(sets, tmp_path / "straight", "train.stop_after_steps=6")
    resumed, straight = read_checkpoint(tmp_path / "resumed" / "last.pt"), read_checkpoint(tmp_path / "straight" / "last.pt")
    assert resumed["step"] == straight["step"] == 6
    for key, value in straight["model"].items():
        assert torch.equal(resumed["model"][key], value), key


def test_a_mask_channel_model_trains_and_its_mask_filters_start_at_zero(sets, tmp_path):
    from hpacam.cam.checkpoint import read_checkpoint
    from hpacam.cam.models import create_model, find_stem_conv

    model = create_model("resnet10t", in_chans=5, output_stride=8, channels=[8, 16, 32, 64], stem_width=8)
    _, stem = find_stem_conv(model.backbone)
    assert stem.in_channels == 5 and torch.count_nonzero(stem.weight[:, 4]) == 0
    train_cells(sets, tmp_path / "channel", "cells.crops.mask=channel", "train.epochs=1")
    assert read_checkpoint(tmp_path / "channel" / "last.pt")["arch"]["in_chans"] == 5


def test_sigkill_during_cell_training_leaves_a_run_that_resumes(sets, tmp_path):
    from hpacam.cam.checkpoint import read_checkpoint

    run = tmp_path / "killed"
    argv = [sys.executable, str(SCRIPT), "--config", str(CELL_RECIPE),
            *cell_overrides(sets, run, "train.epochs=40", "train.log_every=0")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 180
    while not (run / "last.pt").is_file() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(0.3)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL, process.stderr.read()[-2000:]
    step = read_checkpoint(run / "last.pt")["step"]
    assert 0 < step < 40 * 2
    train_cells(sets, run, "train.epochs=40", "train.log_every=0", "train.resume=auto", "train.stop_after_steps=" +
                str(step + 2))
    train_cells(sets, tmp_path / "straight", "train.epochs=40", "train.log_every=0",
                f"train.stop_after_steps={step + 2}")
    killed, straight = read_checkpoint(run / "last.pt"), read_checkpoint(tmp_path / "straight" / "last.pt")
    assert killed["step"] == straight["step"] == step + 2
    for key, value in straight["model"].items():
        assert torch.equal(killed["model"][key], value), key


def test_cli_refuses_bad_settings_naming_the_key(sets, tmp_path):
    for bad, message in (("loss.mode=puzzle", "loss.mode=puzzle"), ("cells.pseudo.threshold=0.5", "cam_checkpoints"),
                         ("cells.crops.margin=2", "cells.crops.margin"),
                         ("cells.pseudo.round_threshold=0", "cells.pseudo.round_threshold")):
        done = subprocess.run([sys.executable, str(SCRIPT), "--config", str(CELL_RECIPE),
                               *cell_overrides(sets, tmp_path / "bad", bad)], cwd=REPO, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
        assert done.returncode == 1 and message in done.stderr, done.stderr[-1500:]
        assert "Traceback" not in done.stderr


def test_the_cell_stage_checks_run_when_the_config_is_read():
    """load_config runs the cell stage's own cross-field checks, not only the CAM stage's it inherits."""
    from hpacam.cellmodel.config import TrainCellConfig
    from hpacam.config import ConfigCheckError

    for bad, message in (("cells.crops.margin=2", "cells.crops.margin"), ("loss.mode=puzzle", "loss.mode=puzzle"),
                         ("cells.pseudo.threshold=0.5", "cells.pseudo.cam_checkpoints")):
        with pytest.raises(ConfigCheckError, match=re.escape(message)):
            load_config(TrainCellConfig, CELL_RECIPE, [bad])
    assert load_config(TrainCellConfig, CELL_RECIPE, ["cells.crops.margin=2"], check=False).cells.crops.margin == 2


# ----------------------------------------------------------------------------- inference and tuning


@pytest.fixture(scope="module")
def inference_config(sets, cell_run, tmp_path_factory):
    from hpacam.cam.config import TrainCamConfig
    from hpacam.cam.train import train

    root = tmp_path_factory.mktemp("cell_inference")
    single_threaded(train, load_config(TrainCamConfig, CAM_RECIPE, [
        f"run_dir={root / 'cam'}", f"data.sources=[{{images: {sets / 'train' / 'images'}, "
        f"labels: {sets / 'train' / 'labels.csv'}}}]", "data.image_size=32", "data.fold=-1",
        "model.kwargs={channels: [8, 16, 32, 64], stem_width: 8}", "train.batch_size=4", "train.epochs=1",
        "train.progress=false"]))
    config = root / "inference.yaml"
    config.write_text(f"cam_models:\n  - checkpoint: {root / 'cam' / 'last.pt'}\n"
                      f"cell_models:\n  - checkpoint: {cell_run / 'last.pt'}\n"
                      f"tta:\n  scales: [1.0]\n  flips: false\nsegmentation:\n  cache:\n    dir: {sets / 'masks'}\n")
    return config


def test_cell_model_share_one_submits_the_cell_models_probabilities(sets, cell_run, inference_config):
    from hpacam.cellmodel.predict import load_cell_models, predict_crops
    from hpacam.images import read_image
    from hpacam.inference import InferenceConfig, run_inference
    from hpacam.segmentation import Segmenter
    from hpacam.submission import read_submission

    cfg = load_config(InferenceConfig, inference_config, ["blend.cell_model_share=1.0", "blend.cell_model_gate=0"])
    folder = sets / "public" / "images"
    sample = read_submission(sets / "public" / "sample_submission.csv")
    submission, _, sources = run_inference(cfg, folder, sample)
    assert "cells_max_cell_model" in set(sources["source"])
    (member,) = load_cell_models([cell_run / "last.pt"])
    segmenter = Segmenter(cfg.segmentation)
    for image_id, prediction in zip(submission["ID"], submission["PredictionString"]):
        seg = segmenter.segment_file(folder, image_id)
        expected = predict_crops(member, cell_crops(read_image(folder, image_id), seg.cells, member.crop))
        triples = prediction.split()
        confidences = np.array([float(c) for c in triples[1::3]]).reshape(seg.n_cells, 19)
        np.testing.assert_allclose(confidences, expected, rtol=1e-5, atol=1e-6)


def test_checkpoints_of_the_other_kind_are_refused_by_name(sets, cell_run, inference_config):
    from hpacam.cam.checkpoint import CheckpointError
    from hpacam.inference import InferenceConfig, load_models

    cfg = load_config(InferenceConfig, inference_config)
    with pytest.raises(CheckpointError, match="cell_models, not cam_models"):
        load_models(replace(cfg, cam_models=[replace(cfg.cam_models[0], checkpoint=cell_run / "last.pt")]))
    with pytest.raises(CheckpointError, match="not a cell-model checkpoint"):
        load_models(replace(cfg, cell_models=[replace(cfg.cell_models[0], checkpoint=cfg.cam_models[0].checkpoint)]))


def test_tuning_chooses_image_probabilities_as_broadcast_then_cells_then_the_cell_models(sets, inference_config):
    from hpacam.inference import InferenceConfig, combine, read_sample
    from hpacam.submission import read_submission
    from hpacam.tuning import (STEPS, WITHOUT_CELL_MODELS, SetScorer, TuneGrid, best_without_cell_models,
                               broadcast_without_cell_models, choose_blend, chosen_row, collect_evidence,
                               strongest_broadcast)

    cfg = load_config(InferenceConfig, inference_config)
    folder = sets / "public"
    evidence = collect_evidence(cfg, folder / "images", read_sample(folder / "sample_submission.csv"))
    assert all(e.cell_model is not None and e.cell_model.shape == (e.n_cells, 19) for e in evidence)
    scorer = SetScorer(read_submission(folder / "truth.csv"), evidence)
    grid = TuneGrid(floors=[0.5, 1.0], cell_model_shares=[0.0, 0.5, 1.0], cell_model_max_shares=[0.0, 0.5])
    blend, table = choose_blend(cfg, evidence, scorer, grid)
    steps = {step: table[table["step"] == step] for step in table["step"].unique()}
    image_step, cell_step, model_step = (steps[s] for s in STEPS)
    # step 1: every image-probability setting as broadcast, the cell models' max among them
    assert (image_step["floor"] == 1.0).all() and (image_step["cell_model_share"] == 0).all()
    assert set(image_step["cell_model_max_share"]) == {0.0, 0.5}
    top = image_step.loc[image_step["mAP"].idxmax()]
    assert strongest_broadcast(table)["mAP"] == top["mAP"]
    # step 2 keeps step 1's image probabilities; step 3 builds on the best of steps 1-2
    assert (cell_step["cell_model_max_share"] == top["cell_model_max_share"]).all() and (cell_step["floor"] < 1).all()
    assert len(model_step) == 2 * 3 and model_step["floor"].nunique() == 1
    before = pd.concat([image_step, cell_step])
    assert model_step["floor"].iloc[0] == before.loc[before["mAP"].idxmax(), "floor"]
    # the chosen blend is the best of the three steps, never below the strongest broadcast
    whole = pd.concat([image_step, cell_step, model_step])
    assert scorer.score([combine(e, blend)[1] for e in evidence]) == pytest.approx(whole["mAP"].max())
    assert chosen_row(table)["mAP"] == whole["mAP"].max() >= top["mAP"]
    # the CAM pipeline alone, tuned by the same steps with the cell models left out
    alone = table[table["step"].str.startswith(WITHOUT_CELL_MODELS)]
    assert len(alone) and (alone["cell_model_max_share"] == 0).all() and (alone["cell_model_share"] == 0).all()
    assert best_without_cell_models(table)["mAP"] == alone["mAP"].max()
    own = alone[alone["step"] == WITHOUT_CELL_MODELS + STEPS[0]]  # its own baseline: broadcast without them
    assert broadcast_without_cell_models(table)["mAP"] == own["mAP"].max() and (own["floor"] == 1).all()


def test_the_cell_models_max_enters_the_image_probability_by_its_share():
    from hpacam.inference import BlendConfig, ImageEvidence, blended_image_probs

    cam = np.full(19, 0.2)
    cell_model = np.zeros((2, 19))
    cell_model[0, 3], cell_model[1, 3], cell_model[1, 5] = 0.6, 1.0, 0.4
    evidence = ImageEvidence(image_id="x", height=4, width=4, masks={1: "a", 2: "b"}, border=np.zeros(2, bool),
                             cam_probs=cam, keras_probs=None, keras_per_model=None, sigmoid=np.zeros((2, 19)),
                             regressor=None, standing=np.zeros((2, 19)), cell_model=cell_model)
    probs = blended_image_probs(evidence, BlendConfig(cell_model_max_share=0.25))
    expected = np.full(19, 0.75 * 0.2)
    expected[3], expected[5] = 0.75 * 0.2 + 0.25 * 1.0, 0.75 * 0.2 + 0.25 * 0.4
    np.testing.assert_allclose(probs, expected)
    np.testing.assert_allclose(blended_image_probs(evidence, BlendConfig()), cam)


def test_every_cell_recipe_is_valid_and_the_gpu_recipe_builds_a_five_channel_model():
    from hpacam.cam.models import create_model
    from hpacam.cellmodel.config import TrainCellConfig, check_cell_config
    from hpacam.cellmodel.data import input_channels

    recipes = sorted((REPO / "configs" / "cell").glob("*.yaml"))
    assert len(recipes) >= 2
    for recipe in recipes:
        cfg = load_config(TrainCellConfig, recipe)
        check_cell_config(cfg)
        if cfg.model.pretrained_path is not None:  # built here without weights: the architecture and its stem
            model = create_model(cfg.model.name, in_chans=input_channels(cfg.cells.crops.mask),
                                 output_stride=cfg.model.output_stride, **cfg.model.kwargs).eval()
            size = cfg.data.image_size
            with torch.no_grad():
                logits = model(torch.rand(1, input_channels(cfg.cells.crops.mask), size, size))
            assert logits.shape == (1, 19)


def test_gpu_cell_recipe_reads_its_named_local_weights_file_offline(tmp_path, monkeypatch):
    """The GPU recipe names a local ImageNet file and never downloads; a file of the library's layout loads.

    The stand-in file is a randomly initialised timm efficientnet_b0 with its 1000-class head, saved
    as safetensors under the recipe's name: the stem's RGB filters must arrive in the five-channel
    model (yellow from red, the mask channel zero), the head must be ignored.
    """
    import timm
    from safetensors.torch import save_file

    from hpacam.cam.config import choose_weights
    from hpacam.cam.models import create_model
    from hpacam.cellmodel.config import TrainCellConfig
    from hpacam.cellmodel.data import input_channels

    cfg = load_config(TrainCellConfig, REPO / "configs" / "cell" / "efficientnet_b0_224.yaml")
    assert cfg.model.pretrained is False
    assert cfg.model.pretrained_path == Path("weights/efficientnet_b0.ra_in1k.safetensors")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="efficientnet_b0.ra_in1k.safetensors: pretrained weights file not found"):
        choose_weights(cfg.model)
    source = timm.create_model("efficientnet_b0", pretrained=False, num_classes=1000)
    (tmp_path / "weights").mkdir()
    save_file(source.state_dict(), str(cfg.model.pretrained_path))
    download, path = choose_weights(cfg.model)
    assert (download, path) == (False, cfg.model.pretrained_path)
    model = create_model(cfg.model.name, in_chans=input_channels(cfg.cells.crops.mask), pretrained_path=path,
                         output_stride=cfg.model.output_stride, **cfg.model.kwargs)
    stem = dict(model.named_parameters())
    stem_key = next(k for k in stem if k.endswith("conv_stem.weight"))
    loaded, original = stem[stem_key].detach(), source.conv_stem.weight.detach()
    assert loaded.shape[1] == 5
    torch.testing.assert_close(loaded[:, :3], original)
    torch.testing.assert_close(loaded[:, 3], original[:, 0])
    assert torch.count_nonzero(loaded[:, 4]) == 0


def test_torchrun_two_processes_share_one_crop_cache_and_write_one_checkpoint(sets, tmp_path):
    from hpacam.cam.checkpoint import read_checkpoint

    run = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(SCRIPT),
               "--config", str(CELL_RECIPE), *cell_overrides(sets, run, "train.epochs=1", "train.device=cpu",
                                                            "train.dist_backend=gloo")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in run.glob("*.pt")) == ["last.pt"]
    assert len([p for p in (run / "crops").iterdir()]) == 1  # built once, by rank 0
    n_crops = len(pd.read_csv(next((run / "crops").glob("*/index.csv"))))
    assert read_checkpoint(run / "last.pt")["step"] == (n_crops + 1) // 2 // 16  # each process: half the crops


def test_with_oracle_image_labels_the_cell_models_term_is_gated_by_the_labels(sets, inference_config):
    from hpacam.inference import InferenceConfig, run_inference
    from hpacam.labels import multi_hot, read_labels
    from hpacam.submission import read_submission

    folder = sets / "public"
    cfg = load_config(InferenceConfig, inference_config, ["blend.cell_model_share=1.0", "blend.cell_model_gate=0",
                                                          f"oracle_image_labels={folder / 'labels.csv'}"])
    submission, _, _ = run_inference(cfg, folder / "images", read_submission(folder / "sample_submission.csv"))
    labels = read_labels(folder / "labels.csv")
    truth = dict(zip(labels["ID"], multi_hot(labels["labels"])))
    checked = 0
    for image_id, prediction in zip(submission["ID"], submission["PredictionString"]):
        triples = prediction.split()
        classes, confidences = np.array(triples[0::3], int), np.array(triples[1::3], float)
        absent = truth[image_id][classes] == 0
        assert (confidences[absent] == 0).all()  # no source gives a class the image lacks
        assert (confidences[~absent] > 0).all()
        checked += len(classes)
    assert checked > 0
