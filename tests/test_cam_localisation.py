"""The CAM localisation measurement: per-cell means, truth matching, AUC pools, and a tiny real run."""

import numpy as np
import pytest
import torch

from hpacam.cam.localisation import (
    CellScores,
    cell_label_matrix,
    localisation_auc,
    mean_per_cell,
    score_cells,
)
from hpacam.classes import NUM_CLASSES
from hpacam.masks import encode_label_image


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
