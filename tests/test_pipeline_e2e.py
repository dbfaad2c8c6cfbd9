"""End to end on synthetic images, under the demo's protocol: train, tune on public, score private.

A tiny CAM model and its regressor learn from the training images and their image labels only;
`hpacam.tuning` chooses the blend on a public set; inference scores a private set. The
submission must pass a format check; with the true image labels in place of the models' image
probabilities, the cell stage must beat `broadcast` with those labels (what CAM x mask evidence
adds inside images); and the tuned pipeline must stay within noise of `broadcast` with the same
models on private. One module-scoped pipeline run is shared by the tests here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from hpacam.classes import NUM_CLASSES
from hpacam.evaluate import evaluate_files
from hpacam.masks import decode_mask
from hpacam.submission import parse_prediction_string, read_submission

# tools/stages.py (conftest.py puts tools/ on the path): the commands the demo and the ablation run
from stages import base_inference_config, scored_set_options, sources_override, stage_command, write_inference_config

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable


def run(*args: str) -> str:
    result = subprocess.run([PY, *args], cwd=REPO, text=True, capture_output=True)
    assert result.returncode == 0, f"{args[0]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    from hpacam.synth import generate_dataset

    root = tmp_path_factory.mktemp("pipeline")
    generate_dataset(root / "train", 160, 256, seed=11, workers=2, progress=False)
    generate_dataset(root / "public", 16, 256, seed=13, progress=False)
    generate_dataset(root / "test", 16, 256, seed=12, progress=False)
    train = root / "train"
    run(*stage_command("train_cam", f"run_dir={root / 'cam'}", sources_override(train), "data.image_size=128",
                       "data.fold=-1", "train.epochs=10", "train.progress=false", config="configs/cam/tiny_cpu.yaml"))
    masks = root / "masks"
    run(*stage_command("extract_intensities", f"images={train / 'images'}", f"labels={train / 'labels.csv'}",
                       f"checkpoints=[{root / 'cam' / 'last.pt'}]", f"out_dir={root / 'int'}", "select=all",
                       "max_images=80", "tta.scales=[1.0]", f"segmentation.cache.dir={masks}"))
    run(*stage_command("train_grad_boost", f"intensities={root / 'int' / 'intensities.csv'}",
                       f"out_dir={root / 'reg'}", "regressor.n_estimators=60"))
    regressor = next((root / "reg").glob("*.npz"))
    base = write_inference_config(root / "inference.base.yaml",
                                  base_inference_config(root / "cam" / "last.pt", regressor, masks, visualise=1))
    run(*stage_command("tune", *scored_set_options(root / "public", truth=True), "--out", root / "inference.yaml",
                       config=base))
    test = root / "test"
    out = root / "out" / "submission.csv"
    run(*stage_command("inference", *scored_set_options(test), "--out", out, "--pictures", root / "pics",
                       config=root / "inference.yaml"))
    return root, test, out


def broadcast_score(root: Path, test: Path, probs: list[str], name: str) -> float:
    segmented = root / "segmented"
    if not segmented.is_dir():
        run(*stage_command("segment", "--images", test / "images", "--out", segmented, "--cache-dir", root / "masks"))
    pred = root / "out" / f"{name}.csv"
    run("-m", "hpacam.baselines", "broadcast", "--cells", str(segmented), "--sample",
        str(test / "sample_submission.csv"), *probs, "--out", str(pred))
    return evaluate_files(test / "truth.csv", pred).mean_average_precision


def test_submission_format(pipeline):
    root, test, out = pipeline
    sample = read_submission(test / "sample_submission.csv")
    sub = read_submission(out)
    assert sub["ID"].tolist() == sample["ID"].tolist()  # every ID once, in the sample's order
    assert (sub[["ImageWidth", "ImageHeight"]].to_numpy() == sample[["ImageWidth", "ImageHeight"]].to_numpy()).all()
    for _, row in sub.iterrows():
        items = parse_prediction_string(row["PredictionString"], row["ID"])
        assert items, f"{row['ID']}: no predictions"
        confidences = np.array([item.confidence for item in items])
        assert ((confidences >= 0) & (confidences <= 1)).all()
        masks = {item.mask for item in items}
        assert len(items) == len(masks) * NUM_CLASSES  # every cell gets all 19 classes
        union = np.zeros((row["ImageHeight"], row["ImageWidth"]), dtype=int)
        for mask in masks:
            union += decode_mask(mask, row["ImageHeight"], row["ImageWidth"])
        assert union.max() == 1  # cells do not overlap
    assert not list(out.parent.glob(".*.tmp"))
    assert {p.name for p in out.parent.iterdir()} >= {"submission.csv", "submission.image_probs.csv",
                                                        "submission.config.yaml", "submission.log.txt"}
    assert len(list((root / "pics").glob("*.png"))) == 1


def test_cell_stage_beats_broadcast_given_the_true_image_labels(pipeline):
    root, test, _ = pipeline
    pred = root / "out" / "true_labels.csv"
    run(*stage_command("inference", *scored_set_options(test), "--out", pred,
                       f"oracle_image_labels={test / 'labels.csv'}", "visualise=0", config=root / "inference.yaml"))
    cell_stage = evaluate_files(test / "truth.csv", pred).mean_average_precision
    broadcast = broadcast_score(root, test, ["--labels", str(test / "labels.csv")], "broadcast_true_labels")
    print(f"true image labels: cell stage mAP {cell_stage:.4f}  broadcast mAP {broadcast:.4f}")
    assert cell_stage > broadcast + 0.02


def test_tuned_pipeline_stays_within_noise_of_broadcast_on_private(pipeline):
    root, test, out = pipeline
    probs = out.with_name("submission.image_probs.csv")
    broadcast = broadcast_score(root, test, ["--probs", str(probs)], "broadcast")
    pipeline_map = evaluate_files(test / "truth.csv", out).mean_average_precision
    print(f"private: pipeline mAP {pipeline_map:.4f}  broadcast mAP {broadcast:.4f}")
    assert pipeline_map > 0.95 * broadcast


def test_shards_merge_to_the_whole(pipeline):
    root, test, out = pipeline
    config = root / "inference.yaml"
    parts = []
    for index in range(2):
        part = root / "shards" / f"part{index}.csv"
        run(*stage_command("inference", *scored_set_options(test), "--out", part, "--shard", f"{index}/2",
                           "write_image_probs=false", config=config))
        parts.append(str(part))
    merged = root / "shards" / "merged.csv"
    run(*stage_command("inference", "merge", "--sample", test / "sample_submission.csv", "--out", merged, *parts))
    pd.testing.assert_frame_equal(read_submission(merged), read_submission(out))


def test_bad_and_empty_images_are_skipped_with_an_empty_prediction(pipeline, tmp_path):
    root, test, out = pipeline
    images = tmp_path / "images"
    images.mkdir()
    sample = read_submission(test / "sample_submission.csv").head(3).copy()
    for path in (test / "images").iterdir():
        if path.name.split("_")[0] in set(sample["ID"]):
            (images / path.name).symlink_to(path)
    bad, blank = sample["ID"].iloc[0], "blank-image"
    (images / f"{bad}_green.png").unlink()
    (images / f"{bad}_green.png").write_bytes(b"")  # a zero-byte channel file
    for channel in ("red", "green", "blue", "yellow"):
        cv2.imwrite(str(images / f"{blank}_{channel}.png"), np.zeros((256, 256), np.uint16))
    sample.loc[len(sample)] = [blank, 256, 256, ""]
    sample.to_csv(tmp_path / "sample.csv", index=False)
    sub_path = tmp_path / "sub.csv"
    args = tuple(stage_command("inference", "--images", images, "--sample", tmp_path / "sample.csv", "--out", sub_path,
                               config=root / "inference.yaml"))
    run(*args)
    sub = read_submission(sub_path).set_index("ID")
    assert sub.loc[bad, "PredictionString"] == "" and sub.loc[blank, "PredictionString"] == ""
    assert all(sub.loc[i, "PredictionString"] for i in sample["ID"].iloc[1:3])
    log = (tmp_path / "sub.log.txt").read_text()
    assert f"{bad}_green.png: zero-byte" in log and "blank-image: no cells found" in log

    failed = subprocess.run([PY, *args[:-1], str(tmp_path / "fail.csv"), "on_bad_image=fail"], cwd=REPO,
                            capture_output=True, text=True)
    assert failed.returncode != 0 and "zero-byte" in failed.stderr
    assert not (tmp_path / "fail.csv").exists()
