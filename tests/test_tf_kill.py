"""SIGKILL the Keras image-level training many times: it always resumes, and loses no epoch (issue 9).

Two parts. The states a kill inside a write leaves in the pre-emption backup (torn metadata,
torn weights, a kill during the very first save) are made directly and repaired: the writes take
milliseconds, so random kills seldom land in them. Then a real `train_img.py` process is killed
at random moments of a run of many tiny epochs, restarted each time, and finally left to finish:
every epoch must appear in `history.csv` exactly once and `best.keras` must load in safe mode.
About 70 s on two cores, most of it TensorFlow's start-up in each of the six processes.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import csv  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")

from hpacam.tf.backup import METADATA, PREVIOUS, WEIGHTS, repair_backup, trim_history  # noqa: E402
from hpacam.tf.predict import load_image_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "train-image-level-model" / "train_img.py"
EPOCHS = 40
KILLS = 5


def tiny_model():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3), keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(0.01), "mse")
    return model


def fit_with_backup(backup: Path, epochs: int) -> keras.Model:
    model = tiny_model()
    x, y = np.random.default_rng(0).normal(size=(8, 4)), np.zeros((8, 1))
    callback = keras.callbacks.BackupAndRestore(str(backup), double_checkpoint=True, delete_checkpoint=False)
    model.fit(x, y, epochs=epochs, verbose=0, callbacks=[callback])
    return model


def test_intact_backup_resumes_after_its_epoch(tmp_path):
    fit_with_backup(tmp_path / "b", 3)
    assert repair_backup(str(tmp_path / "b")) == 3


def test_torn_metadata_falls_back_to_the_previous_backup(tmp_path):
    backup = tmp_path / "b"
    fit_with_backup(backup, 3)
    (backup / METADATA).write_text('{"epo')  # killed while writing the metadata of epoch 3
    assert repair_backup(str(backup)) == 2
    assert json.loads((backup / METADATA).read_text())["epoch"] == 2
    fit_with_backup(backup, 4)  # Keras resumes from it
    assert json.loads((backup / METADATA).read_text())["epoch"] == 4


def test_torn_weights_fall_back_to_the_previous_backup(tmp_path):
    backup = tmp_path / "b"
    fit_with_backup(backup, 3)
    weights = backup / WEIGHTS
    weights.write_bytes(weights.read_bytes()[:100])
    assert repair_backup(str(backup)) == 2
    model = tiny_model()
    model.optimizer.build(model.trainable_variables)
    model.load_weights(str(weights))  # the restored file is whole, optimizer state included


def test_a_kill_during_the_first_save_starts_afresh(tmp_path):
    backup = tmp_path / "b"
    fit_with_backup(backup, 1)
    for name in (WEIGHTS + PREVIOUS, METADATA):
        (backup / name).unlink(missing_ok=True)
    weights = backup / WEIGHTS
    weights.write_bytes(weights.read_bytes()[:100])
    assert repair_backup(str(backup)) is None
    assert not backup.exists()
    assert repair_backup(str(backup)) is None  # no backup at all: nothing to do


def test_history_keeps_only_the_completed_epochs(tmp_path):
    history = tmp_path / "history.csv"
    history.write_text("epoch,auc,loss\n0,0.5,1.0\n1,0.6,0.9\n2,0.7,0.8\n")
    trim_history(str(history), 2)  # killed after epoch 2's row, before its backup: epoch 2 runs again
    assert history.read_text() == "epoch,auc,loss\n0,0.5,1.0\n1,0.6,0.9\n"
    trim_history(str(history), 5)
    assert history.read_text() == "epoch,auc,loss\n0,0.5,1.0\n1,0.6,0.9\n"
    history.write_text("epoch,auc,loss\n0,0.5,1.0\n1,0.6,0.9\n1")  # killed inside the write of epoch 12's row
    trim_history(str(history), 12)
    assert history.read_text() == "epoch,auc,loss\n0,0.5,1.0\n1,0.6,0.9\n"


def epochs_done(run_dir: Path) -> int:
    try:
        return json.loads((run_dir / "backup" / METADATA).read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        return -1


def start(run_dir: Path, images: Path, labels: Path) -> subprocess.Popen:
    args = [f"run_dir={run_dir}", f"data.images={images}", f"data.labels={labels}", "model.architecture=tiny",
            "data.image_size=32", "data.n_folds=4", "data.color_mode=ggg", "train.batch_per_replica=4",
            f"train.epochs={EPOCHS}", "train.verbose=0", "train.plateau_patience=100"]
    return subprocess.Popen([sys.executable, str(SCRIPT), *args], cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)


def test_killed_many_times_it_resumes_and_logs_every_epoch_once(tmp_path, keras_images):
    images, labels = keras_images
    run_dir = tmp_path / "run"
    rng = random.Random(7)
    for kill in range(KILLS):
        before = epochs_done(run_dir)
        process = start(run_dir, images, labels)
        deadline = time.monotonic() + 120
        while epochs_done(run_dir) <= before and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)  # wait until this process has completed an epoch of its own
        assert process.poll() is None, f"kill {kill}: the run ended early: {process.communicate()[1][-2000:]}"
        time.sleep(rng.uniform(0.0, 0.25))  # then kill at a random point: in or between epoch-end writes
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert 0 < epochs_done(run_dir) < EPOCHS

    final = start(run_dir, images, labels)
    _, err = final.communicate(timeout=600)
    assert final.returncode == 0, err[-3000:]
    with open(run_dir / "history.csv") as fh:
        assert [int(row["epoch"]) for row in csv.DictReader(fh)] == list(range(EPOCHS))
    assert not (run_dir / "backup").exists()
    assert load_image_model(str(run_dir / "best.keras")).output_shape == (None, 19)
