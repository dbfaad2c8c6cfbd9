"""Build the three Kaggle datasets of docs/kaggle-inference.md, for an offline inference notebook.

    python tools/kaggle_datasets.py --out data/kaggle --config data/demo/inference.yaml
    make kaggle-datasets KAGGLE_CONFIG=data/demo/inference.yaml KAGGLE_OUT=data/kaggle

Writes, under --out:
  hpacam-wheels/  wheels for `pip install --no-index --find-links` (`pip download`, once, from the
                  registry; sdists are built into wheels here), with manifest.json
  hpacam-code/    wheels/hpacam-*.whl (`pip wheel --no-deps`), the stage scripts, configs and
                  notebooks, with manifest.json
  hpacam-models/  every model file the inference config names (CAM checkpoints, regressors, Keras
                  models with the config.yaml beside each, cell models, segmenter weights) and
                  inference.yaml naming them by paths relative to this folder, with manifest.json

Each manifest lists every file with its size and sha256. The package list is a parameter
(--packages, or --requirements FILE); the default is requirements.txt without the test tools.
Everything is built in a temporary folder under --out and renamed into place at the end, so a
failure (a missing or damaged model file, a package pip cannot get) leaves nothing behind; an
existing dataset folder is never overwritten. Bad input: one line naming the file, exit 1.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PARTS = {"wheels": "hpacam-wheels", "code": "hpacam-code", "models": "hpacam-models"}
# Needed to test hpacam, not to run inference: left out of the default wheels.
TEST_TOOLS = frozenset({"pytest", "hypothesis", "nbclient", "nbformat", "ipykernel"})
# Copied into the code dataset beside the wheel: what a notebook runs or reads from the source tree.
CODE_FOLDERS = ("inference", "train-cam-model", "train-cell-model", "train-gradboost-regressor",
                "train-image-level-model", "configs", "notebooks", "tools")
CODE_FILES = ("requirements.txt", "README.md")
ZIP_SUFFIXES = (".pt", ".pth", ".keras", ".npz")  # torch.save, Keras 3 and numpy write zip archives
MODEL_CONFIG = "inference.yaml"


class DatasetError(Exception):
    """Bad input to the builder: the message names the file or package."""


@dataclass
class WheelOptions:
    """What `pip download` is asked for: packages and where/for which interpreter to get them."""

    packages: list[str]
    find_links: list[str] = field(default_factory=list)
    no_index: bool = False
    no_deps: bool = False
    python_version: str = ""
    platform: str = ""

    def pip_args(self) -> list[str]:
        """pip's own flags; a foreign interpreter or platform needs binary wheels only."""
        args = [arg for link in self.find_links for arg in ("--find-links", link)]
        args += ["--no-index"] if self.no_index else []
        args += ["--no-deps"] if self.no_deps else []
        args += ["--python-version", self.python_version] if self.python_version else []
        args += ["--platform", self.platform] if self.platform else []
        if self.python_version or self.platform:
            args += ["--only-binary=:all:"]
        return args


# ----------------------------------------------------------------------------- manifests


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: Path, **about) -> Path:
    """manifest.json: every file under `folder` (relative path, bytes, sha256) and what it was built from.

    A notebook (or a person) can check a dataset against it after Kaggle unpacked it.
    """
    files = [{"name": p.relative_to(folder).as_posix(), "bytes": p.stat().st_size, "sha256": sha256_of(p)}
             for p in sorted(folder.rglob("*")) if p.is_file()]
    path = folder / "manifest.json"
    path.write_text(json.dumps({**about, "files": files}, indent=1) + "\n")
    return path


# ----------------------------------------------------------------------------- wheels


def default_packages(requirements: Path) -> list[str]:
    """The requirement lines of `requirements` (comments and test tools dropped)."""
    if not requirements.is_file():
        raise DatasetError(f"{requirements}: requirements file not found")
    packages = []
    for number, line in enumerate(requirements.read_text().splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name = re.split(r"[\s<>=!~\[;]", line, maxsplit=1)[0].lower().replace("_", "-")
        if not name:
            raise DatasetError(f"{requirements}:{number}: not a requirement: {line!r}")
        if name not in TEST_TOOLS:
            packages.append(line)
    return packages


def run_pip(args: list[str], what: str) -> None:
    """Run pip in this interpreter; its last error line becomes a DatasetError naming `what`."""
    done = subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)
    if done.returncode:
        lines = [line.strip() for line in done.stderr.splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("ERROR")] or lines or [f"exit {done.returncode}"]
        raise DatasetError(f"{what}: pip {args[0]} failed: {errors[0]}")


def build_wheels(folder: Path, options: WheelOptions) -> None:
    """`pip download` the packages, then turn any sdist into a wheel so installs need no build step."""
    folder.mkdir(parents=True)
    if not options.packages:
        raise DatasetError("no packages to download (--packages or --requirements is empty)")
    # --no-build-isolation: an sdist's metadata is read with this environment's setuptools, so a
    # local --no-index build needs no index either.
    run_pip(["download", "--dest", str(folder), "--progress-bar", "off", "--disable-pip-version-check",
             "--no-build-isolation",
             *options.pip_args(), *options.packages], f"packages {' '.join(options.packages)}")
    for sdist in sorted(folder.glob("*.tar.gz")) + sorted(folder.glob("*.zip")):
        run_pip(["wheel", "--no-deps", "--no-build-isolation", "--no-index", "--wheel-dir", str(folder),
                 "--disable-pip-version-check", str(sdist)], str(sdist.name))
        sdist.unlink()
    write_manifest(folder, dataset="hpacam-wheels", packages=options.packages, pip_options=options.pip_args())


# ----------------------------------------------------------------------------- code


def build_code(folder: Path, repo: Path = REPO) -> None:
    """A wheel of hpacam (built from a copy, so the source tree gets no build/ folder) + the scripts."""
    folder.mkdir(parents=True)
    with tempfile.TemporaryDirectory(prefix="hpacam-wheel-") as scratch:
        source = Path(scratch) / "src"
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
        shutil.copytree(repo / "hpacam", source / "hpacam", ignore=ignore)
        for name in ("pyproject.toml", "README.md"):
            shutil.copy2(repo / name, source / name)
        run_pip(["wheel", "--no-deps", "--no-build-isolation", "--no-index", "--wheel-dir", str(folder / "wheels"),
                 "--disable-pip-version-check", str(source)], f"{repo}: the hpacam wheel")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints")
    for name in CODE_FOLDERS:
        if (repo / name).is_dir():
            shutil.copytree(repo / name, folder / name, ignore=ignore)
    for name in CODE_FILES:
        shutil.copy2(repo / name, folder / name)
    write_manifest(folder, dataset="hpacam-code", source=str(repo))


# ----------------------------------------------------------------------------- models


def check_model_file(path: Path, key: str) -> Path:
    """The file exists, is not empty and, for the zip-based formats, is a whole zip archive."""
    if not path.is_file():
        raise DatasetError(f"{path}: not found ({key})")
    if path.stat().st_size == 0:
        raise DatasetError(f"{path}: empty file ({key})")
    if path.suffix in ZIP_SUFFIXES:
        try:
            with zipfile.ZipFile(path) as archive:
                broken = archive.testzip()
        except (zipfile.BadZipFile, OSError) as exc:
            raise DatasetError(f"{path}: damaged or not a model file ({key}: {exc})") from None
        if broken is not None:
            raise DatasetError(f"{path}: damaged archive, member {broken} fails its CRC ({key})")
    return path


class ModelCopier:
    """Copies model files into the models folder and returns the path to write in the config."""

    def __init__(self, folder: Path):
        self.folder = folder

    def copy(self, source: Path, dest_dir: str, key: str) -> Path:
        """Copy `source` to folder/dest_dir/ (after checking it); the relative path for the config."""
        check_model_file(Path(source), key)
        relative = Path(dest_dir) / Path(source).name
        (self.folder / dest_dir).mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, self.folder / relative)
        return relative


def run_name(path: Path, index: int) -> str:
    """A folder name per model: its index (names may repeat across runs) and its run folder's name."""
    parent = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(path).resolve().parent.name) or "model"
    return f"{index}-{parent}"


def build_models(folder: Path, config_path: Path) -> None:
    """Copy what `config_path` names, and write it again with paths relative to `folder`.

    Relative paths in the given config are read from the current folder, as inference reads them.
    """
    from hpacam.config import ConfigError, load_config, save_config
    from hpacam.inference import InferenceConfig

    if not Path(config_path).is_file():
        raise DatasetError(f"{config_path}: inference config not found")
    try:
        cfg = load_config(InferenceConfig, config_path)
    except ConfigError as exc:
        raise DatasetError(str(exc)) from None
    for key in ("cells_dir", "oracle_image_labels"):
        if getattr(cfg, key) is not None:
            raise DatasetError(f"{config_path}: {key} is an oracle setting; a Kaggle models dataset cannot carry it")
    if not (cfg.cam_models or cfg.cell_models):
        raise DatasetError(f"{config_path}: names no CAM or cell model")
    folder.mkdir(parents=True)
    copier = ModelCopier(folder)
    copy_cam_models(cfg, copier)
    copy_image_models(cfg, copier)
    for i, entry in enumerate(cfg.cell_models):
        entry.checkpoint = copier.copy(entry.checkpoint, f"cell/{run_name(entry.checkpoint, i)}",
                                       f"cell_models[{i}].checkpoint")
    for key in ("nuclei_model", "cell_model"):
        source = getattr(cfg.segmentation.hpa, key)
        if source is not None:
            setattr(cfg.segmentation.hpa, key, copier.copy(source, "segmentation", f"segmentation.hpa.{key}"))
    cfg.segmentation.cache.dir = Path("masks")  # the notebook points it at a writable folder
    save_config(cfg, folder / MODEL_CONFIG)
    write_manifest(folder, dataset="hpacam-models", config=str(config_path))


def copy_cam_models(cfg, copier: ModelCopier) -> None:
    """Each CAM checkpoint with its regressor, in a folder of its own."""
    for i, entry in enumerate(cfg.cam_models):
        dest = f"cam/{run_name(entry.checkpoint, i)}"
        entry.checkpoint = copier.copy(entry.checkpoint, dest, f"cam_models[{i}].checkpoint")
        if entry.regressor is not None:
            entry.regressor = copier.copy(entry.regressor, dest, f"cam_models[{i}].regressor")


def copy_image_models(cfg, copier: ModelCopier) -> None:
    """Each Keras model with the config.yaml beside it, where inference reads its colour mode."""
    for i, entry in enumerate(cfg.image_models):
        dest, key = f"image/{run_name(entry.model, i)}", f"image_models[{i}].model"
        beside = Path(entry.model).with_name("config.yaml")
        if entry.color_mode is None and not beside.is_file():
            raise DatasetError(f"{beside}: not found; inference reads {key}'s colour mode from it "
                               f"(or set image_models[{i}].color_mode)")
        source = entry.model
        entry.model = copier.copy(source, dest, key)
        if beside.is_file():
            copier.copy(beside, dest, f"{key} config.yaml")


# ----------------------------------------------------------------------------- the command


def build_all(out: Path, parts: list[str], options: WheelOptions | None, config: Path | None) -> list[Path]:
    """Build the chosen datasets in a temporary folder under `out`, then rename each into place."""
    targets = [out / PARTS[part] for part in parts]
    for target in targets:
        if target.exists():
            raise DatasetError(f"{target}: already exists; remove it or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=".kaggle-datasets.", dir=out))
    renamed: list[Path] = []
    try:
        for part in parts:
            if part == "wheels":
                build_wheels(scratch / PARTS[part], options)
            elif part == "code":
                build_code(scratch / PARTS[part])
            else:
                build_models(scratch / PARTS[part], config)
        for part, target in zip(parts, targets):
            (scratch / PARTS[part]).rename(target)
            renamed.append(target)
    except BaseException:
        for target in renamed:  # a later rename failed: take back the earlier ones, all or nothing
            shutil.rmtree(target, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return targets


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder to write the datasets into")
    parser.add_argument("--config", type=Path, help="inference config naming the models (for hpacam-models)")
    parser.add_argument("--only", default="wheels,code,models",
                        help="comma-separated subset of wheels, code, models (default: all three)")
    parser.add_argument("--packages", nargs="+", help="requirement specs to download (default: --requirements)")
    parser.add_argument("--requirements", type=Path, default=REPO / "requirements.txt",
                        help="requirements file whose lines (without the test tools) are downloaded")
    parser.add_argument("--find-links", action="append", default=[], help="passed to pip download")
    parser.add_argument("--no-index", action="store_true", help="passed to pip download (with --find-links)")
    parser.add_argument("--no-deps", action="store_true", help="download the packages alone, not their dependencies")
    parser.add_argument("--python-version", default="", help="the notebook's Python, e.g. 3.11 (binary wheels only)")
    parser.add_argument("--platform", default="", help="e.g. manylinux2014_x86_64 (binary wheels only)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        parts = [part.strip() for part in args.only.split(",") if part.strip()]
        unknown = sorted(set(parts) - set(PARTS))
        if unknown or not parts:
            raise DatasetError(f"--only {args.only!r}: expected a comma-separated subset of {', '.join(PARTS)}")
        if "models" in parts and args.config is None:
            raise DatasetError("--config is required to build hpacam-models (or leave models out of --only)")
        options = None
        if "wheels" in parts:
            packages = args.packages if args.packages else default_packages(args.requirements)
            options = WheelOptions(packages, args.find_links, args.no_index, args.no_deps,
                                   args.python_version, args.platform)
        for target in build_all(args.out, parts, options, args.config):
            print(target)
    except DatasetError as exc:
        print(f"kaggle_datasets: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
