"""Matching report: one-to-one IoU matches, splits, merges and missed cells on hand-made labels."""

import cv2
import numpy as np
import pytest

from hpacam.segmentation.quality import compare_folders, contingency, match_labels, one_to_one, summarise


def blocks(shape, boxes):
    labels = np.zeros(shape, np.int32)
    for label, (y0, y1, x0, x1) in boxes.items():
        labels[y0:y1, x0:x1] = label
    return labels


def test_identical_labels_match_fully_whatever_the_numbering():
    truth = blocks((40, 60), {1: (0, 20, 0, 20), 2: (0, 20, 30, 50), 5: (25, 40, 5, 55)})
    pred = np.choose(truth, [0, 7, 3, 0, 0, 1]).astype(np.int32)  # renumbered: 1->7, 2->3, 5->1
    match = match_labels(truth, pred)
    assert (match.n_truth, match.n_pred, match.matched) == (3, 3, 3)
    assert match.iou_sum == pytest.approx(3.0)
    assert (match.splits, match.merges, match.missed) == (0, 0, 0)
    assert {(t, p) for t, p, _ in match.matched_pairs} == {(1, 7), (2, 3), (5, 1)}


def test_iou_threshold_is_inclusive_at_0_6():
    truth = blocks((10, 10), {1: (0, 10, 0, 6)})  # 60 pixels
    pred = blocks((10, 10), {1: (0, 10, 0, 10)})  # 100 pixels: IoU exactly 0.6
    assert match_labels(truth, pred).matched == 1
    assert match_labels(truth, pred, threshold=0.61).matched == 0


def test_split_truth_cell():
    truth = blocks((20, 40), {1: (0, 20, 0, 40)})
    pred = blocks((20, 40), {1: (0, 20, 0, 20), 2: (0, 20, 20, 40)})  # two halves, IoU 0.5 each
    match = match_labels(truth, pred)
    assert (match.matched, match.splits, match.merges, match.missed) == (0, 1, 0, 0)


def test_merged_truth_cells():
    truth = blocks((20, 40), {1: (0, 20, 0, 20), 2: (0, 20, 20, 40)})
    pred = blocks((20, 40), {1: (0, 20, 0, 40)})
    match = match_labels(truth, pred)
    assert (match.matched, match.splits, match.merges, match.missed) == (0, 0, 1, 0)


def test_a_crumb_is_not_a_split_and_a_missed_cell_is_counted():
    truth = blocks((20, 60), {1: (0, 20, 0, 30), 2: (0, 20, 40, 60)})
    pred = blocks((20, 60), {1: (0, 20, 0, 28), 2: (0, 2, 28, 30)})  # cell 1 + a crumb at its edge; 2 missed
    match = match_labels(truth, pred)
    assert match.matched == 1 and match.missed == 1 and match.splits == 0


def test_a_cell_in_three_pieces_is_one_split_and_a_small_merged_cell_counts():
    truth = blocks((30, 30), {1: (0, 30, 0, 30)})
    pred = blocks((30, 30), {1: (0, 10, 0, 30), 2: (10, 20, 0, 30), 3: (20, 30, 0, 30)})
    assert match_labels(truth, pred).splits == 1
    truth = blocks((30, 30), {1: (0, 30, 0, 27), 2: (0, 30, 27, 30)})  # cell 2 is 10% of the merged cell
    assert match_labels(truth, blocks((30, 30), {1: (0, 30, 0, 30)})).merges == 1


def test_one_to_one_matching_below_0_5_picks_the_best_total():
    iou = np.array([[0.45, 0.44], [0.43, 0.0]])
    pairs = one_to_one(iou, threshold=0.4)
    assert {(r, c) for r, c, _ in pairs} == {(0, 1), (1, 0)}  # 0.44 + 0.43 beats 0.45 alone


def test_contingency_is_pixel_counts_of_label_pairs():
    truth = np.array([[0, 1, 1], [2, 2, 0]])
    pred = np.array([[1, 1, 0], [1, 2, 2]])
    table = contingency(truth, pred)
    assert table.tolist() == [[0, 1, 1], [1, 1, 0], [0, 1, 1]]
    with pytest.raises(ValueError, match="shape"):
        contingency(truth, pred[:, :2])


def test_empty_images_and_summary_rates():
    empty = np.zeros((5, 5), np.int32)
    match = match_labels(empty, empty)
    assert (match.n_truth, match.n_pred, match.matched) == (0, 0, 0)
    truth = blocks((10, 10), {1: (0, 5, 0, 5), 2: (5, 10, 5, 10)})
    report = summarise([match, match_labels(truth, blocks((10, 10), {1: (0, 5, 0, 5)}))])
    assert report.n_images == 2 and report.recall == 0.5 and report.precision == 1.0 and report.mean_iou == 1.0


def test_compare_folders_reads_16_bit_label_pngs(tmp_path):
    (tmp_path / "truth").mkdir()
    (tmp_path / "pred").mkdir()
    truth = blocks((30, 30), {1: (0, 10, 0, 10), 300: (15, 30, 15, 30)})
    cv2.imwrite(str(tmp_path / "truth" / "x.png"), truth.astype(np.uint16))
    cv2.imwrite(str(tmp_path / "pred" / "x.png"), truth.astype(np.uint16))
    report = compare_folders(tmp_path / "truth", tmp_path / "pred")
    assert report.matched == 2 and report.recall == 1.0
    (tmp_path / "pred" / "x.png").unlink()
    with pytest.raises(FileNotFoundError, match="x.png"):
        compare_folders(tmp_path / "truth", tmp_path / "pred")
