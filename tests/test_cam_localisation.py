"""The CAM localisation measurement: per-cell means, truth matching, AUC pools, and a tiny real run."""

from pathlib import Path

import numpy as np
import pytest
import torch

from hpacam.cam.localisation import (
    CellScores,
    cell_label_matrix,
    format_result,
    localisation_auc,
    mean_per_cell,
    score_cells,
)
from hpacam.classes import NUM_CLASSES
from hpacam.masks import encode_label_image

REPO = Path(__file__).resolve().parents[1]


def test_mean_per_cell_averages_each_map_inside_each_cell():
    cells = np.array([[0, 1, 1], [2, 2, 0]])
    maps = np.stack([np.array([[9.0, 1.0, 3.0], [4.0, 6.0, 9.0]]), np.ones((2, 3))])
    means = mean_per_cell(maps, cells)
    assert means.shape == (3, 2)
    assert means[1].tolist() == [2.0, 1.0] and means[2].tolist() == [5.0, 1.0]


def test_truth_masks_are_matched_to_cell_ids():
    cells = np.zeros((6, 6), dtype=np.int64)
    cells[:3, :3] = 1
    cells[3:, 2:] = 2
    masks = encode_label_image(cells)
    labels = cell_label_matrix(cells, {masks[1]: [0, 16], masks[2]: [5]}, "test")
    assert np.flatnonzero(labels[1]).tolist() == [0, 16] and np.flatnonzero(labels[2]).tolist() == [5]
    other = np.zeros_like(cells)
    other[0, 0] = 1
    with pytest.raises(ValueError, match="matches no cell"):
        cell_label_matrix(cells, {encode_label_image(other)[1]: [0]}, "test")


def image_scores(image_id, cell_labels, scores):
    labels = np.zeros((len(cell_labels), NUM_CLASSES), dtype=np.float32)
    for row, classes in enumerate(cell_labels):
        labels[row, classes] = 1
    values = np.zeros_like(labels)
    values[:, 0] = scores
    return CellScores(image_id, labels.max(axis=0), labels, values)


def test_auc_pools_within_labelled_images_and_over_all_cells():
    scores = [
        image_scores("a", [[0], [0], [16]], [0.9, 0.8, 0.5]),  # class 0 cells score above the other cell
        image_scores("b", [[16], [16]], [0.95, 0.1]),  # no class 0: only in the "all" pool
    ]
    result = localisation_auc(scores)
    assert result.within[0] == 1.0
    assert result.all[0] == pytest.approx(4 / 6)  # the 0.95 cell of image b outranks both positives
    assert result.within[16] == 0.5  # class-16 maps are flat: no better than chance
    assert result.n_images == 2 and result.n_cells == 5


def test_an_untrained_model_scores_every_truth_cell(tmp_path):
    from hpacam.cam.models import create_model
    from hpacam.labels import read_labels
    from hpacam.synth import generate_dataset

    generate_dataset(tmp_path / "synth", 3, 256, seed=5, progress=False)
    ids = read_labels(tmp_path / "synth" / "labels.csv")["ID"].tolist()
    torch.manual_seed(0)
    model = create_model("resnet10t", output_stride=8, channels=(8, 16, 32, 64), stem_width=8)
    scores = score_cells(model, tmp_path / "synth", ids, image_size=64)
    assert [s.image_id for s in scores] == ids
    for s in scores:
        assert s.scores.shape == s.cell_labels.shape and len(s.cell_labels) >= 5
        assert (s.cell_labels.sum(axis=1) >= 1).all()  # every truth cell has a label (18 = negative)
        assert np.isfinite(s.scores).all()


def test_a_short_puzzle_cam_run_localises_cells(tmp_path):
    """The fast version of bench/cam_localisation.py, with a weaker bar.

    160 synthetic 128 px images, 10 epochs of the tiny recipe at 128 px (about half a minute on
    two idle cores), scored on 30 held-out images. Measured: mean ROC-AUC 0.78 over all cells and
    0.70 within labelled images (an untrained model scores ~0.5); the asserts leave a margin. The
    full benchmark (600 images at 256 px, 30 epochs) reaches the issue's 0.8, see docs/cam.md.
    """
    from hpacam.cam.checkpoint import load_cam_model
    from hpacam.cam.config import TrainCamConfig
    from hpacam.cam.train import train
    from hpacam.config import load_config
    from hpacam.labels import read_labels
    from hpacam.synth import generate_dataset

    generate_dataset(tmp_path / "train", 160, 128, seed=11, workers=2, progress=False)
    generate_dataset(tmp_path / "test", 30, 128, seed=12, progress=False)
    cfg = load_config(TrainCamConfig, REPO / "configs" / "cam" / "tiny_cpu.yaml", [
        f"run_dir={tmp_path / 'run'}",
        f"data.sources=[{{images: {tmp_path / 'train' / 'images'}, labels: {tmp_path / 'train' / 'labels.csv'}}}]",
        "data.image_size=128", "data.fold=-1", "train.epochs=10", "train.progress=false",
    ])
    model = load_cam_model(train(cfg).last_checkpoint)
    ids = read_labels(tmp_path / "test" / "labels.csv")["ID"].tolist()
    result = localisation_auc(score_cells(model, tmp_path / "test", ids, image_size=128))
    assert len(result.all) >= 10
    assert result.mean_all >= 0.70, format_result(result)
    assert result.mean_within >= 0.62, format_result(result)
    assert result.all[0] >= 0.8 and result.all[16] >= 0.8, format_result(result)  # nucleoplasm, cytosol
