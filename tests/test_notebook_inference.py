"""notebooks/kaggle_inference.ipynb as a user runs it: headless (nbclient), on CPU, offline.

The test trains tiny models on synthetic images (a CAM model, its regressor, a Keras model and a
cell model, through the stage scripts), builds the three datasets with tools/kaggle_datasets.py
(the wheels folder from a local wheel: no network), points the notebook's parameters cell at them,
runs every cell and checks the submission it wrote against the sample submission.
"""

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")
pytest.importorskip("tensorflow")

from hpacam.classes import NUM_CLASSES  # noqa: E402
from hpacam.submission import parse_prediction_string, read_submission  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "kaggle_inference.ipynb"
TINY_KWARGS = "model.kwargs={channels: [8, 16, 32, 64], stem_width: 8}"


def stage(script: str, *argv: str) -> None:
    """A stage script's main() in this process (as the user's command line would run it): no error status.

    train_img.py's main returns its TrainResult; the others an exit status.
    """
    status = runpy.run_path(str(REPO / script))["main"](list(argv))
    assert not isinstance(status, int) or status == 0, f"{script} exited {status}"


def train_tiny_models(root: Path, train: Path) -> Path:
    """CAM + regressor, Keras and cell models on `train`; returns the inference config naming them."""
    images, labels, masks = train / "images", train / "labels.csv", root / "masks"
    sources = f"data.sources=[{{images: {images}, labels: {labels}}}]"
    stage("train-cam-model/train_cam.py", "--config", "configs/cam/tiny_cpu.yaml", f"run_dir={root / 'cam'}",
          sources, "data.image_size=64", "data.fold=-1", "train.epochs=2", "train.progress=false", TINY_KWARGS)
    stage("train-gradboost-regressor/extract_intensities.py", f"images={images}", f"labels={labels}",
          f"checkpoints=[{root / 'cam' / 'last.pt'}]", f"out_dir={root / 'int'}", "select=all", "tta.scales=[1.0]",
          f"segmentation.cache.dir={masks}")
    stage("train-gradboost-regressor/train_grad_boost.py", f"intensities={root / 'int' / 'intensities.csv'}",
          f"out_dir={root / 'reg'}", "regressor.n_estimators=20")
    stage("train-image-level-model/train_img.py", "--config", "configs/img/tiny_cpu.yaml", f"run_dir={root / 'img'}",
          f"data.images={images}", f"data.labels={labels}", "data.image_size=32", "data.n_folds=4",
          "train.batch_per_replica=4", "train.epochs=1", "train.verbose=0")
    stage("train-cell-model/train_cell.py", "--config", "configs/cell/tiny_cpu.yaml", f"run_dir={root / 'cell'}",
          sources, "data.image_size=32", TINY_KWARGS, "train.batch_size=16", "train.epochs=1",
          "train.progress=false", f"cells.segmentation.cache.dir={masks}")
    (regressor,) = (root / "reg").glob("*.npz")
    config = root / "inference.yaml"
    config.write_text(f"cam_models:\n  - checkpoint: {root / 'cam' / 'last.pt'}\n    regressor: {regressor}\n"
                      f"image_models:\n  - model: {root / 'img' / 'best.keras'}\n"
                      f"cell_models:\n  - checkpoint: {root / 'cell' / 'last.pt'}\n"
                      "tta:\n  scales: [1.0]\nblend:\n  cell_model_share: 0.5\n")
    return config


def local_wheel(root: Path) -> Path:
    """A --find-links folder with one pure-Python wheel, built offline: the wheels dataset's stand-in."""
    project = root / "tinydep"
    (project / "src" / "tinydep").mkdir(parents=True)
    (project / "src" / "tinydep" / "__init__.py").write_text("VALUE = 42\n")
    (project / "pyproject.toml").write_text('[build-system]\nrequires = ["setuptools>=61"]\n'
                                            'build-backend = "setuptools.build_meta"\n'
                                            '[project]\nname = "tinydep"\nversion = "1.0"\n')
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "-w", str(root / "links"), str(project)], check=True, capture_output=True)
    return root / "links"


def with_parameters(notebook, **values):
    """Papermill's way: a cell after the one tagged `parameters` that sets the given values."""
    (index,) = [i for i, cell in enumerate(notebook.cells) if "parameters" in cell.metadata.get("tags", [])]
    source = "\n".join(f"{name} = {value!r}" for name, value in values.items())
    notebook.cells.insert(index + 1, nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]}))
    return notebook


@pytest.fixture(scope="module")
def notebook_run(tmp_path_factory):
    from hpacam.synth import generate_dataset

    root = tmp_path_factory.mktemp("notebook")
    generate_dataset(root / "train", 16, 128, seed=21, progress=False)
    generate_dataset(root / "test", 3, 128, seed=22, progress=False)
    cwd = os.getcwd()
    os.chdir(REPO)  # the stage scripts read their recipes relative to the repository, as a user runs them
    try:
        config = train_tiny_models(root, root / "train")
    finally:
        os.chdir(cwd)
    datasets = root / "kaggle"
    done = subprocess.run([sys.executable, str(REPO / "tools" / "kaggle_datasets.py"), "--out", str(datasets),
                           "--config", str(config), "--packages", "tinydep", "--no-index",
                           "--find-links", str(local_wheel(root))], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    work, target = root / "working", root / "site"
    work.mkdir()
    notebook = with_parameters(nbformat.read(NOTEBOOK, as_version=4),
                               WHEELS=str(datasets / "hpacam-wheels"), CODE=str(datasets / "hpacam-code"),
                               MODELS=str(datasets / "hpacam-models"), IMAGES=str(root / "test" / "images"),
                               SAMPLE=str(root / "test" / "sample_submission.csv"), WORK=str(work),
                               OVERRIDES=["device=cpu"], INSTALL_TARGET=str(target))
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(work)}}).execute()
    return root, work, target, notebook


def test_the_notebook_writes_a_submission_in_the_sample_format(notebook_run):
    root, work, _, _ = notebook_run
    sample = read_submission(root / "test" / "sample_submission.csv")
    submission = read_submission(work / "submission.csv")
    assert submission["ID"].tolist() == sample["ID"].tolist()
    assert (submission[["ImageWidth", "ImageHeight"]].to_numpy() == sample[["ImageWidth", "ImageHeight"]].to_numpy()).all()
    for _, row in submission.iterrows():
        items = parse_prediction_string(row["PredictionString"], row["ID"])
        assert items and len(items) % NUM_CLASSES == 0, row["ID"]  # every segmented cell gets all 19 classes
        confidences = np.array([item.confidence for item in items])
        assert ((confidences >= 0) & (confidences <= 1)).all()
    sources = set(pd.read_csv(work / "submission.image_sources.csv")["source"])
    # every model of the models dataset took part: CAM, Keras (by its path in the dataset), cell model
    assert {"cam_models", "image_model:0-img/best.keras", "cells_max_cell_model"} <= sources, sources


def test_the_notebook_installed_offline_from_the_datasets(notebook_run):
    _, work, target, notebook = notebook_run
    printed = "".join(out.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                      for out in cell.get("outputs", []))
    assert f"from {target / 'hpacam' / '__init__.py'}" in printed  # the wheel from hpacam-code, not the source tree
    assert "packages: tinydep" in printed and (target / "tinydep" / "__init__.py").is_file()
    assert "3 rows, 3 with predictions" in printed
    log = (work / "submission.log.txt").read_text()
    assert "error" not in log.lower().replace("on_bad_image", ""), log[-2000:]
    assert json.loads((work.parent / "kaggle" / "hpacam-models" / "manifest.json").read_text())["files"]
