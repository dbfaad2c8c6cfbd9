"""The segmentation interface and the classic backend on known answers and small synthetic images."""

import numpy as np
import pytest

from hpacam.segmentation import (SegmentationConfig, SegmentationError, backend_names, border_flags, make_backend,
                                 register_backend, segment, segment_many)
from hpacam.segmentation.classic import ClassicBackend
from hpacam.segmentation.quality import match_labels, summarise
from hpacam.segmentation.settings import BorderSettings, ClassicSettings
from test_segmentation_helpers import CountingBackend, draw_cells

TWO_TOUCHING = [(100, 95, 70, 24), (100, 225, 70, 24)]  # centres 130 px apart, radii 70: they touch


def test_two_touching_cells_are_two_cells():
    channels, truth = draw_cells((200, 320), TWO_TOUCHING)
    assert np.any((truth[:, 1:] == 1) & (truth[:, :-1] == 2)) or np.any((truth[:, 1:] == 2) & (truth[:, :-1] == 1))
    result = segment(channels)
    assert result.n_cells == 2
    match = match_labels(truth, result.cells)
    assert match.matched == 2 and match.iou_sum / 2 > 0.85


def test_touching_nuclei_are_split_into_two_cells():
    # nuclei of radius 22 with centres 40 px apart overlap: one blue blob with a neck
    channels, truth = draw_cells((200, 240), [(100, 100, 60, 22), (100, 140, 60, 22)])
    result = segment(channels)
    assert result.n_cells == 2
    assert len(np.unique(result.nuclei)) == 3  # background + two nuclei


def test_empty_image_gives_no_cells_and_no_error():
    zeros = {name: np.zeros((300, 300), np.uint16) for name in ("red", "yellow", "blue")}
    result = segment(zeros)
    assert result.n_cells == 0 and result.cells.shape == (300, 300) and not result.cells.any()
    assert result.cells.dtype == np.int32 and len(result.border.is_border) == 0


def test_non_square_image_keeps_its_shape_and_cells():
    cells = [(150, 200, 90, 30), (150, 600, 90, 30), (380, 400, 90, 30)]
    channels, truth = draw_cells((500, 1000), cells)  # downscaled to 256 x 512 for work_size 512
    result = segment(channels)
    assert result.cells.shape == (500, 1000) and result.nuclei.shape == (500, 1000)
    assert result.cells.dtype == np.int32 and result.nuclei.dtype == np.int32
    assert match_labels(truth, result.cells).matched == 3


def test_labels_are_consecutive_and_every_cell_holds_its_own_nucleus():
    channels, _ = draw_cells((300, 420), TWO_TOUCHING + [(230, 330, 60, 20)])
    result = segment(channels)
    assert set(np.unique(result.cells)) == set(range(result.n_cells + 1))
    for cell in range(1, result.n_cells + 1):
        assert np.all(result.cells[result.nuclei == cell] == cell)
        assert (result.nuclei == cell).any()


def test_8_bit_16_bit_and_float_inputs_agree():
    channels, _ = draw_cells((200, 320), TWO_TOUCHING)
    as_8bit = {k: (v // 257).astype(np.uint8) for k, v in channels.items()}
    as_float = {k: v.astype(np.float32) / 65535 for k, v in channels.items()}
    results = [segment(c).cells for c in (channels, as_8bit, as_float)]
    for other in results[1:]:
        assert match_labels(results[0], other).matched == 2


def test_rgby_array_input_is_accepted():
    channels, _ = draw_cells((200, 320), TWO_TOUCHING)
    rgby = np.stack([channels[n] for n in ("red", "green", "blue", "yellow")], axis=-1)
    assert segment(rgby).n_cells == 2


def test_cost_does_not_grow_with_image_size_beyond_working_resolution():
    small_channels, _ = draw_cells((256, 256), [(128, 128, 90, 30)])
    big = {k: np.kron(v, np.ones((8, 8), v.dtype)) for k, v in small_channels.items()}  # 2048 px
    result = segment(big)
    assert result.cells.shape == (2048, 2048) and result.n_cells == 1


def test_missing_channel_and_mismatched_sizes_are_clear_errors():
    channels, _ = draw_cells((100, 100), [(50, 50, 30, 10)])
    with pytest.raises(SegmentationError, match="missing channel"):
        segment({"red": channels["red"], "blue": channels["blue"]})
    with pytest.raises(SegmentationError, match="one size"):
        segment({**channels, "yellow": channels["yellow"][:50]})


def test_unknown_backend_names_the_choices():
    with pytest.raises(SegmentationError, match="classic"):
        make_backend(SegmentationConfig(backend="nope"))


def test_registered_backend_is_chosen_by_config():
    counter = CountingBackend(ClassicBackend())
    register_backend("counting-test", lambda cfg: counter)
    assert "counting-test" in backend_names()
    channels, _ = draw_cells((200, 320), TWO_TOUCHING)
    results = segment_many([channels, channels], SegmentationConfig(backend="counting-test"))
    assert counter.calls == 2 and all(r.n_cells == 2 for r in results)


@pytest.mark.parametrize("change, key", [({"work_size": 8}, "work_size"), ({"nucleus_diameter": 90.0}, "nucleus_diameter"),
                                         ({"percentile": 120.0}, "percentile"), ({"cyto_red": -1.0}, "cyto_red")])
def test_classic_settings_are_validated(change, key):
    with pytest.raises(ValueError, match=f"segmentation.classic.{key}"):
        ClassicBackend(ClassicSettings(**change))


@pytest.mark.parametrize("noise", ["uniform", "gaussian"])
def test_pure_noise_gives_no_cells(noise):
    rng = np.random.default_rng(1)
    if noise == "uniform":
        planes = {k: rng.integers(0, 65535, (600, 600)).astype(np.uint16) for k in ("red", "yellow", "blue")}
    else:
        planes = {k: (1000 + rng.normal(0, 30, (600, 600))).astype(np.uint16) for k in ("red", "yellow", "blue")}
    assert segment(planes).n_cells == 0


# ----------------------------------------------------------------------------- border flags


def test_border_flags_measure_contact_and_area():
    cells = np.zeros((100, 100), np.int32)
    cells[0:20, 40:60] = 1  # cut by the top edge along 20 px
    cells[40:60, 40:60] = 2  # interior
    cells[45:55, 90:100] = 3  # small, cut by the right edge along 10 px
    cells[99, 0] = 4  # a single corner pixel: on two edges
    flags = border_flags(cells, BorderSettings(min_contact_ratio=0.5))
    assert flags.area.tolist() == [400, 400, 100, 1]
    assert flags.contact_length.tolist() == [20, 0, 10, 2]
    np.testing.assert_allclose(flags.contact_ratio[:3], [20 / (2 * np.sqrt(400 / np.pi)), 0, 10 / (2 * np.sqrt(100 / np.pi))], rtol=1e-5)
    np.testing.assert_allclose(flags.area_share[:3], [1.0, 1.0, 0.25])  # median interior cell: 400
    assert flags.is_border.tolist() == [True, False, True, True]
    assert flags.touches_border.tolist() == [True, False, True, True]


def test_border_flags_threshold_comes_from_the_config():
    cells = np.zeros((100, 100), np.int32)
    cells[0:30, 40:44] = 1  # grazes the edge: 4 px of contact for an equivalent diameter of ~12
    lenient, strict = border_flags(cells, BorderSettings(0.2)), border_flags(cells, BorderSettings(0.5))
    assert lenient.is_border[0] and not strict.is_border[0]


def test_segmentation_flags_cells_cut_by_the_border():
    channels, _ = draw_cells((240, 320), [(120, 160, 70, 24), (120, 10, 70, 24)])  # second cut on the left
    result = segment(channels)
    assert result.n_cells == 2
    cut = result.cells[120, 5]
    assert result.border.is_border[cut - 1] and not result.border.is_border[2 - cut]


# ----------------------------------------------------------------------------- synthetic images


@pytest.fixture(scope="module")
def small_synthetic():
    from hpacam.synth import render_image

    return [render_image(seed, 512) for seed in (11, 12, 13)]


def test_classic_backend_matches_synthetic_truth(small_synthetic):
    matches = [match_labels(image.cells, segment(image.channels).cells) for image in small_synthetic]
    report = summarise(matches)
    assert report.n_truth >= 20
    assert report.recall >= 0.9 and report.mean_iou >= 0.8


def test_border_flags_agree_with_synthetic_truth(small_synthetic):
    """Every flagged cell does touch the border; most truth border cells with a real cut are flagged."""
    for image in small_synthetic:
        result = segment(image.channels)
        assert np.all(result.border.touches_border[result.border.is_border])
        truth_flags = border_flags(image.cells)
        pairs = match_labels(image.cells, result.cells).matched_pairs
        agree = [truth_flags.is_border[t - 1] == result.border.is_border[p - 1] for t, p, _ in pairs]
        assert np.mean(agree) >= 0.8
