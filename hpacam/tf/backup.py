"""Make a killed Keras run's pre-emption backup resumable, and its history exact.

`keras.callbacks.BackupAndRestore(double_checkpoint=True)` keeps the previous backup beside the
latest, but it only falls back to it when the weights fail to load: a kill while it writes
`training_metadata.json` (or during the very first save, before any previous backup exists)
leaves a folder it cannot resume from. `repair_backup` puts such a folder back into a state that
resumes from the last complete epoch, before `fit` starts.

The epoch-end writes of this stage (best model, history row) come before the backup that marks
the epoch done, so after a kill the history can hold rows of an epoch that will be run again:
`trim_history` drops them, and every epoch appears in `history.csv` exactly once.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from typing import Optional

import tensorflow as tf

from hpacam.tf import storage

log = logging.getLogger(__name__)

WEIGHTS = "latest.weights.h5"  # the names keras.callbacks.BackupAndRestore uses
METADATA = "training_metadata.json"
PREVIOUS = ".bkp"


def read_completed_epochs(path: str) -> Optional[int]:
    """Epochs done according to a backup metadata file; None if it is missing or unreadable."""
    if not storage.exists(path):
        return None
    try:
        return int(json.loads(storage.read_text(path))["epoch"])
    except (ValueError, KeyError, TypeError):
        return None


def weights_readable(path: str) -> bool:
    """Whether an HDF5 weights file opens (local files; a bucket object is trusted if present)."""
    if not storage.exists(path):
        return False
    if storage.is_remote(path):
        return True
    import h5py

    try:
        with h5py.File(path, "r"):
            return True
    except OSError:
        return False


def repair_backup(backup_dir: str) -> Optional[int]:
    """Leave `backup_dir` resumable; return the epochs it resumes after (None: start afresh)."""
    weights, metadata = storage.join(backup_dir, WEIGHTS), storage.join(backup_dir, METADATA)
    previous = (weights + PREVIOUS, metadata + PREVIOUS)
    epochs = read_completed_epochs(metadata)
    if epochs is not None and weights_readable(weights):
        return epochs
    previous_epochs = read_completed_epochs(previous[1])
    if previous_epochs is not None and weights_readable(previous[0]):
        log.warning("%s: the latest backup is incomplete (killed while writing it); resuming from the previous "
                    "one, after epoch %d", backup_dir, previous_epochs)
        tf.io.gfile.copy(previous[0], weights, overwrite=True)
        tf.io.gfile.copy(previous[1], metadata, overwrite=True)
        return previous_epochs
    if storage.exists(backup_dir):
        log.warning("%s: no complete backup (killed during the first save); starting afresh", backup_dir)
        tf.io.gfile.rmtree(backup_dir)
    return None


def trim_history(path: str, completed_epochs: int) -> None:
    """Keep the rows of `history.csv` (CSVLogger's, 0-based `epoch`) of the epochs already done."""
    if not storage.exists(path):
        return
    rows = list(csv.reader(io.StringIO(storage.read_text(path))))
    if not rows:
        return
    header, body = rows[0], rows[1:]
    epoch = header.index("epoch")
    whole = [row for row in body if len(row) == len(header)]  # a kill mid-row leaves a short one
    kept = [row for row in whole if int(float(row[epoch])) < completed_epochs]
    if len(kept) == len(body):
        return
    out = io.StringIO()
    csv.writer(out, lineterminator="\n").writerows([header, *kept])
    storage.write_text(path, out.getvalue())
