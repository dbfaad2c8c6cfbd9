"""`python -m hpacam.segmentation`: a folder in, 16-bit label PNGs and border.csv out, through the cache."""

import subprocess
import sys

import cv2
import numpy as np
import pandas as pd
import pytest

from hpacam.segmentation import cli
from hpacam.segmentation.quality import compare_folders


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from hpacam.synth import generate_dataset

    out = tmp_path_factory.mktemp("synth")
    generate_dataset(out, n_images=3, image_sizes=[384, 448], seed=21, progress=False)
    return out


def run(dataset, out, *extra):
    return cli.main(["--images", str(dataset / "images"), "--out", str(out), "--cache-dir", str(out.parent / "masks"),
                     *extra])


def test_segments_a_folder_in_parallel_like_the_truth_format(dataset, tmp_path):
    out = tmp_path / "pred"
    assert run(dataset, out, "--workers", "2", "--with-nuclei") == 0
    ids = sorted(p.stem for p in (dataset / "cells").glob("*.png"))
    assert sorted(p.stem for p in out.glob("*.png")) == ids
    for image_id in ids:
        pred = cv2.imread(str(out / f"{image_id}.png"), cv2.IMREAD_UNCHANGED)
        truth = cv2.imread(str(dataset / "cells" / f"{image_id}.png"), cv2.IMREAD_UNCHANGED)
        assert pred.dtype == truth.dtype == np.uint16 and pred.shape == truth.shape
        assert (out / "nuclei" / f"{image_id}.png").is_file()
    assert compare_folders(dataset / "cells", out).recall >= 0.9
    border = pd.read_csv(out / "border.csv")
    assert list(border.columns) == list(cli.BORDER_COLUMNS)
    assert set(border.image_id) == set(ids)
    assert len(border) == sum(int(cv2.imread(str(out / f"{i}.png"), cv2.IMREAD_UNCHANGED).max()) for i in ids)


def test_second_run_reuses_the_cache_and_gives_the_same_files(dataset, tmp_path, monkeypatch):
    first, second = tmp_path / "first", tmp_path / "second"
    assert run(dataset, first, "--workers", "1") == 0
    from hpacam.segmentation import classic

    def refuse(*args, **kwargs):
        raise AssertionError("segmented again despite the cache")

    monkeypatch.setattr(classic.ClassicBackend, "label", refuse)
    assert run(dataset, second, "--workers", "1") == 0
    for path in first.glob("*.png"):
        assert path.read_bytes() == (second / path.name).read_bytes()


def test_errors_name_the_file_and_the_other_images_still_finish(dataset, tmp_path, caplog):
    images = tmp_path / "images"
    images.mkdir()
    for path in (dataset / "images").iterdir():
        (images / path.name).write_bytes(path.read_bytes())
    broken = sorted(images.glob("*_blue.png"))[0]
    broken.write_bytes(b"\x89PNG truncated")
    out = tmp_path / "pred"
    code = cli.main(["--images", str(images), "--out", str(out), "--no-cache", "--workers", "2"])
    assert code == 1
    assert broken.name in caplog.text
    assert len(list(out.glob("*.png"))) == 2  # the other two images


def test_config_overrides_reach_the_backend_and_bad_keys_fail_fast(dataset, tmp_path, capsys):
    out = tmp_path / "pred"
    assert run(dataset, out, "--workers", "1", "segmentation.classic.work_size=256") == 0
    settings_files = list((tmp_path / "masks").glob("classic-*/settings.json"))
    assert len(settings_files) == 1 and '"work_size": 256' in settings_files[0].read_text()
    with pytest.raises(SystemExit):
        run(dataset, out, "segmentation.classic.no_such_key=1")
    assert "no_such_key" in capsys.readouterr().err


def test_hpa_backend_without_weights_fails_before_any_work(dataset, tmp_path, caplog):
    assert run(dataset, tmp_path / "pred", "segmentation.backend=hpa") == 2
    assert "segmentation.hpa.nuclei_model" in caplog.text and "never downloads" in caplog.text
    assert not (tmp_path / "pred").exists()


def test_module_entry_point_runs(dataset, tmp_path):
    result = subprocess.run([sys.executable, "-m", "hpacam.segmentation", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--images" in result.stdout and "--workers" in result.stdout


def test_shipped_configs_load_and_the_classic_one_spells_out_the_defaults():
    from pathlib import Path

    from hpacam.config import load_config
    from hpacam.segmentation.settings import SegmentRunConfig

    configs = Path(__file__).resolve().parents[1] / "configs" / "segmentation"
    assert load_config(SegmentRunConfig, configs / "classic.yaml") == SegmentRunConfig()
    hpa_cfg = load_config(SegmentRunConfig, configs / "hpa.yaml").segmentation
    assert hpa_cfg.backend == "hpa" and not hpa_cfg.hpa.trust_weights
