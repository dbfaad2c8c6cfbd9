"""Train one image-level classifier (one architecture, colour mode and fold) with Keras on TF.

The run folder holds `config.yaml` (the resolved config, beside the model so inference knows
the colour mode), `best.keras` (+ `best.keras.json`, its score), `history.csv`, `log.txt`, and
while training `backup/`: Keras's BackupAndRestore state. Running the same command again after
a pre-emption or a `train.time_limit_min` stop resumes from the last finished epoch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import keras
import tensorflow as tf

from hpacam.config import parse_args
from hpacam.runs import prepare_run_dir
from hpacam.tf import storage
from hpacam.tf.backup import repair_backup, trim_history
from hpacam.tf.callbacks import BestModelCheckpoint, StopBeforeTimeLimit
from hpacam.tf.config import ImgTrainConfig
from hpacam.tf.data import folder_datasets, folder_files, named_decode_error
from hpacam.tf.models import build_model, compile_model, float32_copy
from hpacam.tf.strategy import select_strategy, set_precision
from hpacam.tf.tfrecords import record_datasets

log = logging.getLogger(__name__)

BEST_MODEL = "best.keras"
HISTORY = "history.csv"


@dataclass
class TrainResult:
    model: keras.Model  # the model after the last epoch run
    best_path: str
    finished: bool  # False when stopped by the time limit (run again to resume)
    history: dict


def make_datasets(cfg: ImgTrainConfig, global_batch: int, drop_remainder_valid: bool):
    """TFRecords when `data.tfrecords` is set (the TPU path), else the image folder."""
    if cfg.data.tfrecords:
        return record_datasets(cfg, global_batch, drop_remainder_valid)
    return folder_datasets(cfg, global_batch, drop_remainder_valid)


def monitored_metric(cfg: ImgTrainConfig, has_validation: bool) -> str:
    monitor = cfg.train.monitor
    if not has_validation and monitor.startswith("val_"):
        log.warning("no validation fold (data.fold=-1): monitoring %s instead of %s", monitor[4:], monitor)
        return monitor[4:]
    return monitor


def make_callbacks(cfg: ImgTrainConfig, run_dir: str, monitor: str, resuming: bool,
                   policy: str) -> list[keras.callbacks.Callback]:
    train = cfg.train
    export = float32_copy if policy != "float32" else None  # the saved model runs anywhere
    # The backup goes last: the epoch's best model and history row are written before the backup
    # marks the epoch done, so a kill in between re-runs the epoch instead of losing its row.
    callbacks = [
        BestModelCheckpoint(storage.join(run_dir, BEST_MODEL), monitor, train.monitor_mode, resume=resuming,
                            export=export),
        keras.callbacks.ReduceLROnPlateau(monitor=monitor, mode=train.monitor_mode, factor=train.plateau_factor,
                                          patience=train.plateau_patience, min_lr=train.min_lr, verbose=1),
        keras.callbacks.CSVLogger(storage.join(run_dir, HISTORY), append=resuming),
    ]
    if train.time_limit_min > 0:
        callbacks.append(StopBeforeTimeLimit(train.time_limit_min * 60))
    callbacks.append(keras.callbacks.BackupAndRestore(backup_dir(cfg), double_checkpoint=True,
                                                      delete_checkpoint=False))
    return callbacks


def backup_dir(cfg: ImgTrainConfig) -> str:
    return cfg.train.backup_dir or storage.join(cfg.run_dir, "backup")


def train(cfg: ImgTrainConfig) -> TrainResult:
    """Train (or resume) the run described by `cfg`; the best model is `{run_dir}/best.keras`."""
    if storage.is_remote(cfg.run_dir):
        raise ValueError(f"run_dir={cfg.run_dir!r}: the run folder must be local (it holds the log); "
                         "set train.backup_dir=gs://... to keep the pre-emption backup in a bucket")
    run_dir = str(prepare_run_dir(cfg.run_dir, cfg))
    keras.utils.set_random_seed(cfg.seed)
    if cfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    choice = select_strategy(cfg.strategy.tpu)
    policy = set_precision(cfg.strategy.precision, choice.kind)
    global_batch = choice.global_batch(cfg.train.batch_per_replica)
    log.info("global batch %d = %d per replica x %d", global_batch, cfg.train.batch_per_replica, choice.replicas)
    train_ds, valid_ds = make_datasets(cfg, global_batch, drop_remainder_valid=choice.kind == "tpu")
    with choice.strategy.scope():
        model = build_model(cfg.model, cfg.data.image_size)
        compile_model(model, cfg.train)
    completed = repair_backup(backup_dir(cfg))
    resuming = completed is not None
    if resuming:
        log.info("resuming from the backup in %s after epoch %d", backup_dir(cfg), completed)
        trim_history(storage.join(run_dir, HISTORY), completed)
    callbacks = make_callbacks(cfg, run_dir, monitored_metric(cfg, valid_ds is not None), resuming, policy)
    history = fit(model, cfg, train_ds, valid_ds, callbacks)
    finished = not any(isinstance(c, StopBeforeTimeLimit) and c.stopped_early for c in callbacks)
    if finished and storage.exists(backup_dir(cfg)):
        tf.io.gfile.rmtree(backup_dir(cfg))  # done: a later run of this command starts afresh
    log.info("%s after %d epoch(s); best model %s", "finished" if finished else "stopped (resume later)",
             len(history.epoch), storage.join(run_dir, BEST_MODEL))
    return TrainResult(model, storage.join(run_dir, BEST_MODEL), finished, history.history)


def fit(model: keras.Model, cfg: ImgTrainConfig, train_ds, valid_ds, callbacks) -> keras.callbacks.History:
    """`model.fit`; an image file that cannot be decoded stops it as an ImageReadError naming the file.

    The run folder stays resumable: the epochs finished before the bad file are in the backup.
    """
    try:
        return model.fit(train_ds, validation_data=valid_ds, epochs=cfg.train.epochs, callbacks=callbacks,
                         verbose=cfg.train.verbose, shuffle=False)  # the tf.data pipeline shuffles
    except (tf.errors.InvalidArgumentError, tf.errors.DataLossError) as exc:
        raise named_decode_error(exc, folder_files(cfg)) from None


def main(argv: Sequence[str] | None = None) -> TrainResult:
    cfg, _ = parse_args(ImgTrainConfig, argv, description=__doc__.splitlines()[0])
    return train(cfg)


if __name__ == "__main__":
    main()
