"""The local competition metric and the reference predictors, on tiny hand-made cases.

Images are 8x8; cells are boxes, so every IoU can be counted by hand.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from pycocotools import mask as coco_mask

from hpacam.baselines import (
    broadcast,
    cell_oracle,
    image_probs_from_labels_csv,
    image_probs_from_probability_csv,
    masks_from_cell_images,
    masks_from_truth,
    oracle,
)
from hpacam.baselines import main as baselines_main
from hpacam.evaluate import (
    average_precision,
    evaluate_files,
    evaluate_frames,
    first_bad_rle,
    rle_run_lengths,
)
from hpacam.masks import encode_mask, mask_to_rle
from hpacam.submission import make_submission_frame, write_submission

H = W = 8


def box(y0: int, y1: int, x0: int = 0, x1: int = W) -> str:
    """Mask string of rows y0:y1, columns x0:x1 of an 8x8 image."""
    mask = np.zeros((H, W), dtype=bool)
    mask[y0:y1, x0:x1] = True
    return encode_mask(mask)


# Three disjoint cells (16 pixels each) and two background patches that overlap no cell.
CELL_A, CELL_B, CELL_C = box(0, 2), box(2, 4), box(4, 6)
EMPTY_LEFT, EMPTY_RIGHT = box(6, 8, 0, 4), box(6, 8, 4, 8)


def row(image_id: str, triples: list[tuple[int, float, str]]) -> tuple[str, int, int, str]:
    return image_id, W, H, " ".join(f"{label} {conf} {mask}" for label, conf, mask in triples)


def frame(*rows: tuple[str, int, int, str]) -> pd.DataFrame:
    return make_submission_frame(rows)


def score(truth: pd.DataFrame, pred: pd.DataFrame, **kwargs) -> float:
    return evaluate_frames(truth, pred, **kwargs).mean_average_precision


def class_ap(truth: pd.DataFrame, pred: pd.DataFrame, label: int) -> float:
    return evaluate_frames(truth, pred).classes[label].average_precision


TRUTH_ABC = frame(row("img", [(0, 1, CELL_A), (0, 1, CELL_B), (0, 1, CELL_C)]))


# ----------------------------------------------------------------------------- the metric by hand

def test_perfect_prediction_scores_one():
    pred = frame(row("img", [(0, 0.3, CELL_A), (0, 0.9, CELL_B), (0, 0.5, CELL_C)]))
    assert score(TRUTH_ABC, pred) == 1.0


def test_known_sequence_of_hits_and_misses():
    # Ranked: TP(0.9) FP(0.8) TP(0.7) FP(0.6); cell C is never found; 3 truth cells.
    # precision 1/1, 1/2, 2/3, 2/4   recall 1/3, 1/3, 2/3, 2/3
    # non-increasing from the right: 1, 2/3, 2/3, 1/2
    # AP = (1/3 - 0) * 1 + (2/3 - 1/3) * 2/3 = 1/3 + 2/9 = 5/9
    pred = frame(row("img", [(0, 0.9, CELL_A), (0, 0.8, EMPTY_LEFT), (0, 0.7, CELL_B), (0, 0.6, EMPTY_RIGHT)]))
    assert score(TRUTH_ABC, pred) == pytest.approx(5 / 9)


def test_a_miss_ranked_first_costs_precision_everywhere():
    # FP(0.9) TP(0.8) TP(0.7) TP(0.6): precision 0, 1/2, 2/3, 3/4 at recall 0, 1/3, 2/3, 1
    # AP = 1/3 * 3/4 * 3 = 3/4 (every step takes the best precision to its right, 3/4)
    pred = frame(row("img", [(0, 0.9, EMPTY_LEFT), (0, 0.8, CELL_A), (0, 0.7, CELL_B), (0, 0.6, CELL_C)]))
    assert score(TRUTH_ABC, pred) == pytest.approx(3 / 4)


def subset_mask(cell_rows: tuple[int, int], n_pixels: int) -> str:
    """The first n_pixels (row-major) of a cell of whole rows: IoU with the cell = n / cell size."""
    mask = np.zeros(H * W, dtype=bool)
    mask[cell_rows[0] * W: cell_rows[0] * W + n_pixels] = True
    return encode_mask(mask.reshape(H, W))


@pytest.mark.parametrize("n_pixels, matched", [(24, True), (25, True), (23, False), (40, True)])
def test_iou_threshold_is_inclusive_at_point_six(n_pixels, matched):
    # A 40-pixel cell (rows 0-4); a prediction of its first n pixels has IoU n/40:
    # 24 -> 0.6 exactly (a match, as in Open Images: >=), 25 -> 0.625, 23 -> 0.575 (a miss).
    truth = frame(row("img", [(0, 1, box(0, 5))]))
    pred = frame(row("img", [(0, 1, subset_mask((0, 5), n_pixels))]))
    assert score(truth, pred) == (1.0 if matched else 0.0)


def test_iou_threshold_option():
    truth = frame(row("img", [(0, 1, box(0, 5))]))
    pred = frame(row("img", [(0, 1, subset_mask((0, 5), 20))]))  # IoU 0.5
    assert score(truth, pred) == 0.0
    assert score(truth, pred, iou_threshold=0.5) == 1.0


def test_duplicates_are_false_positives():
    # A(0.9) TP, A again (0.8) duplicate -> FP, B(0.7) TP; 2 truth cells.
    # precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1 -> AP = 1/2 * 1 + 1/2 * 2/3 = 5/6
    truth = frame(row("img", [(0, 1, CELL_A), (0, 1, CELL_B)]))
    pred = frame(row("img", [(0, 0.9, CELL_A), (0, 0.8, CELL_A), (0, 0.7, CELL_B)]))
    assert score(truth, pred) == pytest.approx(5 / 6)


def test_classes_without_truth_are_left_out_of_the_mean():
    truth = frame(row("img", [(0, 1, CELL_A), (3, 1, CELL_B)]))
    pred = frame(row("img", [(0, 1, CELL_A), (3, 1, CELL_B), (5, 0.9, CELL_A), (7, 0.9, CELL_C)]))
    result = evaluate_frames(truth, pred)
    assert result.mean_average_precision == 1.0
    assert np.isnan(result.classes[5].average_precision) and result.classes[5].n_predictions == 1
    assert result.to_dict()["classes"][5]["ap"] is None


def test_class_with_truth_but_no_prediction_scores_zero():
    truth = frame(row("img", [(0, 1, CELL_A), (3, 1, CELL_B)]))
    pred = frame(row("img", [(0, 1, CELL_A)]))
    assert score(truth, pred) == 0.5  # mean of AP 1 (class 0) and AP 0 (class 3)


def test_right_mask_wrong_class_scores_nothing():
    truth = frame(row("img", [(0, 1, CELL_A)]))
    pred = frame(row("img", [(1, 1, CELL_A)]))
    result = evaluate_frames(truth, pred)
    assert result.classes[0].average_precision == 0.0
    assert result.mean_average_precision == 0.0  # class 1 has no truth and does not count


def test_two_images_are_ranked_together_but_matched_separately():
    # Image 1 has cell A, image 2 cell B (class 0). Image 2 also gets a prediction shaped like A:
    # it overlaps nothing in image 2, so it is a miss there, though A exists in image 1.
    # Ranked: FP(0.9, img2) TP(0.5, img1) TP(0.3, img2): precision 0, 1/2, 2/3 at recall 0, 1/2, 1
    # -> AP = 1/2 * 2/3 + 1/2 * 2/3 = 2/3
    truth = frame(row("img1", [(0, 1, CELL_A)]), row("img2", [(0, 1, CELL_B)]))
    pred = frame(row("img1", [(0, 0.5, CELL_A)]), row("img2", [(0, 0.9, CELL_A), (0, 0.3, CELL_B)]))
    assert score(truth, pred) == pytest.approx(2 / 3)


def test_tied_confidences_do_not_depend_on_row_order():
    # Cells A (class 0) and B (class 1) both predicted as class 0 at one confidence, as `broadcast`
    # does. At the end of the tie group: 1 TP of 2 -> precision 1/2 at recall 1 -> AP 1/2, in
    # either order (a plain argsort would give 1.0 with A first and 0.5 with B first).
    truth = frame(row("img", [(0, 1, CELL_A), (1, 1, CELL_B)]))
    for order in ([CELL_A, CELL_B], [CELL_B, CELL_A]):
        pred = frame(row("img", [(0, 0.7, mask) for mask in order]))
        assert class_ap(truth, pred, 0) == pytest.approx(0.5)


def test_score_is_invariant_to_permuting_triples_and_rows():
    rng = np.random.default_rng(0)
    truth_rows, pred_triples = [], {}
    for image in range(3):
        labels = rng.integers(0, 4, size=3)
        truth_rows.append(row(f"img{image}", [(int(l), 1, m) for l, m in zip(labels, (CELL_A, CELL_B, CELL_C))]))
        masks = (CELL_A, CELL_B, CELL_C, EMPTY_LEFT)
        # coarse confidences so that ties across images and cells are common
        pred_triples[f"img{image}"] = [(label, float(rng.choice([0.2, 0.5, 0.9])), mask)
                                       for mask in masks for label in range(4) if rng.random() < 0.6]
    truth = frame(*truth_rows)
    reference = score(truth, frame(*(row(i, t) for i, t in pred_triples.items())))
    for _ in range(10):
        ids = list(pred_triples)
        rng.shuffle(ids)
        shuffled = [row(i, [pred_triples[i][k] for k in rng.permutation(len(pred_triples[i]))]) for i in ids]
        assert score(truth, frame(*shuffled)) == reference


def reference_open_images_ap(scores: np.ndarray, tp: np.ndarray, n_truth: int) -> float:
    """Open Images' compute_average_precision, written out with explicit padding and loops."""
    order = np.argsort(-scores, kind="stable")
    tp_sorted = tp[order].astype(float)
    cum_tp = np.cumsum(tp_sorted)
    precision = cum_tp / np.arange(1, len(tp) + 1)
    recall = cum_tp / n_truth
    recall = np.concatenate([[0], recall, [1]])
    precision = np.concatenate([[0], precision, [0]])
    for i in range(len(precision) - 2, -1, -1):
        precision[i] = max(precision[i], precision[i + 1])
    steps = np.where(recall[1:] != recall[:-1])[0] + 1
    return float(np.sum((recall[steps] - recall[steps - 1]) * precision[steps]))


def test_average_precision_matches_open_images_without_ties():
    rng = np.random.default_rng(1)
    for _ in range(200):
        n = int(rng.integers(1, 40))
        scores = rng.permutation(n) / n  # distinct
        tp = rng.random(n) < 0.5
        n_truth = int(tp.sum() + rng.integers(0, 5)) or 1
        assert average_precision(scores, tp, n_truth) == pytest.approx(reference_open_images_ap(scores, tp, n_truth))


def test_truth_against_itself_scores_one():
    truth = frame(row("img1", [(0, 1, CELL_A), (16, 1, CELL_A), (2, 1, CELL_B)]),
                  row("img2", [(18, 1, CELL_C), (0, 1, EMPTY_LEFT)]))
    assert score(truth, truth) == 1.0


def test_repeated_truth_triple_counts_once():
    truth = frame(row("img", [(0, 1, CELL_A), (0, 1, CELL_A)]))
    result = evaluate_frames(truth, frame(row("img", [(0, 1, CELL_A)])))
    assert result.classes[0].n_truth == 1 and result.mean_average_precision == 1.0


# ----------------------------------------------------------------------------- input problems

def test_truth_image_without_prediction_row_warns_and_counts_as_missed():
    truth = frame(row("img1", [(0, 1, CELL_A)]), row("img2", [(0, 1, CELL_B)]))
    pred = frame(row("img1", [(0, 1, CELL_A)]))
    with pytest.warns(UserWarning, match="img2"):
        result = evaluate_frames(truth, pred)
    assert result.mean_average_precision == 0.5 and result.missing_ids == ("img2",)


def test_prediction_for_unknown_id_is_an_error():
    pred = frame(row("img", [(0, 1, CELL_A)]), row("stranger", []))
    with pytest.raises(ValueError, match="stranger"):
        evaluate_frames(TRUTH_ABC, pred, pred_name="p.csv")


def test_image_sizes_must_agree():
    pred = make_submission_frame([("img", 16, 8, f"0 1 {CELL_A}")])
    with pytest.raises(ValueError, match=r"p\.csv: ID img is 16x8"):
        evaluate_frames(TRUTH_ABC, pred, pred_name="p.csv")


@pytest.mark.parametrize("text, message", [
    ("0 1", "not a multiple of 3"),
    ("x 1 abc", "label 'x'"),
    ("0 1 not*base64", "not base64 zlib"),
    (f"0 1 {encode_mask(np.ones((4, 4), dtype=bool))}", "covers 16 pixels"),
])
def test_malformed_predictions_name_file_and_id(text, message):
    pred = make_submission_frame([("img", W, H, text)])
    with pytest.raises(ValueError, match=message) as info:
        evaluate_frames(TRUTH_ABC, pred, pred_name="p.csv")
    assert "p.csv: ID img (line 2)" in str(info.value)


def test_run_length_decoding_agrees_with_pycocotools():
    rng = np.random.default_rng(2)
    for _ in range(30):
        height, width = map(int, rng.integers(1, 60, size=2))
        masks = [rng.random((height, width)) < rng.random() for _ in range(4)]
        masks += [np.zeros((height, width), dtype=bool), np.ones((height, width), dtype=bool)]
        rles = [mask_to_rle(encode_mask(m), height, width) for m in masks]
        runs, owner = rle_run_lengths([rle["counts"] for rle in rles])
        for i, mask in enumerate(masks):
            assert runs[owner == i].sum() == height * width
            assert runs[owner == i][1::2].sum() == mask.sum() == coco_mask.area(rles[i])


def test_mask_checks_find_the_bad_mask_among_good_ones():
    good = mask_to_rle(CELL_A, H, W)
    broken = {"size": [H, W], "counts": b"\x7f"}
    assert first_bad_rle([good, good], H, W) is None
    assert first_bad_rle([good, broken], H, W)[0] == 1
    seven_rows = mask_to_rle(encode_mask(np.ones((H - 1, W), dtype=bool)), H, W)
    assert first_bad_rle([good, seven_rows], H, W)[0] == 1


# ----------------------------------------------------------------------------- baselines

def test_oracle_scores_one():
    truth = frame(row("img1", [(0, 1, CELL_A), (16, 1, CELL_A), (2, 1, CELL_B)]), row("img2", [(18, 1, CELL_C)]))
    prediction = oracle(truth)
    assert score(truth, prediction) == 1.0
    assert set(prediction["PredictionString"].str.split().str[1::3].sum()) == {"1"}


def test_broadcast_with_true_labels_is_perfect_when_every_cell_has_all_image_labels():
    truth = frame(row("img1", [(0, 1, CELL_A), (16, 1, CELL_A), (0, 1, CELL_B), (16, 1, CELL_B)]),
                  row("img2", [(3, 1, CELL_C)]))
    masks_by_id, sizes = masks_from_truth(truth)
    image_probs = {"img1": one_hot([0, 16]), "img2": one_hot([3])}
    assert score(truth, broadcast(masks_by_id, image_probs, sizes)) == 1.0


def test_broadcast_with_true_labels_falls_short_when_cells_differ():
    # Image labels {0, 16}, but cell A is only 0 and cell B only 16: each class gets one TP and
    # one FP in a single tie group -> AP 1/2 for both -> mAP 1/2.
    truth = frame(row("img", [(0, 1, CELL_A), (16, 1, CELL_B)]))
    masks_by_id, sizes = masks_from_truth(truth)
    prediction = broadcast(masks_by_id, {"img": one_hot([0, 16])}, sizes)
    assert len(prediction["PredictionString"].iat[0].split()) == 3 * 4  # zero-confidence triples dropped
    assert score(truth, prediction) == pytest.approx(0.5)


def one_hot(labels: list[int]) -> np.ndarray:
    probabilities = np.zeros(19)
    probabilities[labels] = 1
    return probabilities


def test_cell_oracle_ranks_cells_perfectly_inside_images_but_keeps_the_image_probabilities():
    # img1 carries 0 (cell A only) and 16 (cell B only); img2 carries 3. The models give img2 a
    # higher class-0 probability than img1, a mistake no within-image ranking can undo.
    truth = frame(row("img1", [(0, 1, CELL_A), (16, 1, CELL_B)]), row("img2", [(3, 1, CELL_C)]))
    probs = {"img1": 0.5 * one_hot([0, 16]), "img2": 0.9 * one_hot([0, 3])}
    masks_by_id, sizes = masks_from_truth(truth)
    ceiling = cell_oracle(truth, probs)
    kept = {image: parse_triples(text) for image, text in zip(ceiling["ID"], ceiling["PredictionString"])}
    assert kept["img1"] == {(0, CELL_A), (16, CELL_B)}  # the image's classes go only to their cells
    assert kept["img2"] == {(0, CELL_C), (3, CELL_C)}  # a class the image lacks stays on every cell
    assert score(truth, ceiling) == pytest.approx((0.5 + 1 + 1) / 3)  # class 0: the img2 FP ranks first
    assert score(truth, ceiling) > score(truth, broadcast(masks_by_id, probs, sizes))
    assert score(truth, cell_oracle(truth, {"img1": one_hot([0, 16]), "img2": one_hot([3])})) == 1.0


def parse_triples(text: str) -> set[tuple[int, str]]:
    parts = text.split()
    return {(int(parts[i]), parts[i + 2]) for i in range(0, len(parts), 3)}


def test_broadcast_needs_probabilities_for_every_image():
    masks_by_id, sizes = masks_from_truth(TRUTH_ABC)
    with pytest.raises(ValueError, match="img"):
        broadcast(masks_by_id, {}, sizes)


def test_image_probabilities_from_label_and_probability_csvs(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("ID,Label\na,8|5|0\nb,18\n")
    probs = image_probs_from_labels_csv(labels)
    assert np.flatnonzero(probs["a"]).tolist() == [0, 5, 8] and np.flatnonzero(probs["b"]).tolist() == [18]
    labels.write_text("ID,Label\na,8|19\n")
    with pytest.raises(ValueError, match=r"labels\.csv: ID a \(line 2\)"):
        image_probs_from_labels_csv(labels)
    table = tmp_path / "probs.csv"
    pd.DataFrame([["a", *np.linspace(0, 1, 19)]], columns=["ID", *map(str, range(19))]).to_csv(table, index=False)
    assert image_probs_from_probability_csv(table)["a"] == pytest.approx(np.linspace(0, 1, 19))


def test_broadcast_from_cell_label_images(tmp_path):
    labels = np.zeros((H, W), dtype=np.uint16)
    labels[0:2] = 1
    labels[2:4] = 300  # 16-bit ids must survive reading
    (tmp_path / "cells").mkdir()
    assert cv2.imwrite(str(tmp_path / "cells" / "img.png"), labels)
    masks_by_id = masks_from_cell_images(tmp_path / "cells", {"img": (W, H)})
    assert masks_by_id == {"img": {1: CELL_A, 300: CELL_B}}
    with pytest.raises(ValueError, match=r"img\.png: cell image is 8x8"):
        masks_from_cell_images(tmp_path / "cells", {"img": (W, 2 * H)})


def test_baselines_cli(tmp_path):
    truth = frame(row("img", [(0, 1, CELL_A), (16, 1, CELL_B)]))
    write_submission(truth, tmp_path / "truth.csv")
    (tmp_path / "labels.csv").write_text("ID,Label\nimg,0|16\nother,1\n")
    assert baselines_main(["oracle", "--truth", str(tmp_path / "truth.csv"), "--out", str(tmp_path / "o.csv")]) == 0
    assert evaluate_files(tmp_path / "truth.csv", tmp_path / "o.csv").mean_average_precision == 1.0
    assert baselines_main(["broadcast", "--truth", str(tmp_path / "truth.csv"), "--labels",
                           str(tmp_path / "labels.csv"), "--out", str(tmp_path / "b.csv")]) == 0
    assert evaluate_files(tmp_path / "truth.csv", tmp_path / "b.csv").mean_average_precision == pytest.approx(0.5)
    pd.DataFrame([["img", *one_hot([0, 16])]], columns=["ID", *map(str, range(19))]).to_csv(tmp_path / "p.csv", index=False)
    assert baselines_main(["cell-oracle", "--truth", str(tmp_path / "truth.csv"), "--probs", str(tmp_path / "p.csv"),
                           "--out", str(tmp_path / "c.csv")]) == 0
    assert evaluate_files(tmp_path / "truth.csv", tmp_path / "c.csv").mean_average_precision == 1.0


def test_baselines_cli_error_names_the_labels_file(tmp_path, capsys):
    write_submission(frame(row("img", [(0, 1, CELL_A)])), tmp_path / "truth.csv")
    (tmp_path / "labels.csv").write_text("ID,Label\nother,1\n")
    status = baselines_main(["broadcast", "--truth", str(tmp_path / "truth.csv"), "--labels",
                             str(tmp_path / "labels.csv"), "--out", str(tmp_path / "b.csv")])
    assert status == 1 and "labels.csv" in capsys.readouterr().err
    assert not (tmp_path / "b.csv").exists()


# ----------------------------------------------------------------------------- evaluate CLI

def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hpacam.evaluate", *args], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1], timeout=60)


def test_cli_prints_map_last_and_writes_json(tmp_path):
    write_submission(TRUTH_ABC, tmp_path / "truth.csv")
    pred = frame(row("img", [(0, 0.9, CELL_A), (0, 0.8, EMPTY_LEFT), (0, 0.7, CELL_B), (0, 0.6, EMPTY_RIGHT)]))
    write_submission(pred, tmp_path / "pred.csv")
    done = run_cli("--truth", str(tmp_path / "truth.csv"), "--pred", str(tmp_path / "pred.csv"),
                   "--json", str(tmp_path / "out.json"))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "mAP: 0.555556"
    report = json.loads((tmp_path / "out.json").read_text())
    assert report["mAP"] == pytest.approx(5 / 9) and report["classes"][0]["n_predictions"] == 4


def test_cli_bad_file_is_one_line_error_naming_it(tmp_path):
    write_submission(TRUTH_ABC, tmp_path / "truth.csv")
    (tmp_path / "broken.csv").write_text("ID,Width\nimg,8\n")
    done = run_cli("--truth", str(tmp_path / "truth.csv"), "--pred", str(tmp_path / "broken.csv"))
    assert done.returncode != 0
    assert "broken.csv" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    missing = run_cli("--truth", str(tmp_path / "nowhere.csv"), "--pred", str(tmp_path / "broken.csv"))
    assert missing.returncode != 0 and "nowhere.csv" in missing.stderr


def test_a_zlib_bomb_in_one_mask_is_refused_without_expanding_it(tmp_path):
    """Under 100 KB of base64 zlib that inflates to 100 MB: refused after at most 2 x 8 x 8 + 64 bytes."""
    import base64
    import resource
    import zlib

    packer, chunk = zlib.compressobj(9), b"1" * (1 << 20)  # streamed: 100 MB never held at once
    bomb = base64.b64encode(b"".join([*(packer.compress(chunk) for _ in range(100)), packer.flush()])).decode()
    assert len(bomb) < 200_000
    write_submission(TRUTH_ABC, tmp_path / "truth.csv")
    write_submission(frame(row("img", [(0, 0.9, CELL_A), (0, 0.8, bomb)])), tmp_path / "bomb.csv")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ValueError, match=r"bomb.csv: ID img \(line 2\): triple 1: mask .* decompresses to more than 192 bytes"):
        evaluate_files(tmp_path / "truth.csv", tmp_path / "bomb.csv")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50 << 10  # KB: no 100 MB expansion
