"""Checked CSV tables: the one reader of the label, submission and image-probability files.

Every table a user hands the pipeline comes in through `read_table`, so each fault has one error
type wherever it happens, and the message names the file (and the row, as the line an editor
shows: the header is line 1). All four are `TableError`, a ValueError:

    TableMissingError   no such file (also a FileNotFoundError)
    TableEncodingError  not UTF-8 text
    TableColumnsError   a required column is missing (or the file is empty)
    TableRowError       a row that cannot be used: unparsable, a duplicate ID, a bad value

The readers of each format (`hpacam.labels`, `hpacam.submission`, `hpacam.baselines`) read
through it, then check their own values and raise `TableRowError` for a bad one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


class TableError(ValueError):
    """A CSV table cannot be used; the message names the file and, where one is at fault, the row."""


class TableMissingError(TableError, FileNotFoundError):
    """The table's file does not exist."""


class TableEncodingError(TableError):
    """The file is not UTF-8 text."""


class TableColumnsError(TableError):
    """A column the table needs is not in its header (or there is no header)."""


class TableRowError(TableError):
    """A row is unparsable, repeats an ID, or holds a value the table cannot have."""


@dataclass(frozen=True)
class TableKind:
    """What a table is, for its messages, and what it must hold."""

    what: str  # names the file in "{path}: label file not found"
    columns: tuple[str, ...]  # required columns
    dtype: Any = field(default=str)  # pandas' `dtype` (text columns stay text: IDs such as "007")
    expected: str = ""  # added to a missing-column message: what the header should be
    # plural in messages: "columns", or "column(s)" for the label file, whose messages users and
    # tests match as they have always read
    plural: str = "s"


def line_of(row: int) -> int:
    """The editor's line of data row `row` (0-based): the header is line 1."""
    return row + 2


def read_table(path: str | os.PathLike, kind: TableKind) -> pd.DataFrame:
    """The table at `path`, every value as read (no NA guessing), with the columns `kind` needs."""
    path = Path(path)
    if not path.is_file():
        raise TableMissingError(f"{path}: {kind.what} not found")
    try:
        frame = pd.read_csv(path, dtype=kind.dtype, keep_default_na=False, encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise TableEncodingError(f"{path}: not UTF-8 text ({exc.reason})") from None
    except pd.errors.EmptyDataError:
        raise TableColumnsError(f"{path}: empty file, no header; expected the columns {list(kind.columns)}") from None
    except pd.errors.ParserError as exc:
        raise TableRowError(f"{path}: not a readable CSV ({' '.join(str(exc).split())})") from None
    missing = [c for c in kind.columns if c not in frame.columns]
    if missing:
        raise TableColumnsError(f"{path}: missing column{kind.plural} {missing}{kind.expected}")
    return frame


def check_unique_ids(ids: pd.Series, path: str | os.PathLike, kind: TableKind) -> None:
    """Each ID once: a repeated one would silently overwrite or double the other's row."""
    repeated = ids.duplicated().to_numpy()
    if repeated.any():
        first = int(np.flatnonzero(repeated)[0])
        raise TableRowError(f"{path}: duplicate ID{kind.plural} {ids[repeated].unique()[:5].tolist()} "
                            f"(first repeated on line {line_of(first)})")

