"""One feature table: the regressor's training rows and its input at inference are the same numbers.

Both sides build the table with `hpacam.regressor.calibration.feature_frame`; here they run for real (two
tiny CAM models, synthetic images, the classic segmentation) and the rows are compared.
"""

import numpy as np
import pandas as pd
import pytest

from hpacam.cam.tta import TTAConfig
from hpacam.inference import CamModelEntry, InferenceConfig, image_evidence, load_models
from hpacam.regressor.calibration import FEATURES, feature_frame, feature_matrix
from hpacam.regressor.extraction import ExtractConfig, extract, write_table
from hpacam.regressor.intensities import CellIntensities
from hpacam.regressor.train import read_intensities
from hpacam.segmentation import SegmentationConfig, Segmenter
from hpacam.segmentation.settings import CacheSettings

TTA = TTAConfig(scales=[1.0], flips=False)
NO_CACHE = SegmentationConfig(cache=CacheSettings(enabled=False))


class RecordingRegressor:
    """Stands in for a fitted regressor: keeps every feature matrix inference gives it."""

    def __init__(self, features):
        self.features, self.inputs = list(features), []

    def predict(self, features: np.ndarray) -> np.ndarray:
        self.inputs.append(np.array(features))
        return np.zeros(len(features))


def training_table(checkpoints, folder, out_dir) -> pd.DataFrame:
    return extract(ExtractConfig(images=folder / "images", labels=folder / "labels.csv", checkpoints=checkpoints,
                                 out_dir=out_dir, select="all", tta=TTA, segmentation=NO_CACHE))


def test_training_rows_are_the_regressors_input_at_inference(tiny_cam_set, tmp_path):
    checkpoints, folder = tiny_cam_set
    table = training_table(checkpoints, folder, tmp_path)
    cfg = InferenceConfig(cam_models=[CamModelEntry(path) for path in checkpoints], tta=TTA, segmentation=NO_CACHE,
                          device="cpu")
    models = load_models(cfg)
    recorders = [RecordingRegressor(FEATURES) for _ in models.cams]
    for member, recorder in zip(models.cams, recorders):
        member.regressor = recorder
    segmenter = Segmenter(cfg.segmentation, read_options=cfg.read)
    images = table["image"].unique().tolist()
    assert len(images) >= 2 and table["model"].nunique() == 2
    for image_id in images:
        image_evidence(image_id, folder / "images", models, segmenter, None, cfg)
    for member, recorder in zip(models.cams, recorders):
        rows = table[table["model"] == member.cam.name]
        learned = [feature_matrix(rows[rows["image"] == image_id], FEATURES) for image_id in images]
        assert len(recorder.inputs) == len(images)
        for seen, trained in zip(recorder.inputs, learned):
            assert np.array_equal(seen, trained)  # the same rows, bit for bit


def test_the_written_table_keeps_the_features_to_six_digits(tiny_cam_set, tmp_path):
    checkpoints, folder = tiny_cam_set
    table = training_table(checkpoints[:1], folder, tmp_path)
    read = read_intensities(write_table(table, tmp_path / "intensities.csv"))
    # the CSV holds 6 significant digits (float_format %.6g): the regressor learns from these
    np.testing.assert_allclose(feature_matrix(read, FEATURES), feature_matrix(table, FEATURES), rtol=1e-5)
    assert read["border"].isin([0, 1]).all() and (read["area"] > 0).any()


def test_the_feature_frame_has_a_row_per_cell_and_class_in_cell_order():
    result = CellIntensities(cell_ids=np.array([2, 5]), sums=np.array([[1.0, 2.0], [3.0, 4.0]], np.float32),
                             means=np.array([[0.5, 1.0], [0.3, 0.4]], np.float32), area=np.array([2, 10]))
    frame = feature_frame(result, np.array([0.9, 0.1]), np.array([True, False]))
    assert frame["cell"].tolist() == [2, 2, 5, 5] and frame["class"].tolist() == [0, 1, 0, 1]
    assert frame["intensity_sum"].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert frame["intensity_mean"].tolist() == [0.5, 1.0, pytest.approx(0.3), pytest.approx(0.4)]
    assert frame["image_prob"].tolist() == [0.9, 0.1, 0.9, 0.1]
    assert frame["area"].tolist() == [2, 2, 10, 10] and frame["border"].tolist() == [1, 1, 0, 0]
    assert feature_matrix(frame, ["area", "border", "class"]).tolist() == [[2, 1, 0], [2, 1, 1], [10, 0, 0],
                                                                            [10, 0, 1]]

