"""tta.combine: average the passes then activate (ours, the default) or activate each pass and sum
(the seed). Hand-computed values, then the device path of a real tiny CAM model."""

import math

import numpy as np
import pytest

from hpacam.cam.loading import load_cam_models
from hpacam.cam.tta import TTAConfig, combine_passes, predict_activated_maps, predict_maps
from hpacam.config import load_config
from hpacam.inference import InferenceConfig


def test_hand_computed_swish_and_relu():
    """Passes 2 and -2: their mean is 0, so swish(mean) = 0; swish(2) + swish(-2) = 2 tanh(1)."""
    passes = np.array([[[[2.0]]], [[[-2.0]]]])  # (P=2, C=1, 1, 1)
    assert combine_passes(passes, "swish", "mean_then_activate")[0, 0, 0] == pytest.approx(0.0)
    assert combine_passes(passes, "swish", "activate_then_sum")[0, 0, 0] == pytest.approx(2 * math.tanh(1.0), abs=1e-6)
    assert combine_passes(passes, "relu", "mean_then_activate")[0, 0, 0] == pytest.approx(0.0)
    assert combine_passes(passes, "relu", "activate_then_sum")[0, 0, 0] == pytest.approx(2.0)
    # Passes 1 and 3: swish(2) = 2 sigma(2) = 1.761594; sigma(1) + 3 sigma(3) = 0.731059 + 2.857722.
    passes = np.array([[[[1.0]]], [[[3.0]]]])
    assert combine_passes(passes, "swish", "mean_then_activate")[0, 0, 0] == pytest.approx(1.761594, abs=1e-6)
    assert combine_passes(passes, "swish", "activate_then_sum")[0, 0, 0] == pytest.approx(3.588781, abs=1e-6)


def test_the_default_stays_mean_then_activate_and_bad_values_are_refused():
    assert TTAConfig().combine == "mean_then_activate"
    assert load_config(InferenceConfig, None, ["tta.combine=activate_then_sum"]).tta.combine == "activate_then_sum"
    with pytest.raises(ValueError, match="tta.combine"):
        TTAConfig(combine="sum")


@pytest.fixture(scope="module")
def tiny_cam(tiny_cam_set):
    """A real (untrained, seeded) ResNet-10 CAM model from conftest's tiny checkpoints."""
    return load_cam_models([tiny_cam_set[0][0]])[0]


def test_device_path_matches_the_reference_on_a_real_model(tiny_cam):
    """2 scales x 4 flips = 8 passes: raw maps summed are 8x their mean; swish sums differ from both."""
    image = np.random.default_rng(0).random((48, 48, 4), dtype=np.float32)
    mean_cfg, seed_cfg = TTAConfig(scales=[1.0, 1.5]), TTAConfig(scales=[1.0, 1.5], combine="activate_then_sum")
    probs, raw = predict_maps(tiny_cam, image, mean_cfg)
    p_mean, act_mean, raw_mean = predict_activated_maps(tiny_cam, image, mean_cfg, "swish")
    p_seed, act_seed, raw_seed = predict_activated_maps(tiny_cam, image, seed_cfg, "raw")
    np.testing.assert_allclose(raw_mean, raw, rtol=1e-6)
    np.testing.assert_allclose(raw_seed, raw, rtol=1e-6)
    np.testing.assert_allclose(p_mean, probs, rtol=1e-6)
    np.testing.assert_allclose(p_seed, probs, rtol=1e-6)
    np.testing.assert_allclose(act_mean, raw / (1 + np.exp(-raw)), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(act_seed, 8 * raw, rtol=1e-4, atol=1e-5)
    _, swish_sum, _ = predict_activated_maps(tiny_cam, image, seed_cfg, "swish")
    assert not np.allclose(swish_sum, 8 * act_mean, rtol=1e-3)  # swish is not linear


def test_one_pass_gives_the_same_maps_both_ways(tiny_cam):
    image = np.random.default_rng(1).random((40, 40, 4), dtype=np.float32)
    one = dict(scales=[1.0], flips=False)
    _, mean_maps, _ = predict_activated_maps(tiny_cam, image, TTAConfig(**one), "swish")
    _, sum_maps, _ = predict_activated_maps(tiny_cam, image, TTAConfig(**one, combine="activate_then_sum"), "swish")
    np.testing.assert_allclose(sum_maps, mean_maps, rtol=1e-5, atol=1e-6)
