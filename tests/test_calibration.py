"""Calibration: the per-image sigmoid and the code-free gradient-boosting regressor."""

import json

import numpy as np
import pytest

from hpacam.regressor.calibration import (RegressorConfig, SigmoidCalibration, fit_regressor, load_regressor,
                                          save_regressor, sigmoid_calibrate, standardise_per_image)


def toy_data(n=600, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 3))
    x[rng.random(n) < 0.05, 2] = np.nan  # hist trees route missing values
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).astype(float)
    return x, y


@pytest.mark.parametrize("kind", ["hist", "classic"])
def test_numpy_trees_match_scikit_learn_and_survive_a_round_trip(tmp_path, kind):
    x, y = toy_data()
    if kind == "classic":
        x = np.nan_to_num(x)
    cfg = RegressorConfig(kind=kind, features=["sum", "mean", "area"], n_estimators=30, max_depth=3)
    regressor, model = fit_regressor(x, y, cfg, meta={"model": "cam-a"})
    expected = np.clip(model.predict((x - regressor.mean) / regressor.scale), 0, 1)
    np.testing.assert_allclose(regressor.predict(x), expected, rtol=1e-9, atol=1e-12)
    path = save_regressor(regressor, tmp_path / "reg.npz")
    loaded = load_regressor(path)
    np.testing.assert_array_equal(loaded.predict(x), regressor.predict(x))
    assert loaded.features == ["sum", "mean", "area"] and loaded.meta["model"] == "cam-a"
    assert not list(tmp_path.glob("*.tmp"))


def test_regressor_learns_the_mapping():
    x, y = toy_data(2000, seed=1)
    regressor, _ = fit_regressor(x, y, RegressorConfig(n_estimators=60, features=["sum", "mean", "area"]))
    xt, yt = toy_data(500, seed=2)
    from sklearn.metrics import roc_auc_score

    assert roc_auc_score(yt, regressor.predict(xt)) > 0.9


def test_unknown_feature_is_refused():
    x, y = toy_data(50)
    with pytest.raises(ValueError, match="unknown regressor features"):
        fit_regressor(x, y, RegressorConfig(features=["sum", "colour"]))


def test_pickled_or_crafted_files_are_refused(tmp_path):
    import pickle

    bad = tmp_path / "evil.npz"
    np.savez(bad, left=np.array([object()], dtype=object))  # an object array needs unpickling
    with pytest.raises(ValueError, match="code-free"):
        load_regressor(bad)
    (tmp_path / "pickle.npz").write_bytes(pickle.dumps({"x": 1}))
    with pytest.raises(ValueError, match="code-free"):
        load_regressor(tmp_path / "pickle.npz")
    meta = {"format_version": 1, "features": ["sum"], "baseline": 0.0, "compare_float32": False}
    cyclic = dict(left=np.array([0]), right=np.array([0]), feature=np.array([0]), threshold=np.zeros(1),
                  value=np.zeros(1), missing_left=np.zeros(1, bool), roots=np.array([0]), mean=np.zeros(1),
                  scale=np.ones(1), meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))
    np.savez(tmp_path / "cycle.npz", **cyclic)
    with pytest.raises(ValueError, match="inconsistent tree arrays"):
        load_regressor(tmp_path / "cycle.npz")


def test_per_image_sigmoid():
    values = np.array([[1.0, 2.0], [3.0, 10.0]])
    z = standardise_per_image(values)
    assert z.mean() == pytest.approx(0) and z.std() == pytest.approx(1)
    probs = sigmoid_calibrate(values, SigmoidCalibration(factor=2.0, shift=0.5))
    np.testing.assert_allclose(probs, 1 / (1 + np.exp(-2.0 * (z - 0.5))))
    robust = standardise_per_image(values, "robust")
    assert np.median(robust) == pytest.approx(0)
    assert np.all(standardise_per_image(np.ones((2, 3))) == 0)  # constant image: no division by zero
    assert sigmoid_calibrate(np.zeros((0, 19))).shape == (0, 19)
    # Scale-free: multiplying an image's intensities does not change its probabilities.
    np.testing.assert_allclose(sigmoid_calibrate(values * 1000), sigmoid_calibrate(values))


def saved_toy_regressor(tmp_path, **changes):
    """A fitted regressor's arrays, saved after `changes` (array name -> new array, or meta key -> value)."""
    x, y = toy_data(200)
    regressor, _ = fit_regressor(x, y, RegressorConfig(n_estimators=5, features=["sum", "mean", "area"]))
    good = save_regressor(regressor, tmp_path / "good.npz")
    with np.load(good) as data:
        arrays = {key: data[key] for key in data.files}
    meta = json.loads(arrays["meta"].tobytes())
    for key, value in changes.items():
        if key in arrays and key != "meta":
            arrays[key] = value
        else:
            meta[key] = value
    arrays["meta"] = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez(tmp_path / "bad.npz", **arrays)
    return tmp_path / "bad.npz"


@pytest.mark.parametrize("changes, message", [
    ({"value": np.full(40, np.nan)}, "array value holds NaN or infinite values"),
    ({"features": "sum"}, "meta.features must be a non-empty list of names, got 'sum'"),
    ({"features": ["sum", "colour", "area"]}, "meta.features names unknown features ['colour']"),
    ({"baseline": "0.5"}, "meta.baseline must be a finite number, got '0.5'"),
    ({"compare_float32": 1}, "meta.compare_float32 must be true or false"),
    ({"left": np.zeros(3)}, "array left is float64 of shape (3,); expected a 1-D integer array"),
    ({"scale": np.zeros(3)}, "the scaler needs 3 means and non-zero scales"),
])
def test_a_regressor_with_nan_leaves_or_metadata_of_the_wrong_type_is_refused_naming_the_file(tmp_path, changes, message):
    path = saved_toy_regressor(tmp_path, **changes)
    with pytest.raises(ValueError) as caught:
        load_regressor(path)
    assert str(caught.value).startswith(f"{path}: ") and message in str(caught.value)


def test_a_small_regressor_file_claiming_a_huge_array_is_refused_before_it_is_read(tmp_path):
    """512 MB of zeros compress to half a megabyte; the .npy header says so before any data is read."""
    import zipfile

    path = tmp_path / "bomb.npz"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        with archive.open("value.npy", "w", force_zip64=True) as fh:
            np.lib.format.write_array_header_1_0(fh, {"descr": "<f8", "fortran_order": False, "shape": (1 << 26,)})
            chunk = bytes(1 << 26)
            for _ in range(8):
                fh.write(chunk)
    assert path.stat().st_size < 2 << 20
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(ValueError, match=rf"{path.name}: its arrays would take 536870912 bytes, over the limit"):
        load_regressor(path)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50 << 10  # KB: refused, never inflated
