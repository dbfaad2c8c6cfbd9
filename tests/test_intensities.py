"""Per-cell CAM intensities: the vectorised function equals the plain loop."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hpacam.regressor.intensities import activate, cell_intensities, cell_intensities_loop, labels_at, present_cells


def random_case(rng, size, map_size, n_labels, n_classes=19):
    labels = rng.integers(0, n_labels + 1, (size // 8, size // 8))
    labels = np.kron(labels, np.ones((8, 8), dtype=labels.dtype))  # blocky, contiguous cells
    maps = activate(rng.normal(size=(n_classes, map_size, map_size)), "swish")
    return labels, maps, rng.random(n_classes)


@pytest.mark.parametrize("size, map_size", [(64, 64), (128, 40), (96, 128)])
def test_vectorised_equals_loop(size, map_size):
    rng = np.random.default_rng(size + map_size)
    labels, maps, probs = random_case(rng, size, map_size, n_labels=12)
    fast = cell_intensities(labels, maps, probs)
    ids, sums, means = cell_intensities_loop(labels, maps, probs)
    np.testing.assert_array_equal(fast.cell_ids, ids)
    np.testing.assert_allclose(fast.sums, sums, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fast.means, means, rtol=1e-5, atol=1e-6)


@settings(max_examples=40, deadline=None)
@given(h=st.integers(1, 40), w=st.integers(1, 40), mh=st.integers(1, 30), mw=st.integers(1, 30),
       n=st.integers(0, 9), seed=st.integers(0, 10_000), activation=st.sampled_from(["swish", "relu", "raw"]))
def test_vectorised_equals_loop_any_shape(h, w, mh, mw, n, seed, activation):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, n + 1, (h, w))
    maps = activate(rng.normal(size=(3, mh, mw)), activation)
    fast = cell_intensities(labels, maps, None)
    ids, sums, means = cell_intensities_loop(labels, maps, None)
    np.testing.assert_array_equal(fast.cell_ids, ids)
    np.testing.assert_allclose(fast.sums, sums, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(fast.means, means, rtol=1e-5, atol=1e-5)


def test_known_answer_and_vanished_cell():
    labels = np.zeros((8, 8), dtype=np.int32)
    labels[:4, :4] = 1
    labels[4:, 4:] = 2
    labels[0, 7] = 3  # one pixel: vanishes at 4x4
    maps = np.zeros((2, 4, 4), np.float32)
    maps[0, :2, :2] = 1.0
    maps[1, 2:, 2:] = 2.0
    out = cell_intensities(labels, maps, np.array([0.5, 1.0]))
    np.testing.assert_array_equal(out.cell_ids, [1, 2, 3])
    np.testing.assert_allclose(out.sums, [[2.0, 0.0], [0.0, 8.0], [0.0, 0.0]])
    np.testing.assert_allclose(out.means, [[0.5, 0.0], [0.0, 2.0], [0.0, 0.0]])
    np.testing.assert_array_equal(out.area, [4, 4, 0])


def test_activations_and_helpers():
    x = np.array([-2.0, 0.0, 3.0])
    np.testing.assert_allclose(activate(x, "relu"), [0, 0, 3])
    np.testing.assert_allclose(activate(x, "swish"), x / (1 + np.exp(-x)), rtol=1e-6)
    np.testing.assert_allclose(activate(x, "raw"), x)
    with pytest.raises(ValueError, match="unknown activation"):
        activate(x, "gelu")
    np.testing.assert_array_equal(present_cells(np.array([[0, 5], [2, 5]])), [2, 5])
    assert labels_at(np.arange(16).reshape(4, 4), (2, 2)).shape == (2, 2)
    with pytest.raises(ValueError, match=r"\(C, h, w\)"):
        cell_intensities(np.zeros((4, 4), int), np.zeros((4, 4)))
