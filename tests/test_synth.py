"""The synthetic HPA generator: determinism, truth consistency, realism properties, patterns."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from hpacam.classes import CHANNELS, MITOTIC_SPINDLE, NEGATIVE
from hpacam.masks import decode_mask
from hpacam.submission import parse_prediction_string, read_submission
from hpacam.synth import generate_dataset, load_label_stats, render_image
from hpacam.synth.__main__ import main as cli_main

SIZE = 320
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-11e[89]-[0-9a-f]{4}-[0-9a-f]{12}$")


def file_hashes(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def read_png(path: Path) -> np.ndarray:
    array = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert array is not None, f"{path} unreadable"
    return array


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "a"
    generate_dataset(out, n_images=3, image_sizes=SIZE, seed=7, progress=False)
    return out


def image_ids(folder: Path) -> list[str]:
    return pd.read_csv(folder / "labels.csv", dtype=str)["ID"].tolist()


def truth_by_image(folder: Path) -> dict[str, list]:
    frame = read_submission(folder / "truth.csv")
    return {row.ID: parse_prediction_string(row.PredictionString) for row in frame.itertuples()}


# ----------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_bytes_with_any_worker_count(dataset, tmp_path):
    again = tmp_path / "b"
    generate_dataset(again, n_images=3, image_sizes=SIZE, seed=7, workers=2, progress=False)
    assert file_hashes(dataset) == file_hashes(again)


def test_different_seed_gives_different_files(dataset, tmp_path):
    other = tmp_path / "c"
    generate_dataset(other, n_images=3, image_sizes=SIZE, seed=8, progress=False)
    assert set(image_ids(other)).isdisjoint(image_ids(dataset))
    first = lambda folder, name: (folder / "images" / f"{image_ids(folder)[0]}_{name}.png").read_bytes()
    assert first(other, "blue") != first(dataset, "blue")


def test_render_image_is_deterministic():
    a, b = render_image(3, 256), render_image(3, 256)
    assert all(np.array_equal(a.channels[c], b.channels[c]) for c in CHANNELS)
    assert np.array_equal(a.cells, b.cells) and a.cell_labels == b.cell_labels


# ----------------------------------------------------------------------------- files and truth


def test_files_have_the_kaggle_layout(dataset):
    ids = image_ids(dataset)
    assert len(ids) == 3 and all(UUID.match(i) for i in ids)
    sample = read_submission(dataset / "sample_submission.csv")
    assert sample["ID"].tolist() == ids
    assert (sample["ImageWidth"] == SIZE).all() and (sample["ImageHeight"] == SIZE).all()
    assert (sample["PredictionString"] == "").all()
    for image_id in ids:
        for name in CHANNELS:
            array = read_png(dataset / "images" / f"{image_id}_{name}.png")
            assert array.dtype == np.uint16 and array.shape == (SIZE, SIZE)
            assert array.max() > 255  # real 16-bit data, not 8-bit values in a 16-bit file
    stats = json.loads((dataset / "stats.json").read_text())
    assert stats["images"] == 3 and stats["cells"] > 0


def test_every_cell_has_exactly_one_nucleus(dataset):
    for image_id in image_ids(dataset):
        cells = read_png(dataset / "cells" / f"{image_id}.png").astype(np.int64)
        nuclei = read_png(dataset / "nuclei" / f"{image_id}.png").astype(np.int64)
        assert cells.dtype == np.int64 and cells.max() >= 1
        ids = np.unique(cells[cells > 0])
        assert np.array_equal(ids, np.arange(1, len(ids) + 1))
        assert np.array_equal(np.unique(nuclei[nuclei > 0]), ids)
        # a nucleus lies inside its own cell, so each cell holds one nucleus and nothing else
        assert np.array_equal(nuclei[nuclei > 0], cells[nuclei > 0])
        for cell, box in enumerate(ndimage.find_objects(cells), start=1):
            inside = nuclei[box][cells[box] == cell]
            assert set(np.unique(inside)) - {0} == {cell}


def test_labels_are_the_union_of_cell_labels_and_masks_decode_to_cells(dataset):
    labels = pd.read_csv(dataset / "labels.csv", dtype=str)
    truth = truth_by_image(dataset)
    for image_id, label_text in zip(labels["ID"], labels["Label"]):
        cells = read_png(dataset / "cells" / f"{image_id}.png")
        predictions = truth[image_id]
        assert {p.label for p in predictions} == {int(x) for x in label_text.split("|")}
        assert all(p.confidence == 1.0 for p in predictions)
        decoded = {}
        for p in predictions:
            if p.mask not in decoded:
                decoded[p.mask] = decode_mask(p.mask, SIZE, SIZE)
        expected = {int(c): cells == c for c in np.unique(cells[cells > 0])}
        assert len(decoded) == len(expected)  # one mask per cell
        for mask in decoded.values():
            cell = int(np.bincount(cells[mask]).argmax())
            assert np.array_equal(mask, expected[cell])


def test_eight_bit_mode_writes_uint8(tmp_path):
    generate_dataset(tmp_path / "d8", n_images=1, image_sizes=256, seed=1, bit_depth=8, progress=False)
    image_id = image_ids(tmp_path / "d8")[0]
    for name in CHANNELS:
        array = read_png(tmp_path / "d8" / "images" / f"{image_id}_{name}.png")
        assert array.dtype == np.uint8 and array.shape == (256, 256)


def test_mixed_sizes_from_a_comma_list(tmp_path, capsys):
    out = tmp_path / "mixed"
    assert cli_main(["--out", str(out), "--n-images", "4", "--image-size", "256,288", "--seed", "5",
                     "--quiet"]) == 0
    assert "cells lacking an image label" in capsys.readouterr().out
    sample = read_submission(out / "sample_submission.csv")
    assert set(sample["ImageWidth"]) <= {256, 288}
    for row in sample.itertuples():
        assert read_png(out / "images" / f"{row.ID}_green.png").shape == (row.ImageHeight, row.ImageWidth)
        assert read_png(out / "cells" / f"{row.ID}.png").shape == (row.ImageHeight, row.ImageWidth)


# ----------------------------------------------------------------------------- realism


def adjacent_pairs(cells: np.ndarray) -> set[tuple[int, int]]:
    """Pairs of different cells that are 8-neighbours somewhere."""
    pairs = set()
    for a, b in ((cells[:, 1:], cells[:, :-1]), (cells[1:, :], cells[:-1, :]),
                 (cells[1:, 1:], cells[:-1, :-1]), (cells[1:, :-1], cells[:-1, 1:])):
        touching = (a != b) & (a > 0) & (b > 0)
        pairs |= {(int(min(x, y)), int(max(x, y))) for x, y in zip(a[touching], b[touching])}
    return pairs


def test_cells_touch_and_are_cut_by_the_border():
    images = [render_image(seed, 384) for seed in range(3)]
    assert sum(len(adjacent_pairs(img.cells)) for img in images) > 0
    for img in images:
        edge = np.concatenate([img.cells[0], img.cells[-1], img.cells[:, 0], img.cells[:, -1]])
        assert set(np.unique(edge[edge > 0])) == set(img.border_cells)
    assert sum(len(img.border_cells) for img in images) > 0
    assert all(8 <= img.n_cells <= 50 for img in images)


def test_multilabel_images_have_cells_lacking_labels():
    lacking = 0
    for seed in range(3):
        img = render_image(seed, 384, label_set=(0, 13, 16))
        carried = {label for labels in img.cell_labels.values() for label in labels}
        assert {0, 13, 16} <= carried  # every image label is on at least one cell
        lacking += sum(not {0, 13, 16} <= set(labels) for labels in img.cell_labels.values())
    assert lacking > 0


def test_mitotic_spindle_only_on_mitotic_cells():
    img = render_image(11, 384, label_set=(MITOTIC_SPINDLE, 16))
    assert img.mitotic_cells
    spindle_cells = {c for c, labels in img.cell_labels.items() if MITOTIC_SPINDLE in labels}
    assert spindle_cells and spindle_cells <= set(img.mitotic_cells)


def test_negative_image_has_only_negative_cells():
    img = render_image(4, 384, label_set=(NEGATIVE,))
    assert img.image_labels == (NEGATIVE,)
    assert all(labels == (NEGATIVE,) for labels in img.cell_labels.values())


# ----------------------------------------------------------------------------- green patterns

PATTERN_SIZE = 512


def green_above_background(img) -> np.ndarray:
    green = img.channels["green"].astype(np.float64)
    return green - np.median(green[img.cells == 0])  # unclipped: noise averages out


def carriers(img, label: int) -> np.ndarray:
    ids = [c for c, labels in img.cell_labels.items() if label in labels]
    return np.isin(img.cells, ids)


def share_in(region: np.ndarray, signal: np.ndarray, cells: np.ndarray) -> float:
    return float(signal[region & cells].sum() / signal[cells].sum())


@pytest.mark.parametrize("label", [0, 2, 3, 4, 5])
def test_nuclear_patterns_lie_in_the_nucleus(label):
    """Most green is in the nucleus, and the nucleus is much brighter than the cytoplasm.

    Dot patterns (3, 5) hold little light in total, so faint cytoplasmic autofluorescence keeps
    their share lower than that of a nucleus-filling pattern.
    """
    img = render_image(20 + label, PATTERN_SIZE, label_set=(label,))
    signal, cells, nuclei = green_above_background(img), carriers(img, label), img.nuclei > 0
    assert share_in(nuclei, signal, cells) > 0.5
    assert signal[nuclei & cells].mean() > 3 * signal[~nuclei & cells].mean()


@pytest.mark.parametrize("label", [6, 7, 10, 14, 16, 17])
def test_cytoplasmic_patterns_lie_in_the_cytoplasm(label):
    img = render_image(40 + label, PATTERN_SIZE, label_set=(label,))
    assert share_in(img.nuclei == 0, green_above_background(img), carriers(img, label)) > 0.75


def test_nuclear_membrane_lies_on_the_nucleus_outline():
    img = render_image(61, PATTERN_SIZE, label_set=(1,))
    nuclei = img.nuclei > 0
    ring = ndimage.binary_dilation(nuclei, iterations=3) & ~ndimage.binary_erosion(nuclei, iterations=3)
    assert share_in(ring, green_above_background(img), carriers(img, 1)) > 0.6


def test_plasma_membrane_lies_at_the_cell_edge():
    img = render_image(63, PATTERN_SIZE, label_set=(13,))
    edge = np.zeros_like(img.cells, dtype=bool)
    for a, b, sl_a, sl_b in ((img.cells[:, 1:], img.cells[:, :-1], np.s_[:, 1:], np.s_[:, :-1]),
                             (img.cells[1:, :], img.cells[:-1, :], np.s_[1:, :], np.s_[:-1, :])):
        edge[sl_a] |= a != b
        edge[sl_b] |= a != b
    near_edge = ndimage.binary_dilation(edge, iterations=3)
    assert share_in(near_edge, green_above_background(img), carriers(img, 13)) > 0.6


def test_negative_cells_show_only_faint_green():
    negative = render_image(65, PATTERN_SIZE, label_set=(NEGATIVE,))
    signal = green_above_background(negative)[negative.cells > 0]
    assert signal.mean() < 0.03 * 65535


# ----------------------------------------------------------------------------- arguments


@pytest.mark.parametrize("size", [0, -5, 10])
def test_bad_sizes_are_refused(size):
    with pytest.raises(ValueError, match="size"):
        render_image(0, size)


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(ValueError, match="n_images"):
        generate_dataset(tmp_path / "x", n_images=0, image_sizes=256, seed=0)
    with pytest.raises(ValueError, match="bit depth"):
        render_image(0, 256, bit_depth=12)
    with pytest.raises(ValueError, match="Negative"):
        render_image(0, 256, label_set=(NEGATIVE, 0))
    with pytest.raises(ValueError, match="outside"):
        render_image(0, 256, label_set=(19,))
    with pytest.raises(SystemExit):
        cli_main(["--out", str(tmp_path / "y"), "--n-images", "1", "--image-size", "256,-3", "--seed", "0"])


def test_existing_dataset_is_not_mixed_into(dataset):
    with pytest.raises(FileExistsError):
        generate_dataset(dataset, n_images=1, image_sizes=256, seed=0, progress=False)


def test_label_stats_cover_the_kaggle_training_set():
    stats = load_label_stats()
    assert stats["n_images"] == 21806
    assert sum(count for _, count in stats["combinations"]) == 21806
    assert [[NEGATIVE], 34] in stats["combinations"]


def test_stats_file_is_derived_from_a_train_csv(tmp_path):
    from hpacam.synth.stats import main as stats_main

    train = tmp_path / "train.csv"
    train.write_text("ID,Label\na,0|16\nb,16|0\nc,14\nd,3|13|13\n")
    out = tmp_path / "stats.json"
    assert stats_main(["--train", str(train), "--out", str(out)]) == 0
    stats = load_label_stats(out)
    assert stats["combinations"] == [[[0, 16], 2], [[3, 13], 1], [[14], 1]]
    assert stats["label_image_counts"]["16"] == 2 and stats["n_images"] == 4


@pytest.mark.skipif(not Path("/work/shared/hpa-labels/kaggle_train.csv").is_file(), reason="no Kaggle labels here")
def test_committed_stats_file_matches_the_kaggle_labels(tmp_path):
    from hpacam.synth.stats import DEFAULT_STATS_PATH, write_label_stats

    write_label_stats("/work/shared/hpa-labels/kaggle_train.csv", tmp_path / "stats.json")
    assert (tmp_path / "stats.json").read_text() == DEFAULT_STATS_PATH.read_text()
