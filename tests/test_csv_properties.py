"""Property tests of the CSV readers: submissions round-trip, and any file either reads or fails cleanly.

"Cleanly" means the reader's own error type (a ValueError) with the file named in the message:
never a KeyError, an OverflowError or a silently wrong value from pandas. The label reader's
round trip is in tests/test_label_properties.py; here both readers also get arbitrary and
CSV-shaped garbage.
"""

from __future__ import annotations

import string
from pathlib import Path

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hpacam.classes import NUM_CLASSES
from hpacam.labels import LabelFileError, read_labels
from hpacam.submission import COLUMNS, CellPrediction, format_prediction_string, read_submission, write_submission

FILES = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

# IDs as any text without control characters (commas, quotes and non-ASCII included: the CSV
# writer must quote them), not only the hex-and-dash IDs Kaggle uses.
ids = st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), min_size=1, max_size=24)
sizes = st.integers(1, 100_000)
masks = st.text(string.ascii_letters + string.digits + "+/=", min_size=1, max_size=30)
predictions = st.lists(st.builds(CellPrediction, st.integers(0, NUM_CLASSES - 1),
                                 st.floats(0, 1).map(lambda x: float(f"{x:.6g}")), masks), max_size=6)
submissions = st.lists(st.tuples(ids, sizes, sizes, predictions.map(format_prediction_string)), max_size=12,
                       unique_by=lambda row: row[0])


@FILES
@given(rows=submissions)
def test_submissions_round_trip(tmp_path_factory, rows):
    path = tmp_path_factory.mktemp("sub") / "submission.csv"
    frame = pd.DataFrame(rows, columns=COLUMNS)
    write_submission(frame, path)
    read = read_submission(path)
    assert read["ID"].tolist() == frame["ID"].tolist()
    assert read["ImageWidth"].tolist() == frame["ImageWidth"].tolist()
    assert read["ImageHeight"].tolist() == frame["ImageHeight"].tolist()
    assert read["PredictionString"].tolist() == frame["PredictionString"].tolist()


# CSV-shaped garbage: a header that is sometimes right, and rows whose fields are each either
# valid for their column or an odd token, so single odd values reach the readers' checks.
odd = st.one_of(st.sampled_from(["", "0", "19", "-1", "2.5", "1e3", "1e30", "nan", "inf", "NA", "a", "5|5", "0|19",
                                 "\u00b2", "\u0663", " 7 ", '"', "x,y", "99999999999999999999999"]),
                st.text(max_size=8))
simple_ids = st.text(string.ascii_lowercase + string.digits + "-", min_size=1, max_size=8)
label_texts = st.sets(st.integers(0, NUM_CLASSES - 1), min_size=1, max_size=4).map(lambda s: "|".join(map(str, s)))
size_texts = st.integers(1, 10 ** 30).map(str)  # sizes from plausible to absurd
COLUMN_VALUES = {"ID": simple_ids, "ImageWidth": size_texts, "ImageHeight": size_texts,
                 "PredictionString": st.just(""), "Label": label_texts, "Cellline": st.just("U-2 OS"), "": st.just("0"),
                 "Labels_list": st.just("[0]")}
headers = st.sampled_from(["ID,ImageWidth,ImageHeight,PredictionString", "ID,Label", ",ID,Cellline,Label,Labels_list",
                           "ID,ImageWidth,PredictionString", "ID,ID,Label", "Label"])


def csv_text(header: str) -> st.SearchStrategy[str]:
    fields = [st.one_of(COLUMN_VALUES[name], odd) for name in header.split(",")]
    rows = st.lists(st.tuples(*fields).map(",".join), max_size=5)
    return rows.map(lambda rows: "\n".join([header, *rows]) + "\n")


csv_texts = headers.flatmap(csv_text)
any_bytes = st.binary(max_size=200)


def read_or_fail_cleanly(reader, path: Path, error: type[Exception]):
    """The frame, or None when the reader raised `error` naming the file."""
    try:
        return reader(path)
    except error as exc:
        assert str(path) in str(exc), f"the message does not name the file: {exc}"
        return None


@FILES
@given(content=st.one_of(csv_texts, any_bytes))
@example(content="ID,ImageWidth,ImageHeight,PredictionString\na,1e30,8,\n")  # found: wrapped to -2**63
def test_any_file_reads_as_a_valid_submission_or_fails_naming_it(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("sub") / "odd.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    frame = read_or_fail_cleanly(read_submission, path, ValueError)
    if frame is not None:
        assert list(frame.columns) == COLUMNS and not frame["ID"].duplicated().any()
        for column in ("ImageWidth", "ImageHeight"):
            assert frame[column].dtype.kind == "i" and (frame[column] > 0).all()
            assert (frame[column] < 2 ** 31).all()  # no float overflowing into a wrapped integer


@FILES
@given(content=st.one_of(csv_texts, any_bytes))
@example(content="ID,Label\n0,\u00b2\n")  # found: "²".isdigit() let int() raise a bare ValueError
def test_any_file_reads_as_valid_labels_or_fails_naming_it(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("labels") / "odd.csv"
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    frame = read_or_fail_cleanly(read_labels, path, LabelFileError)
    if frame is not None:
        assert not frame["ID"].duplicated().any() and (frame["ID"] != "").all()
        for labels in frame["labels"]:
            assert labels and list(labels) == sorted(set(labels))
            assert all(isinstance(x, int) and 0 <= x < NUM_CLASSES for x in labels)
        assert np.array_equal(frame["Label"], ["|".join(map(str, labels)) for labels in frame["labels"]])
