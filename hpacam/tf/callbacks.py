"""Callbacks that make a long TPU run safe to interrupt: atomic best model, clean time limit."""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Callable

import keras

from hpacam.tf import storage

log = logging.getLogger(__name__)


def save_model_atomically(model: keras.Model, path: str) -> None:
    """`model.save` to a temporary `.keras` beside `path`, then rename: never a half-written model."""
    with storage.atomic_output(path, suffix=".keras") as tmp:
        model.save(tmp)


Exporter = Callable[[keras.Model], keras.Model]


class BestModelCheckpoint(keras.callbacks.Callback):
    """Keep the best epoch's model in native `.keras` format, written atomically.

    The best score lives in a small JSON beside the model, so a resumed run (`resume=True`) only
    replaces the model when it beats what the interrupted run had already saved.
    """

    def __init__(self, path: str, monitor: str, mode: str = "max", resume: bool = False,
                 export: Exporter | None = None):
        super().__init__()
        self.path, self.monitor, self.mode, self.resume = path, monitor, mode, resume
        self.export = export  # e.g. a float32 copy of a mixed-precision model
        self.score_path = path + ".json"
        self.best = -math.inf if mode == "max" else math.inf

    def on_train_begin(self, logs=None):
        if self.resume and storage.exists(self.score_path) and storage.exists(self.path):
            self.best = json.loads(storage.read_text(self.score_path))["value"]
            log.info("resuming with the best %s so far: %.5f", self.monitor, self.best)

    def _improved(self, value: float) -> bool:
        return value > self.best if self.mode == "max" else value < self.best

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            raise KeyError(f"metric {self.monitor!r} is not in the epoch logs {sorted(logs or {})} (train.monitor)")
        value = float(value)
        if not self._improved(value):
            return
        save_model_atomically(self.export(self.model) if self.export else self.model, self.path)
        storage.write_text(self.score_path, json.dumps({"epoch": epoch + 1, "monitor": self.monitor, "value": value}))
        log.info("epoch %d: %s improved from %.5f to %.5f, saved %s", epoch + 1, self.monitor, self.best, value,
                 self.path)
        self.best = value


class StopBeforeTimeLimit(keras.callbacks.Callback):
    """Stop at an epoch end when another epoch would not fit in the time limit.

    Kaggle ends a session after 9 hours and keeps nothing from a killed run; stopping cleanly
    keeps the backup, the best model and the log, and the next session resumes from them.
    """

    def __init__(self, limit_s: float):
        super().__init__()
        self.limit_s = limit_s
        self.stopped_early = False

    def on_train_begin(self, logs=None):
        self.start = time.monotonic()
        self.epochs_run = 0

    def on_epoch_end(self, epoch, logs=None):
        self.epochs_run += 1
        elapsed = time.monotonic() - self.start
        last_epoch = epoch + 1 >= self.params.get("epochs", 0)
        if not last_epoch and elapsed + elapsed / self.epochs_run > self.limit_s:
            log.warning("stopping after epoch %d: another epoch would pass the %.0f s time limit; "
                        "run the same command again to resume", epoch + 1, self.limit_s)
            self.stopped_early = True
            self.model.stop_training = True
