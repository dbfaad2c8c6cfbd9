"""The stage scripts' configs: checked when read (before torch), refused clearly, listed by --help."""

import ast
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from hpacam.cam.config import TrainCamConfig
from hpacam.config import ConfigCheckError, ConfigError, config_keys, load_config
from hpacam.devices import check_device, resolve_device
from hpacam.inference import InferenceConfig

REPO = Path(__file__).resolve().parents[1]


def script_configs() -> dict[str, type]:
    from hpacam.cellmodel.config import TrainCellConfig
    from hpacam.regressor.extraction import ExtractConfig
    from hpacam.regressor.train import RegressorStageConfig
    from hpacam.tf.config import ImgTrainConfig

    return {"train-cam-model/train_cam.py": TrainCamConfig, "train-cell-model/train_cell.py": TrainCellConfig,
            "train-gradboost-regressor/extract_intensities.py": ExtractConfig,
            "train-gradboost-regressor/train_grad_boost.py": RegressorStageConfig,
            "train-image-level-model/make_tfrecords.py": ImgTrainConfig,
            "train-image-level-model/train_img.py": ImgTrainConfig, "inference/inference.py": InferenceConfig}


SCRIPTS = sorted(script_configs())


def load_script(relative: str):
    spec = importlib.util.spec_from_file_location(f"script_{Path(relative).stem}", REPO / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------- checks when read


def test_cross_field_checks_run_when_the_config_is_read():
    with pytest.raises(ConfigCheckError, match=r"data.image_size=100 must be a multiple of 32"):
        load_config(TrainCamConfig, None, ["data.image_size=100"])
    with pytest.raises(ConfigCheckError, match=r"data.fold=5 must be -1 or in 0..4"):
        load_config(TrainCamConfig, None, ["data.fold=5"])


def test_checks_see_the_finished_config_not_each_override_alone():
    # after the first override alone 640 is no multiple of 3 x 16; the finished config is valid
    cfg = load_config(TrainCamConfig, None, ["loss.num_pieces=9", "data.image_size=480"])
    assert (cfg.loss.num_pieces, cfg.data.image_size) == (9, 480)


def test_a_recipe_file_with_mismatched_values_fails_naming_the_file(tmp_path):
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(yaml.safe_dump({"data": {"image_size": 100}}))
    with pytest.raises(ConfigCheckError, match=rf"{re.escape(str(recipe))}: data.image_size=100"):
        load_config(TrainCamConfig, recipe)


def test_train_cam_refuses_a_bad_size_before_importing_torch():
    code = ("import runpy, sys\n"
            f"sys.argv = ['train_cam.py', 'data.image_size=100']\n"
            "try:\n"
            f"    runpy.run_path({str(REPO / 'train-cam-model/train_cam.py')!r}, run_name='__main__')\n"
            "except SystemExit as exc:\n"
            "    print('exit', exc.code, 'torch' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO)})
    assert done.stdout.split() == ["exit", "1", "False"], done.stderr[-2000:]
    assert "data.image_size=100 must be a multiple of 32" in done.stderr


# ----------------------------------------------------------------------------- refusals


def test_a_number_for_an_optional_text_setting_is_refused_saying_how_to_quote_it():
    with pytest.raises(ConfigError, match=r"train.resume: expected text or null, got the number 123; quote it"):
        load_config(TrainCamConfig, None, ["train.resume=123"])
    with pytest.raises(ConfigError, match=r"got the boolean True; .*key='\"true\"'"):
        load_config(TrainCamConfig, None, ["train.resume=true"])
    assert load_config(TrainCamConfig, None, ['train.resume="123"']).train.resume == "123"
    assert load_config(TrainCamConfig, None, ["train.resume=null"]).train.resume is None


def test_an_empty_cache_folder_is_refused_not_read_as_the_current_folder(tmp_path):
    with pytest.raises(ConfigError, match=r"segmentation.cache.dir: empty path"):
        load_config(InferenceConfig, None, ["segmentation.cache.dir="])
    recipe = tmp_path / "inference.yaml"
    recipe.write_text("segmentation:\n  cache:\n    dir: ''\n")
    with pytest.raises(ConfigError, match=r"inference.yaml.segmentation.cache.dir: empty path"):
        load_config(InferenceConfig, recipe)


# ----------------------------------------------------------------------------- --help


@pytest.mark.parametrize("script", SCRIPTS)
def test_help_lists_every_config_key_with_its_default(script, capsys):
    with pytest.raises(SystemExit) as exit_info:
        load_script(script).main(["--help"])
    assert exit_info.value.code == 0
    listed = dict(re.findall(r"^  (\S+) += (.*?)  \(.*\)$", capsys.readouterr().out, re.M))
    expected = {key: default for key, _, default in config_keys(script_configs()[script])}
    assert listed == expected


def test_help_shows_the_defaults_of_the_config_not_of_its_section_classes(capsys):
    with pytest.raises(SystemExit):
        load_script("train-cell-model/train_cell.py").main(["--help"])
    out = capsys.readouterr().out
    assert re.search(r"^  data.image_size += 64  \(int\)$", out, re.M)  # the cell config's crops, not 640
    assert "train.lr" not in out  # the old example named a key that does not exist


@pytest.mark.parametrize("script", SCRIPTS)
def test_the_usage_examples_name_keys_that_exist(script):
    doc = ast.get_docstring(ast.parse((REPO / script).read_text()))
    named = set(re.findall(r"(?<![-\w.])([a-z_]+(?:\.[a-z_]+)*)=", doc)) - {"key.sub"}
    keys = {key for key, _, _ in config_keys(script_configs()[script])}
    assert named <= keys


# ----------------------------------------------------------------------------- devices


def test_one_device_resolver_for_every_stage():
    import hpacam.cam.train
    import hpacam.cam.tta
    import hpacam.inference
    import hpacam.segmentation.hpa
    import torch

    for module in (hpacam.inference, hpacam.cam.train, hpacam.cam.tta, hpacam.segmentation.hpa):
        assert module.resolve_device is resolve_device
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="train.device='gpu' is not a device"):
        resolve_device("gpu", "train.device")
    with pytest.raises(ValueError, match="is not a device"):
        check_device("device", "cuda:x")


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="needs a machine without CUDA")
def test_a_cuda_device_without_cuda_is_refused_naming_the_key():
    with pytest.raises(ValueError, match=r"segmentation.hpa.device=cuda:1 but CUDA is not available"):
        resolve_device("cuda:1", "segmentation.hpa.device")


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_config_a_script_docstring_cites_exists_and_loads_with_its_config(script):
    """A user copies the docstring's command line first: the recipe it names must be there and valid."""
    doc = ast.get_docstring(ast.parse((REPO / script).read_text()))
    for cited in re.findall(r"configs/[\w./-]+\.yaml", doc):
        assert (REPO / cited).is_file(), f"{script} cites {cited}, which does not exist"
        load_config(script_configs()[script], REPO / cited)
