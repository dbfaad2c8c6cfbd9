"""The demo's protocol is leak-proof: no training or choosing step reads the training set's per-cell truth.

The demo runs twice at a tiny size (a few 128 px images, one epoch, no Keras model, no oracle
inference runs): once as generated, once after deleting `train/truth.csv`, `train/cells/` and
`train/nuclei/`. The second run must reuse the set (not regenerate the truth) and write a
byte-identical private submission, tuned config and regressor: nothing the pipeline produced
depended on the deleted files.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SMALL = ["n_train=24", "n_public=6", "n_private=6", "image_size=128", "cam_epochs=1", "cam_image_size=32",
         "keras_recipe=", "regressor_estimators=10", "workers=1", "oracle_rows=false", "cell_epochs=2"]
OUTPUTS = ("submission.csv", "submission.image_probs.csv", "inference.yaml", "inference.csv",
           "public/submission.csv")


def run_demo(out: Path) -> str:
    result = subprocess.run([sys.executable, "tools/demo.py", "--out", str(out), "--seed", "3", *SMALL],
                            cwd=REPO, text=True, capture_output=True)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


def test_deleting_the_training_truth_changes_nothing(tmp_path):
    out = tmp_path / "demo"
    run_demo(out)
    first = {name: (out / name).read_bytes() for name in OUTPUTS}
    regressor = next((out / "regressor").glob("*.npz")).read_bytes()
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"pipeline", "broadcast_same_models", "cell_oracle_same_models", "broadcast_true_labels",
            "oracle", "pipeline_without_cell_model", "broadcast_without_cell_model",
            "cell_model_only"} <= set(metrics["mAP"])
    assert set(metrics["public"]) == set(metrics["mAP"])
    assert metrics["mAP"]["oracle"] == 1.0

    train = out / "synth" / "train"
    (train / "truth.csv").unlink()
    shutil.rmtree(train / "cells")
    shutil.rmtree(train / "nuclei")
    log = run_demo(out)

    assert "synthesise train: reusing" in log
    assert not (train / "truth.csv").exists() and not (train / "cells").exists() and not (train / "nuclei").exists()
    for name in OUTPUTS:
        assert (out / name).read_bytes() == first[name], f"{name} changed once the training truth was gone"
    assert next((out / "regressor").glob("*.npz")).read_bytes() == regressor
    assert json.loads((out / "metrics.json").read_text())["mAP"] == metrics["mAP"]


def test_the_regressor_oracle_refuses_to_run_without_truth(tmp_path):
    from hpacam.config import load_config
    from hpacam.regressor.extraction import CellTruth, ExtractConfig

    assert load_config(ExtractConfig).targets == "image_labels"
    (tmp_path / "images").mkdir()
    with pytest.raises(FileNotFoundError, match="cell_truth_oracle needs per-cell truth"):
        CellTruth.beside(tmp_path / "images")
