"""One checked-CSV reader for labels, submissions and image probabilities; one PNG reader and writer.

Each fault has one error type whichever table it is in, and the message names the file (and
the line, for a bad row).
"""

import cv2
import numpy as np
import pytest

from hpacam.baselines import image_probs_from_labels_csv, image_probs_from_probability_csv
from hpacam.images import read_label_png, write_png
from hpacam.labels import LabelFileError, read_labels
from hpacam.segmentation import write_label_png
from hpacam.submission import read_submission
from hpacam.tables import TableColumnsError, TableEncodingError, TableError, TableMissingError, TableRowError

PROBS_HEADER = "ID," + ",".join(str(c) for c in range(19))
PROBS_ROW = ",".join(["0.5"] * 19)
READERS = {  # reader: (a good file, a missing column, a bad second row, a repeated ID)
    "labels": (read_labels, "ID,Label\na,1\nb,2\n", "ID,Labels\na,1\n", "ID,Label\na,1\nb,x\n",
               "ID,Label\na,1\na,2\n"),
    "submission": (read_submission, "ID,ImageWidth,ImageHeight,PredictionString\na,8,8,\nb,8,8,\n",
                   "ID,ImageWidth,PredictionString\na,8,\n",
                   "ID,ImageWidth,ImageHeight,PredictionString\na,8,8,\nb,0,8,\n",
                   "ID,ImageWidth,ImageHeight,PredictionString\na,8,8,\na,8,8,\n"),
    "baseline labels": (image_probs_from_labels_csv, "ID,Label\na,1\nb,2\n", "ID\na\n", "ID,Label\na,1\nb,x\n",
                        "ID,Label\na,1\na,2\n"),
    "baseline probabilities": (image_probs_from_probability_csv, f"{PROBS_HEADER}\na,{PROBS_ROW}\n",
                               "ID,0,1\na,0.5,0.5\n", f"{PROBS_HEADER}\na,{PROBS_ROW}\nb,{PROBS_ROW[:-3]}nan\n",
                               f"{PROBS_HEADER}\na,{PROBS_ROW}\na,{PROBS_ROW}\n"),
}
NAMES = sorted(READERS)


def refused(reader, path, error):
    with pytest.raises(error) as info:
        reader(path)
    assert str(path) in str(info.value) and isinstance(info.value, TableError)
    return str(info.value)


@pytest.mark.parametrize("name", NAMES)
def test_a_good_file_reads(name, tmp_path):
    reader, good, *_ = READERS[name]
    path = tmp_path / "good.csv"
    path.write_text(good)
    assert len(reader(path)) >= 1


@pytest.mark.parametrize("name", NAMES)
def test_a_missing_file_is_one_error_type_for_every_table(name, tmp_path):
    message = refused(READERS[name][0], tmp_path / "absent.csv", TableMissingError)
    assert message.endswith("not found")
    assert issubclass(TableMissingError, FileNotFoundError)  # callers that catch OSError still do


@pytest.mark.parametrize("name", NAMES)
def test_a_file_that_is_not_utf8_is_one_error_type(name, tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes(READERS[name][1].replace("a,", "\xe9,", 1).encode("latin-1"))
    assert "not UTF-8 text" in refused(READERS[name][0], path, TableEncodingError)


@pytest.mark.parametrize("name", NAMES)
def test_a_missing_column_is_one_error_type(name, tmp_path):
    path = tmp_path / "columns.csv"
    path.write_text(READERS[name][2])
    assert "missing column" in refused(READERS[name][0], path, TableColumnsError)
    path.write_text("")
    assert "no header" in refused(READERS[name][0], path, TableColumnsError)


@pytest.mark.parametrize("name", NAMES)
def test_a_bad_row_is_one_error_type_naming_its_line(name, tmp_path):
    path = tmp_path / "row.csv"
    path.write_text(READERS[name][3])
    assert "line 3" in refused(READERS[name][0], path, TableRowError)


@pytest.mark.parametrize("name", NAMES)
def test_a_repeated_id_is_a_bad_row_naming_where_it_repeats(name, tmp_path):
    path = tmp_path / "dupes.csv"
    path.write_text(READERS[name][4])
    assert "first repeated on line 3" in refused(READERS[name][0], path, TableRowError)


def test_an_unparsable_csv_is_a_bad_row(tmp_path):
    path = tmp_path / "ragged.csv"
    path.write_text("ID,Label\na,1\nb,2,3,4\n")
    assert "line 3" in refused(read_labels, path, TableRowError)


def test_label_file_error_is_still_what_label_readers_catch(tmp_path):
    with pytest.raises(LabelFileError):
        read_labels(tmp_path / "absent.csv")


# ----------------------------------------------------------------------------- label PNGs


def test_label_images_round_trip_through_the_one_writer_and_reader(tmp_path):
    labels = np.array([[0, 1, 1], [300, 300, 0]], dtype=np.int64)
    path = write_label_png(tmp_path / "cells" / "x.png", labels)
    read = read_label_png(path)
    assert read.dtype == np.int32 and read.tolist() == labels.tolist()
    assert cv2.imread(str(path), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    assert [p.name for p in (tmp_path / "cells").iterdir()] == ["x.png"]  # no temporary file left


def test_the_label_reader_refuses_what_is_not_one_integer_channel(tmp_path):
    with pytest.raises(ValueError, match="absent.png: no such cell label image"):
        read_label_png(tmp_path / "absent.png")
    colour = write_png(tmp_path / "colour.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(ValueError, match="colour.png: a cell label image must be one integer channel"):
        read_label_png(colour)
    (tmp_path / "text.png").write_text("not a png")
    with pytest.raises(ValueError, match="text.png: not a readable image"):
        read_label_png(tmp_path / "text.png")
