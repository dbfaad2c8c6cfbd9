"""Label tables (Kaggle and public-HPA formats), multi-hot targets and stratified folds."""

import numpy as np
import pytest

from hpacam.labels import (LabelFileError, combine_label_tables, make_folds, multi_hot, parse_labels,
                           read_labels)

# First rows of the real files in shared/hpa-labels, copied so tests do not need that folder.
KAGGLE = """ID,Label
5c27f04c-bb99-11e8-b2b9-ac1f6b6435d0,8|5|0
5fb643ee-bb99-11e8-b2b9-ac1f6b6435d0,14|0
60b57878-bb99-11e8-b2b9-ac1f6b6435d0,6|1
"""
PUBLIC = """,ID,Cellline,Label,Labels_list
0,1000_E11_2,U-251 MG,18,[18]
26,1001_G1_2,U-2 OS,5|6,"[5, 6]"
"""


def test_kaggle_format(tmp_path):
    path = tmp_path / "train.csv"
    path.write_text(KAGGLE)
    frame = read_labels(path)
    assert frame["labels"].tolist() == [(0, 5, 8), (0, 14), (1, 6)]
    assert frame["Label"].tolist() == ["0|5|8", "0|14", "1|6"]
    targets = multi_hot(frame["labels"])
    assert targets.shape == (3, 19) and targets.sum() == 7 and targets[0, [0, 5, 8]].tolist() == [1, 1, 1]


def test_public_hpa_format_keeps_cell_line(tmp_path):
    path = tmp_path / "public.csv"
    path.write_text(PUBLIC)
    frame = read_labels(path)
    assert frame["ID"].tolist() == ["1000_E11_2", "1001_G1_2"]
    assert frame["labels"].tolist() == [(18,), (5, 6)]
    assert frame["Cellline"].tolist() == ["U-251 MG", "U-2 OS"]


@pytest.mark.parametrize("body, message", [
    ("ID,Label\na,0|19\n", r"line 2 \(ID a\): unknown class 19"),
    ("ID,Label\na,\n", r"line 2 \(ID a\): empty label"),
    ("ID,Label\na,1\nb,x\n", r"line 3 \(ID b\): label 'x' is not an integer"),
    ("ID,Label\na,1\na,2\n", r"duplicate ID\(s\) \['a'\]"),
    ("ID,Labels\na,1\n", r"missing column\(s\) \['Label'\]"),
    ("ID,Label\na,1|1\n", "repeats a class"),
])
def test_malformed_label_files_name_file_and_row(tmp_path, body, message):
    path = tmp_path / "bad.csv"
    path.write_text(body)
    with pytest.raises(LabelFileError, match=message) as err:
        read_labels(path)
    assert "bad.csv" in str(err.value)


def test_missing_label_file(tmp_path):
    with pytest.raises(LabelFileError, match="not found"):
        read_labels(tmp_path / "none.csv")


def test_parse_labels_sorts():
    assert parse_labels("16|0| 3", "x") == (0, 3, 16)


def test_combine_rejects_shared_ids(tmp_path):
    (tmp_path / "a.csv").write_text(KAGGLE)
    frame = read_labels(tmp_path / "a.csv")
    with pytest.raises(LabelFileError, match="more than one label table"):
        combine_label_tables(frame, frame)


def test_folds_are_seeded_and_stratified():
    rng = np.random.default_rng(0)
    targets = (rng.random((400, 19)) < 0.15).astype(np.float32)
    targets[:40, 11] = 1  # a rare class: 40 positives
    targets[40:, 11] = 0
    folds = make_folds(targets, n_splits=5, seed=42)
    assert set(folds) == set(range(5))
    np.testing.assert_array_equal(folds, make_folds(targets, 5, seed=42))
    assert not np.array_equal(folds, make_folds(targets, 5, seed=7))
    per_fold_rare = np.bincount(folds[targets[:, 11] == 1], minlength=5)
    assert per_fold_rare.min() >= 7 and per_fold_rare.max() <= 9  # 40 / 5 = 8 each
    assert np.all(np.abs(np.bincount(folds) - 80) <= 3)


def test_folds_reject_too_few_images():
    with pytest.raises(ValueError, match="cannot be split"):
        make_folds(np.zeros((3, 19)), 5, 0)
