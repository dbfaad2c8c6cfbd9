"""tools/kaggle_datasets.py (make kaggle-datasets): the three offline datasets, built for real from a
local wheel and sdist (no network), tiny CAM checkpoints and a written config; bad input leaves nothing."""

import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from hpacam.config import load_config
from hpacam.inference import InferenceConfig

REPO = Path(__file__).resolve().parents[1]
TOOL = REPO / "tools" / "kaggle_datasets.py"


def make_tiny_project(root: Path, name: str) -> Path:
    """A one-module setuptools project (pure Python), built offline with the venv's setuptools."""
    (root / "src" / name).mkdir(parents=True)
    (root / "src" / name / "__init__.py").write_text("VALUE = 42\n")
    (root / "pyproject.toml").write_text('[build-system]\nrequires = ["setuptools>=61"]\n'
                                         'build-backend = "setuptools.build_meta"\n'
                                         f'[project]\nname = "{name}"\nversion = "1.0"\n')
    return root


@pytest.fixture(scope="session")
def local_index(tmp_path_factory):
    """A --find-links folder holding a wheel (tinywheel) and an sdist only (tinysdist)."""
    root = tmp_path_factory.mktemp("local_index")
    links = root / "links"
    wheel_project = make_tiny_project(root / "tinywheel", "tinywheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
                    "-w", str(links), str(wheel_project)], check=True, capture_output=True)
    sdist_project = make_tiny_project(root / "tinysdist", "tinysdist")
    subprocess.run([sys.executable, "-c", f"from setuptools import build_meta; build_meta.build_sdist({str(links)!r})"],
                   cwd=sdist_project, check=True, capture_output=True)
    return links


def run_tool(*args: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(TOOL), *args], capture_output=True, text=True, cwd=cwd, timeout=600,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})


def assert_manifest_matches(folder: Path) -> dict:
    manifest = json.loads((folder / "manifest.json").read_text())
    listed = {entry["name"] for entry in manifest["files"]}
    on_disk = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - {"manifest.json"}
    assert listed == on_disk
    for entry in manifest["files"]:
        data = (folder / entry["name"]).read_bytes()
        assert len(data) == entry["bytes"] and hashlib.sha256(data).hexdigest() == entry["sha256"]
    return manifest


def write_config(path: Path, checkpoints, regressor: Path | None = None) -> Path:
    lines = ["cam_models:"]
    for checkpoint in checkpoints:
        lines += [f"  - checkpoint: {checkpoint}"] + ([f"    regressor: {regressor}"] if regressor else [])
    path.write_text("\n".join(lines + ["tta:", "  scales: [1.0]", ""]))
    return path


def test_wheels_code_and_models_are_built_with_manifests(tmp_path, local_index, tiny_cam_set):
    checkpoints, _ = tiny_cam_set
    config = write_config(tmp_path / "inference.yaml", checkpoints)
    out = tmp_path / "out"
    done = run_tool("--out", str(out), "--config", str(config), "--packages", "tinywheel", "tinysdist",
                    "--no-index", "--find-links", str(local_index))
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == ["hpacam-code", "hpacam-models", "hpacam-wheels"]

    wheels = assert_manifest_matches(out / "hpacam-wheels")
    assert wheels["packages"] == ["tinywheel", "tinysdist"]
    assert sorted(p.name for p in (out / "hpacam-wheels").glob("*.whl")) == [
        "tinysdist-1.0-py3-none-any.whl", "tinywheel-1.0-py3-none-any.whl"]  # the sdist became a wheel
    assert not list((out / "hpacam-wheels").glob("*.tar.gz"))

    code = out / "hpacam-code"
    assert_manifest_matches(code)
    (wheel,) = (code / "wheels").glob("hpacam-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "hpacam/inference.py" in names and "hpacam/synth/label_stats.json" in names
    assert (code / "inference" / "inference.py").is_file() and (code / "notebooks" / "kaggle_inference.ipynb").is_file()
    assert not (REPO / "build" / "lib" / "hpacam").exists()  # built from a copy, not in the source tree

    models = out / "hpacam-models"
    assert_manifest_matches(models)
    cfg = load_config(InferenceConfig, models / "inference.yaml")
    assert [str(e.checkpoint) for e in cfg.cam_models] == ["cam/0-cam1/best.pt", "cam/1-cam2/best.pt"]
    for entry, source in zip(cfg.cam_models, checkpoints):
        assert (models / entry.checkpoint).read_bytes() == Path(source).read_bytes()
    assert cfg.tta.scales == [1.0] and str(cfg.segmentation.cache.dir) == "masks"
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_default_packages_are_the_requirements_without_the_test_tools():
    sys.path.insert(0, str(REPO / "tools"))
    try:
        from kaggle_datasets import default_packages
    finally:
        sys.path.remove(str(REPO / "tools"))
    packages = default_packages(REPO / "requirements.txt")
    assert "torch==2.14.1" in packages and "keras==3.15.1" in packages
    assert not [p for p in packages if p.split("==")[0] in ("pytest", "hypothesis", "nbclient", "nbformat", "ipykernel")]


def assert_failed_leaving_nothing(done: subprocess.CompletedProcess, out: Path, message: str) -> None:
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [f"kaggle_datasets: error: {message}"], done.stderr
    assert not out.exists() or not list(out.iterdir())


def test_a_missing_regressor_names_the_file_and_nothing_is_written(tmp_path, local_index, tiny_cam_set):
    checkpoints, _ = tiny_cam_set
    missing = tmp_path / "reg" / "absent.npz"
    config = write_config(tmp_path / "inference.yaml", checkpoints[:1], missing)
    out = tmp_path / "out"
    done = run_tool("--out", str(out), "--config", str(config), "--packages", "tinywheel", "--no-index",
                    "--find-links", str(local_index))
    assert_failed_leaving_nothing(done, out, f"{missing}: not found (cam_models[0].regressor)")


def test_a_damaged_checkpoint_names_the_file(tmp_path, tiny_cam_set):
    checkpoints, _ = tiny_cam_set
    damaged = tmp_path / "run" / "best.pt"
    damaged.parent.mkdir()
    damaged.write_bytes(Path(checkpoints[0]).read_bytes()[:-200])  # a copy cut short, as by a failed upload
    out = tmp_path / "out"
    done = run_tool("--out", str(out), "--only", "models", "--config", str(write_config(tmp_path / "c.yaml", [damaged])))
    assert done.returncode == 1 and done.stderr.startswith(f"kaggle_datasets: error: {damaged}: damaged or not a model file")
    assert not list(out.iterdir())


def test_a_package_pip_cannot_get_fails_and_an_existing_dataset_is_kept(tmp_path, local_index):
    out = tmp_path / "out"
    done = run_tool("--out", str(out), "--only", "wheels", "--packages", "nosuchpackage-hpacam", "--no-index",
                    "--find-links", str(local_index))
    assert done.returncode == 1 and "packages nosuchpackage-hpacam: pip download failed" in done.stderr
    assert not list(out.iterdir())
    (out / "hpacam-wheels").mkdir()
    done = run_tool("--out", str(out), "--only", "wheels", "--packages", "tinywheel", "--no-index",
                    "--find-links", str(local_index))
    assert_failed_leaving_nothing(done, out / "hpacam-wheels", f"{out / 'hpacam-wheels'}: already exists; "
                                  "remove it or choose another --out")
