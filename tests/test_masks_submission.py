"""Mask strings and submission files: round trips, the Kaggle format, and errors that name the file."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from hpacam.masks import decode_mask, encode_label_image, encode_mask
from hpacam.submission import (
    CellPrediction,
    format_prediction_string,
    make_submission_frame,
    parse_prediction_string,
    read_submission,
    write_submission,
)

# The first rows of the competition's sample submission (kaggle_sample_submission.csv).
KAGGLE_SAMPLE = """\
ID,ImageWidth,ImageHeight,PredictionString
0040581b-f1f2-4fbe-b043-b6bfea5404bb,2048,2048,0 1 eNoLCAgIMAEABJkBdQ==
004a270d-34a2-4d60-bbe4-365fca868193,2048,2048,0 1 eNoLCAgIMAEABJkBdQ==
00537262-883c-4b37-a3a1-a4931b6faea5,2048,2048,0 1 eNoLCAgIMAEABJkBdQ==
"""

shapes = st.tuples(st.integers(1, 40), st.integers(1, 40))
random_masks = shapes.flatmap(lambda shape: arrays(np.bool_, shape))
uniform_masks = st.tuples(shapes, st.booleans()).map(lambda args: np.full(args[0], args[1]))


# ----------------------------------------------------------------------------- masks

@settings(max_examples=150, deadline=None)
@given(st.one_of(random_masks, uniform_masks))
def test_mask_round_trip(mask):
    decoded = decode_mask(encode_mask(mask), *mask.shape)
    assert decoded.dtype == bool and decoded.shape == mask.shape
    assert np.array_equal(decoded, mask)


def test_round_trip_of_a_large_non_square_mask():
    mask = np.random.default_rng(0).random((300, 517)) < 0.3
    assert np.array_equal(decode_mask(encode_mask(mask), 300, 517), mask)


def test_encode_accepts_a_trailing_channel_axis():
    mask = np.eye(5, dtype=bool)
    assert encode_mask(mask[:, :, None]) == encode_mask(mask)


@settings(max_examples=50, deadline=None)
@given(shapes.flatmap(lambda shape: arrays(np.uint16, shape, elements=st.sampled_from([0, 1, 2, 7, 65535]))))
def test_label_image_encoding_equals_encoding_each_cell(labels):
    expected = {int(cell): encode_mask(labels == cell) for cell in np.unique(labels) if cell}
    assert encode_label_image(labels) == expected


def test_kaggle_sample_submission_dummy_mask_decodes_to_an_empty_image():
    frame = pd.read_csv(io.StringIO(KAGGLE_SAMPLE))
    label, confidence, mask = frame["PredictionString"].iat[0].split()
    decoded = decode_mask(mask, 2048, 2048)
    assert decoded.shape == (2048, 2048) and not decoded.any()
    assert encode_mask(np.zeros((2048, 2048), dtype=bool)) == mask  # we write what Kaggle wrote


def test_decoding_at_the_wrong_size_or_garbage_fails():
    with pytest.raises(ValueError, match="base64"):
        decode_mask("not base64!", 4, 4)


# ----------------------------------------------------------------------------- prediction strings

# Confidences as `format_prediction_string` writes them (6 significant digits) survive exactly.
confidences = st.floats(-1e3, 1e3, allow_nan=False).map(lambda x: float(f"{x:.6g}"))
mask_tokens = st.text("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=", min_size=1, max_size=30)
predictions = st.builds(CellPrediction, st.integers(0, 18), confidences, mask_tokens)


@settings(max_examples=150, deadline=None)
@given(st.lists(predictions, max_size=20))
def test_prediction_string_round_trip(items):
    assert parse_prediction_string(format_prediction_string(items)) == items


@pytest.mark.parametrize("text, message", [
    ("0 1", "not a multiple of 3"),
    ("19 1 m", "outside 0..18"),
    ("0 nan m", "not finite"),
    ("a 1 m", "expected an integer"),
])
def test_prediction_string_errors_say_where(text, message):
    with pytest.raises(ValueError, match=message) as info:
        parse_prediction_string(text, "file.csv row 3")
    assert str(info.value).startswith("file.csv row 3")


def test_empty_prediction_string_is_no_predictions():
    assert parse_prediction_string("") == [] and parse_prediction_string("   ") == []


# ----------------------------------------------------------------------------- submission files

def test_read_kaggle_sample(tmp_path):
    path = tmp_path / "sample.csv"
    path.write_text(KAGGLE_SAMPLE)
    frame = read_submission(path)
    assert list(frame.columns) == ["ID", "ImageWidth", "ImageHeight", "PredictionString"]
    assert frame["ImageWidth"].tolist() == [2048] * 3


@pytest.mark.parametrize("content, message", [
    ("ID,ImageWidth,PredictionString\na,8,\n", "missing columns"),
    ("ID,ImageWidth,ImageHeight,PredictionString\na,0,8,\n", "ImageWidth"),
    ("ID,ImageWidth,ImageHeight,PredictionString\na,8,wide,\n", "ImageHeight"),
    ("ID,ImageWidth,ImageHeight,PredictionString\na,8.5,8,\n", "ImageWidth"),
    ("ID,ImageWidth,ImageHeight,PredictionString\na,8,8,\na,8,8,\n", "duplicate IDs"),
])
def test_read_submission_errors_name_the_file(tmp_path, content, message):
    path = tmp_path / "bad_submission.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        read_submission(path)
    assert str(path) in str(info.value)


def test_read_missing_file_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.csv"):
        read_submission(tmp_path / "nowhere.csv")


def sample_frame() -> pd.DataFrame:
    return make_submission_frame([("a", 8, 8, "0 1 eNoLCAgIMAEABJkBdQ=="), ("b", 4, 6, "")])


def test_write_then_read_round_trip_leaves_no_temp_file(tmp_path):
    path = write_submission(sample_frame(), tmp_path / "sub.csv")
    assert [p.name for p in tmp_path.iterdir()] == ["sub.csv"]
    pd.testing.assert_frame_equal(read_submission(path), sample_frame())


def test_failed_write_leaves_the_existing_file_untouched(tmp_path, monkeypatch):
    path = tmp_path / "sub.csv"
    path.write_text("precious\n")

    def write_half_then_fail(self, target, *args, **kwargs):
        Path(target).write_text("ID,ImageWid")
        raise OSError("disk full")

    monkeypatch.setattr(pd.DataFrame, "to_csv", write_half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        write_submission(sample_frame(), path)
    assert path.read_text() == "precious\n"
    assert [p.name for p in tmp_path.iterdir()] == ["sub.csv"]


def test_write_refuses_duplicate_ids(tmp_path):
    frame = make_submission_frame([("a", 8, 8, ""), ("a", 8, 8, "")])
    with pytest.raises(ValueError, match="more than once"):
        write_submission(frame, tmp_path / "sub.csv")
    assert not any(tmp_path.iterdir())
