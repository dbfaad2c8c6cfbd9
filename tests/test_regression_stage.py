"""The regressor stage on a made-up intensity table: fit, held-out report, saved files."""

import numpy as np
import pandas as pd
import pytest

from hpacam.regressor.calibration import INTENSITY_COLUMNS, RegressorConfig, load_regressor
from hpacam.regressor.train import RegressorStageConfig, format_report, read_intensities, split_images, train_regressors


def make_table(n_images=40, cells=8, seed=0):
    """Cells whose intensity for a class is higher when they carry it, with per-image brightness."""
    rng = np.random.default_rng(seed)
    rows = []
    for image in range(n_images):
        brightness = rng.lognormal(0, 0.5)
        for cell in range(1, cells + 1):
            area = rng.integers(200, 800)
            for label in range(19):
                target = float(rng.random() < 0.2)
                mean = brightness * (0.2 + target + 0.3 * rng.random())
                rows.append((f"img{image}", cell, "cam/a", label, mean * area, mean, 0.5, area, int(cell == 1), target))
    return pd.DataFrame(rows, columns=INTENSITY_COLUMNS)


def test_regressor_is_fitted_reported_against_the_sigmoid_and_saved(tmp_path):
    make_table().to_csv(tmp_path / "int.csv", index=False)
    cfg = RegressorStageConfig(intensities=tmp_path / "int.csv", out_dir=tmp_path / "reg",
                               regressor=RegressorConfig(n_estimators=40))
    reports = train_regressors(cfg)
    report = reports["cam/a"]
    assert report["images"] == 10 and report["rows"] == 10 * 8 * 19
    assert report["mean_auc_regressor"] > 0.9
    # Brightness varies per image here, which is what the per-image standardisation removes.
    assert report["mean_auc_sigmoid"] > 0.9 and report["mean_auc_average"] > 0.9
    assert 0 < report["mae"] < 0.3
    assert load_regressor(tmp_path / "reg" / "cam_a.npz").features == cfg.regressor.features
    assert (tmp_path / "reg" / "cam_a_mapping.png").stat().st_size > 1000
    assert (tmp_path / "reg" / "report.json").is_file()
    assert "mean per-class ROC-AUC" in format_report(reports)


def test_split_is_by_image_and_seeded():
    images = np.repeat([f"i{k}" for k in range(20)], 5)
    held = split_images(images, 0.25, seed=3)
    assert held.sum() == 25 and len(set(images[held])) == 5
    assert not set(images[held]) & set(images[~held])
    np.testing.assert_array_equal(held, split_images(images, 0.25, seed=3))
    with pytest.raises(ValueError, match="too few"):
        split_images(np.array(["a", "a"]), 0.25, 0)


def test_bad_tables_are_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="extract_intensities"):
        read_intensities(tmp_path / "none.csv")
    table = make_table(2, 2)
    table.drop(columns=["area"]).to_csv(tmp_path / "a.csv", index=False)
    with pytest.raises(ValueError, match=r"a\.csv: missing columns \['area'\]"):
        read_intensities(tmp_path / "a.csv")
    table.assign(target=2.0).to_csv(tmp_path / "b.csv", index=False)
    with pytest.raises(ValueError, match="targets"):
        read_intensities(tmp_path / "b.csv")


def test_the_script_logs_its_report_and_errors_to_the_run_folder(tmp_path, restore_root_logging):
    import runpy
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "train-gradboost-regressor" / "train_grad_boost.py"
    main = runpy.run_path(str(script))["main"]
    make_table(12, 4).to_csv(tmp_path / "int.csv", index=False)
    assert main([f"intensities={tmp_path / 'int.csv'}", f"out_dir={tmp_path / 'reg'}",
                 "regressor.n_estimators=20"]) == 0
    log_text = (tmp_path / "reg" / "log.txt").read_text()
    assert "model cam/a: fitting on" in log_text and "mean per-class ROC-AUC" in log_text

    assert main([f"intensities={tmp_path / 'none.csv'}", f"out_dir={tmp_path / 'bad'}"]) == 1
    assert "none.csv" in (tmp_path / "bad" / "log.txt").read_text()


def test_an_output_folder_that_cannot_be_made_is_one_line_naming_it(tmp_path, capsys):
    import runpy
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "train-gradboost-regressor" / "train_grad_boost.py"
    main = runpy.run_path(str(script))["main"]
    make_table(12, 4).to_csv(tmp_path / "int.csv", index=False)
    (tmp_path / "taken").write_text("a file where the output folder should go")
    assert main([f"intensities={tmp_path / 'int.csv'}", f"out_dir={tmp_path / 'taken'}"]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'taken'}: cannot write the regressor's output folder" in err and "Traceback" not in err
