"""The hpacellseg adapter's own logic, without the package: validation, trust, batching, conversion."""

import sys

import numpy as np
import pytest
from scipy import ndimage

from hpacam.segmentation import SegmentationConfig, SegmentationError, make_backend, segment_many
from hpacam.segmentation import hpa
from hpacam.segmentation.settings import HpaSettings
from test_segmentation_helpers import draw_cells


@pytest.fixture
def weights(tmp_path):
    nuclei, cell = tmp_path / "nuclei.pth", tmp_path / "cell.pth"
    nuclei.write_bytes(b"nuclei weights")
    cell.write_bytes(b"cell weights")
    return nuclei, cell


def trusted(weights, **kwargs):
    return HpaSettings(nuclei_model=weights[0], cell_model=weights[1], trust_weights=True, **kwargs)


class FakeSegmentator:
    """Stands in for hpacellseg's CellSegmentator: blue -> nuclei map, the summed channels -> cell map."""

    def __init__(self, transpose=False):
        self.calls = []
        self.transpose = transpose

    def _out(self, plane):
        plane = plane.T if self.transpose else plane
        return np.dstack([np.zeros_like(plane), np.zeros_like(plane), plane])

    def pred_nuclei(self, blues):
        self.calls.append(("nuclei", [b.shape for b in blues], [b.dtype for b in blues]))
        return [self._out(b) for b in blues]

    def pred_cells(self, lists):
        red, yellow, blue = lists
        self.calls.append(("cells", [r.shape for r in red], None if yellow is None else len(yellow)))
        second = yellow if yellow is not None else [np.zeros_like(r) for r in red]
        return [self._out(np.maximum(np.maximum(r, y), b)) for r, y, b in zip(red, second, blue)]


def fake_label_cell(nuclei_pred, cell_pred):
    """(nuclei, cells) like hpacellseg.utils.label_cell: uint16, the same id for a cell and its nucleus."""
    cells, _ = ndimage.label(cell_pred[..., 2] > 40)
    nuclei = np.where(nuclei_pred[..., 2] > 128, cells, 0)
    return nuclei.astype(np.uint16), cells.astype(np.uint16)


def backend_with_fake(settings, fake=None):
    fake = fake or FakeSegmentator()
    return hpa.HpaBackend(settings, segmentator_factory=lambda: fake, label_cell=fake_label_cell), fake


def image(shape, n_cells, seed=0):
    """`n_cells` separate cells in a row, so each image's result is recognisable by its count."""
    width = shape[1] / n_cells
    cells = [(shape[0] / 2, width * (i + 0.5), 0.4 * min(width, shape[0]), 0.15 * min(width, shape[0]))
             for i in range(n_cells)]
    return draw_cells(shape, cells, seed=seed)[0]


# ----------------------------------------------------------------------------- refusing to run


def test_weight_paths_are_required_and_nothing_is_downloaded():
    with pytest.raises(SegmentationError, match="nuclei_model and segmentation.hpa.cell_model.*never downloads"):
        hpa.HpaBackend(HpaSettings(trust_weights=True))


def test_missing_weight_files_are_named(tmp_path):
    settings = HpaSettings(nuclei_model=tmp_path / "no.pth", cell_model=tmp_path / "none.pth", trust_weights=True)
    with pytest.raises(SegmentationError, match="no.pth.*none.pth.*nothing is downloaded"):
        hpa.HpaBackend(settings)


def test_weights_are_not_loaded_without_the_trust_switch(weights, monkeypatch):
    loaded = []
    monkeypatch.setattr(hpa, "load_trusted_model", lambda path, device: loaded.append(path))
    settings = HpaSettings(nuclei_model=weights[0], cell_model=weights[1])
    with pytest.raises(SegmentationError, match="trust_weights=true") as error:
        hpa.HpaBackend(settings)
    assert "runs" in str(error.value) and "code" in str(error.value)
    assert not loaded


def test_missing_package_is_a_clear_error(weights, monkeypatch):
    monkeypatch.setitem(sys.modules, "hpacellseg", None)  # makes `import hpacellseg` fail
    with pytest.raises(SegmentationError, match="hpacellseg.*pip install.*backend=classic"):
        make_backend(SegmentationConfig(backend="hpa", hpa=trusted(weights)))


@pytest.mark.parametrize("change, message", [({"scale_factor": 0.0}, "scale_factor"), ({"batch_size": 0}, "batch_size")])
def test_bad_numbers_are_refused(weights, change, message):
    with pytest.raises(SegmentationError, match=message):
        hpa.HpaBackend(trusted(weights, **change), segmentator_factory=FakeSegmentator)


def test_trusted_loading_unpickles_a_whole_module(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "module.pth"
    torch.save(torch.nn.Conv2d(3, 2, 1), path)  # a whole pickled module, like hpacellseg's files
    model = hpa.load_trusted_model(path, "cpu")
    assert isinstance(model, torch.nn.Conv2d)


# ----------------------------------------------------------------------------- batching and conversion


def test_images_are_batched_by_size_and_returned_in_order(weights):
    backend, fake = backend_with_fake(trusted(weights, batch_size=2))
    shapes = [(96, 96), (96, 160), (96, 96), (96, 96), (96, 160)]
    counts = [1, 2, 3, 1, 2]
    images = [image(s, n, seed=i) for i, (s, n) in enumerate(zip(shapes, counts))]
    pairs = backend.label_many(images)
    calls = [c for c in fake.calls if c[0] == "nuclei"]
    assert all(len(set(c[1])) == 1 and len(c[1]) <= 2 for c in calls)  # one size, at most 2 per call
    assert sorted(len(c[1]) for c in calls) == [1, 2, 2]  # 3 of 96x96 -> 2 + 1; 2 of 96x160 -> 2
    for (cells, nuclei), shape, count in zip(pairs, shapes, counts):
        assert cells.shape == shape and nuclei.shape == shape
        assert cells.dtype == np.int32 and nuclei.dtype == np.int32
        assert cells.max() == count


def test_channels_reach_the_models_as_8_bit_in_hpa_order(weights):
    backend, fake = backend_with_fake(trusted(weights))
    backend.label(image((96, 96), 1))
    nuclei_call, cells_call = fake.calls
    assert nuclei_call[2] == [np.dtype(np.uint8)]
    assert cells_call[2] == 1  # a yellow list for the 3-channel model


def test_two_channel_model_sends_no_yellow_and_does_not_need_it(weights):
    backend, fake = backend_with_fake(trusted(weights, multi_channel_model=False))
    assert backend.channels == ("red", "blue")
    channels = image((96, 96), 1)
    del channels["yellow"]
    backend.label(channels)
    assert fake.calls[1][2] is None


def test_transposed_predictions_of_non_square_images_are_restored(weights):
    backend, _ = backend_with_fake(trusted(weights), FakeSegmentator(transpose=True))
    cells, nuclei = backend.label(image((96, 200), 2))
    assert cells.shape == (96, 200) and cells.max() == 2


def test_results_pass_through_the_common_interface(weights, monkeypatch):
    fake = FakeSegmentator()
    monkeypatch.setattr(hpa.HpaBackend, "from_config", classmethod(
        lambda cls, cfg: cls(cfg.hpa, segmentator_factory=lambda: fake, label_cell=fake_label_cell)))
    cfg = SegmentationConfig(backend="hpa", hpa=trusted(weights))
    results = segment_many([image((96, 96), 2), image((96, 160), 3)], cfg)
    assert [r.n_cells for r in results] == [2, 3] and all(r.backend == "hpa" for r in results)
    assert all(np.all(r.cells[r.nuclei > 0] == r.nuclei[r.nuclei > 0]) for r in results)


@pytest.mark.parametrize("dtype, values, expected", [
    (np.uint16, [0, 100, 255], [0, 100, 255]),  # 8-bit data in a 16-bit file
    (np.uint16, [0, 32768, 65535], [0, 128, 255]),  # real 16-bit data
    (np.float32, [0.0, 0.5, 1.0], [0, 128, 255]),  # read_image's floats in [0, 1]
])
def test_channels_are_scaled_to_8_bit_like_the_source_files(dtype, values, expected):
    plane = np.array([values], dtype=dtype)
    divisor = hpa.image_divisor({"red": plane, "blue": plane}, ("red", "blue"))
    assert hpa.to_uint8(plane, divisor).tolist() == [expected]


def test_cache_settings_follow_the_weights_content_not_their_paths(weights, tmp_path):
    first, _ = backend_with_fake(trusted(weights))
    copy = tmp_path / "copy.pth"
    copy.write_bytes(weights[0].read_bytes())
    moved, _ = backend_with_fake(HpaSettings(nuclei_model=copy, cell_model=weights[1], trust_weights=True))
    assert first.settings() == moved.settings()
    weights[1].write_bytes(b"other cell weights")
    changed, _ = backend_with_fake(trusted(weights))
    assert changed.settings() != first.settings()
