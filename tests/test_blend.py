"""The blend is the method: calibration, cell probabilities, image probabilities and final confidences.

Small arrays with values worked out by hand in each test, so a change of arithmetic shows here
and not only as a few points of end-to-end mAP. The last tests run `image_evidence` over two
tiny real CAM models and two image models of different weights.
"""

import math

import numpy as np
import pandas as pd
import pytest

from hpacam.cam.tta import TTAConfig
from hpacam.classes import NUM_CLASSES
from hpacam.inference import (BlendConfig, CamModelEntry, ImageEvidence, InferenceConfig, LoadedImageModel,
                              blended_image_probs, cell_probabilities, combine, final_confidences, image_evidence,
                              load_models, weighted_mean)
from hpacam.regressor.calibration import (CalibrationRegressor, SigmoidCalibration, TreeEnsemble,
                                          sigmoid_calibrate, sigmoid_per_image, standardise_per_image)
from hpacam.segmentation import SegmentationConfig, Segmenter
from hpacam.segmentation.settings import CacheSettings


def sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def evidence(cam=(0.4, 0.0), keras=None, sigmoid_probs=((0.2, 0.4),), regressor=None, standing=((1.0, 0.0),),
             border=None, cell_model=None) -> ImageEvidence:
    """Two-class evidence of an image with one cell per row of `sigmoid_probs`."""
    cells = len(sigmoid_probs)
    as_array = (lambda values: None if values is None else np.asarray(values, dtype=np.float64))
    return ImageEvidence("img", 8, 8, {cell + 1: f"mask{cell + 1}" for cell in range(cells)}, as_array(cam),
                         as_array(keras), None, as_array(sigmoid_probs), as_array(regressor), as_array(standing),
                         np.zeros(cells, bool) if border is None else np.asarray(border), cell_model=as_array(cell_model))


# ----------------------------------------------------------------------------- calibration


def test_weighted_mean_normalises_the_weights():
    assert weighted_mean([np.array([1.0, 2.0]), np.array([3.0, 6.0])], [1, 3]).tolist() == [2.5, 5.0]
    with pytest.raises(ValueError, match="must sum to a positive number"):
        weighted_mean([np.array([1.0])], [0.0])


def test_standard_scaler_uses_every_cell_and_class_of_the_image():
    values = np.array([[1.0, 2.0], [3.0, 6.0]])  # mean 3, variance (4 + 1 + 0 + 9) / 4 = 3.5
    expected = np.array([[-2.0, -1.0], [0.0, 3.0]]) / math.sqrt(3.5)
    np.testing.assert_allclose(standardise_per_image(values, "standard"), expected)


def test_robust_scaler_centres_on_the_median_and_divides_by_the_quartile_range():
    # sorted 1, 2, 3, 6: quartiles (linear) 1.75 and 3.75, median 2.5
    np.testing.assert_allclose(standardise_per_image(np.array([[1.0, 2.0], [3.0, 6.0]]), "robust"),
                               [[-0.75, -0.25], [0.25, 1.75]])


def test_a_flat_image_standardises_to_zero_and_an_empty_one_to_nothing():
    assert standardise_per_image(np.full((2, 3), 7.0)).tolist() == [[0.0] * 3] * 2  # no spread: divided by 1
    assert standardise_per_image(np.zeros((0, 19))).shape == (0, 19)
    with pytest.raises(ValueError, match="unknown scaler 'minmax'"):
        standardise_per_image(np.ones((2, 2)), "minmax")


def test_sigmoid_calibration_applies_factor_and_shift_to_the_standardised_value():
    probs = sigmoid_calibrate(np.array([[0.0, 2.0]]), SigmoidCalibration(factor=2.0, shift=0.5))  # z = -1, 1
    np.testing.assert_allclose(probs, [[sigmoid(2.0 * -1.5), sigmoid(2.0 * 0.5)]])


def test_per_image_sigmoid_of_a_table_standardises_each_image_and_model_apart():
    frame = pd.DataFrame({"image": ["a", "b", "a", "b", "a"], "model": ["m", "m", "m", "m", "n"],
                          "intensity_sum": [0.0, 5.0, 2.0, 5.0, 7.0], "intensity_mean": [1.0, 0.0, 3.0, 0.0, 0.0]})
    # (a, m): 0 and 2 -> z -1 and 1; (b, m): flat -> z 0; (a, n): a single row -> z 0
    np.testing.assert_allclose(sigmoid_per_image(frame), [sigmoid(-1), 0.5, sigmoid(1), 0.5, 0.5])
    np.testing.assert_allclose(sigmoid_per_image(frame, SigmoidCalibration(factor=3.0), column="intensity_mean"),
                               [sigmoid(-3), 0.5, sigmoid(3), 0.5, 0.5])


# ----------------------------------------------------------------------------- cell probabilities


def test_cell_probabilities_weigh_sigmoid_regressor_and_standing():
    blend = BlendConfig(sigmoid_weight=0.5, regressor_weight=0.25, standing_weight=0.25)
    # 0.5 x (0.2, 0.4) + 0.25 x (0.6, 0.8) + 0.25 x (1, 0)
    np.testing.assert_allclose(cell_probabilities(evidence(regressor=[[0.6, 0.8]]), blend), [[0.5, 0.4]])
    thirds = BlendConfig(sigmoid_weight=0.5, regressor_weight=0.5, standing_weight=0.5)  # normalised to 1/3 each
    np.testing.assert_allclose(cell_probabilities(evidence(regressor=[[0.6, 0.8]]), thirds), [[0.6, 0.4]])


def test_without_a_regressor_its_weight_falls_to_the_sigmoid():
    blend = BlendConfig(sigmoid_weight=0.5, regressor_weight=0.25, standing_weight=0.25)
    # 0.75 x (0.2, 0.4) + 0.25 x (1, 0)
    np.testing.assert_allclose(cell_probabilities(evidence(), blend), [[0.4, 0.3]])
    regressor_only = BlendConfig(sigmoid_weight=0.0, regressor_weight=1.0, standing_weight=0.0)
    np.testing.assert_allclose(cell_probabilities(evidence(), regressor_only), [[0.2, 0.4]])


def test_all_weights_zero_leave_the_sigmoid():
    blend = BlendConfig(sigmoid_weight=0.0, regressor_weight=0.0, standing_weight=0.0)
    np.testing.assert_allclose(cell_probabilities(evidence(regressor=[[0.6, 0.8]]), blend), [[0.2, 0.4]])


# ----------------------------------------------------------------------------- image probabilities


def test_image_probabilities_mix_cam_and_image_models_by_share():
    blend = BlendConfig(image_models_share=0.25)
    # 0.75 x (0.4, 0) + 0.25 x (0.8, 1)
    np.testing.assert_allclose(blended_image_probs(evidence(keras=[0.8, 1.0]), blend), [0.5, 0.25])
    np.testing.assert_allclose(blended_image_probs(evidence(), blend), [0.4, 0.0])  # no image models: the CAMs'


def test_the_cells_best_regressor_probability_pools_into_the_image_probability():
    two_cells = dict(sigmoid_probs=[[0.2, 0.4], [0.1, 0.1]], standing=[[1.0, 0.0], [0.5, 1.0]],
                     regressor=[[0.6, 0.1], [0.9, 0.3]])
    blend = BlendConfig(image_models_share=0.25, cell_max_share=0.5)
    # 0.5 x (0.5, 0.25) + 0.5 x max over cells (0.9, 0.3)
    np.testing.assert_allclose(blended_image_probs(evidence(keras=[0.8, 1.0], **two_cells), blend), [0.7, 0.275])
    np.testing.assert_allclose(blended_image_probs(evidence(**two_cells), blend), [0.65, 0.15])
    np.testing.assert_allclose(blended_image_probs(evidence(), blend), [0.4, 0.0])  # no regressor: nothing pooled


# ----------------------------------------------------------------------------- final confidences

CELLS = np.array([[0.5, 1.0], [0.0, 0.25]])
IMAGE = np.array([0.5, 0.8])
NO_BORDER, SECOND_ON_BORDER = np.array([False, False]), np.array([False, True])


def test_gate_keeps_the_floor_of_the_image_probability_and_scales_the_rest_by_the_cell():
    blend = BlendConfig(mode="gate", floor=0.8)
    # image x (0.8 + 0.2 x cell): 0.5 x 0.9, 0.8 x 1.0 / 0.5 x 0.8, 0.8 x 0.85
    np.testing.assert_allclose(final_confidences(CELLS, IMAGE, NO_BORDER, blend), [[0.45, 0.8], [0.4, 0.68]])


def test_linear_mixes_cell_and_image_probabilities():
    blend = BlendConfig(mode="linear", image_level_weight=0.25)
    # 0.75 x cell + 0.25 x image
    np.testing.assert_allclose(final_confidences(CELLS, IMAGE, NO_BORDER, blend), [[0.5, 0.95], [0.125, 0.3875]])


def test_border_cells_are_multiplied_by_the_border_factor_in_both_modes():
    gate = BlendConfig(mode="gate", floor=0.8, border_factor=0.5)
    np.testing.assert_allclose(final_confidences(CELLS, IMAGE, SECOND_ON_BORDER, gate), [[0.45, 0.8], [0.2, 0.34]])
    linear = BlendConfig(mode="linear", image_level_weight=0.25, border_factor=0.5)
    np.testing.assert_allclose(final_confidences(CELLS, IMAGE, SECOND_ON_BORDER, linear),
                               [[0.5, 0.95], [0.0625, 0.19375]])


def test_cell_models_take_their_share_gated_by_the_image_probability():
    cell_model = np.array([[0.6, 0.2], [1.0, 0.0]])
    gated = BlendConfig(mode="gate", floor=0.8, cell_model_share=0.5, cell_model_gate=1.0)
    # 0.5 x the gate's confidences + 0.5 x cell model x image: (0.3, 0.16) / (0.5, 0)
    np.testing.assert_allclose(final_confidences(CELLS, IMAGE, NO_BORDER, gated, cell_model),
                               [[0.375, 0.48], [0.45, 0.34]])
    trusted = BlendConfig(mode="gate", floor=0.8, cell_model_share=0.5, cell_model_gate=0.0)  # image ** 0 = 1
    np.testing.assert_allclose(final_confidences(CELLS, IMAGE, NO_BORDER, trusted, cell_model),
                               [[0.525, 0.5], [0.7, 0.34]])
    half = BlendConfig(mode="gate", floor=0.8, cell_model_share=0.5, cell_model_gate=0.5)
    root = [math.sqrt(0.5), math.sqrt(0.8)]
    np.testing.assert_allclose(final_confidences(CELLS, IMAGE, NO_BORDER, half, cell_model),
                               [[0.225 + 0.3 * root[0], 0.4 + 0.1 * root[1]], [0.2 + 0.5 * root[0], 0.34]])


def test_cell_models_count_only_with_a_share_and_the_border_factor_applies_after_them():
    cell_model = np.array([[0.6, 0.2], [1.0, 0.0]])
    unshared = BlendConfig(mode="gate", floor=0.8, cell_model_share=0.0)
    np.testing.assert_allclose(final_confidences(CELLS, IMAGE, NO_BORDER, unshared, cell_model),
                               [[0.45, 0.8], [0.4, 0.68]])
    shared = BlendConfig(mode="gate", floor=0.8, cell_model_share=0.5, cell_model_gate=1.0, border_factor=0.5)
    np.testing.assert_allclose(final_confidences(CELLS, IMAGE, SECOND_ON_BORDER, shared, cell_model),
                               [[0.375, 0.48], [0.225, 0.17]])
    np.testing.assert_allclose(final_confidences(CELLS, IMAGE, NO_BORDER, shared, None), [[0.45, 0.8], [0.4, 0.68]])


def test_combine_chains_cell_probabilities_image_probabilities_and_the_final_blend():
    data = evidence(keras=[0.8, 1.0], sigmoid_probs=[[0.2, 0.4], [0.0, 0.5]], standing=[[1.0, 0.0], [0.5, 1.0]],
                    border=[False, True], cell_model=[[1.0, 0.5], [0.0, 0.0]])
    blend = BlendConfig(sigmoid_weight=0.5, regressor_weight=0.0, standing_weight=0.5, image_models_share=0.25,
                        floor=0.5, cell_model_share=0.5, cell_model_gate=1.0, border_factor=0.5)
    image, final = combine(data, blend)
    np.testing.assert_allclose(image, [0.5, 0.25])
    # cells: (0.6, 0.2) / (0.25, 0.75); gate: 0.5 x 0.8, 0.25 x 0.6 / 0.5 x 0.625, 0.25 x 0.875
    # with the cell models (x image): 0.5 x (0.4, 0.15) + 0.5 x (0.5, 0.125); the border cell x 0.5
    np.testing.assert_allclose(final, [[0.45, 0.1375], [0.078125, 0.0546875]])
    empty = evidence(sigmoid_probs=np.zeros((0, 2)), standing=np.zeros((0, 2)))
    image, final = combine(empty, blend)
    np.testing.assert_allclose(image, [0.4, 0.0])
    assert final.shape == (0, NUM_CLASSES)


# ----------------------------------------------------------------------------- several models


def constant_regressor(value: float) -> CalibrationRegressor:
    """A regressor of one leaf: `value` for every cell and class."""
    one = (lambda *values: np.array(values))
    trees = TreeEnsemble(left=one(-1), right=one(-1), feature=one(0), threshold=one(0.0), value=one(0.0),
                         missing_left=one(False), roots=one(0), baseline=value, compare_float32=False)
    return CalibrationRegressor(["sum"], np.zeros(1), np.ones(1), trees, {})


@pytest.fixture(scope="module")
def two_cam_models(tiny_cam_set):
    checkpoints, folder = tiny_cam_set
    cfg = InferenceConfig(cam_models=[CamModelEntry(path) for path in checkpoints],
                          tta=TTAConfig(scales=[1.0], flips=False),
                          segmentation=SegmentationConfig(cache=CacheSettings(enabled=False)), device="cpu")
    image_id = (folder / "labels.csv").read_text().splitlines()[1].split(",")[0]
    return cfg, load_models(cfg), Segmenter(cfg.segmentation, read_options=cfg.read), folder / "images", image_id


def evidence_of(two_cam_models, cam_weights, regressors, keras_per_model=None, keras_weights=()):
    cfg, models, segmenter, folder, image_id = two_cam_models
    for member, weight, regressor in zip(models.cams, cam_weights, regressors):
        member.weight, member.regressor = weight, regressor
    models.image_models = [LoadedImageModel(None, "rgby", weight) for weight in keras_weights]
    return image_evidence(image_id, folder, models, segmenter, keras_per_model, cfg)


def test_several_cam_models_are_averaged_by_weight(two_cam_models):
    first = evidence_of(two_cam_models, [1.0, 0.0], [None, None])
    second = evidence_of(two_cam_models, [0.0, 1.0], [None, None])
    both = evidence_of(two_cam_models, [1.0, 3.0], [None, None])
    assert both.n_cells > 0 and not np.allclose(first.cam_probs, second.cam_probs)  # two models that disagree
    for name in ("cam_probs", "sigmoid", "standing"):
        np.testing.assert_allclose(getattr(both, name), 0.25 * getattr(first, name) + 0.75 * getattr(second, name),
                                   rtol=1e-6, err_msg=name)
    assert both.regressor is None and both.keras_probs is None


def test_regressors_are_averaged_over_the_models_that_have_one(two_cam_models):
    one = evidence_of(two_cam_models, [1.0, 3.0], [constant_regressor(0.2), None])
    np.testing.assert_allclose(one.regressor, np.full((one.n_cells, NUM_CLASSES), 0.2))  # the other has none
    both = evidence_of(two_cam_models, [1.0, 3.0], [constant_regressor(0.2), constant_regressor(0.6)])
    np.testing.assert_allclose(both.regressor, np.full((both.n_cells, NUM_CLASSES), 0.5))  # 0.25 x 0.2 + 0.75 x 0.6


def test_several_image_models_are_averaged_by_weight(two_cam_models):
    per_model = np.stack([np.full(NUM_CLASSES, 0.2), np.linspace(0.0, 0.9, NUM_CLASSES)])
    result = evidence_of(two_cam_models, [1.0, 1.0], [None, None], per_model, keras_weights=[1.0, 3.0])
    np.testing.assert_allclose(result.keras_probs, 0.05 + 0.75 * np.linspace(0.0, 0.9, NUM_CLASSES))
    assert result.keras_per_model is per_model
