"""Tiling and merging, the Puzzle-CAM loss terms, the focal loss, and one real training step."""

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from hpacam.cam.config import LossConfig
from hpacam.cam.losses import focal_bce_with_logits, smooth_targets
from hpacam.cam.models import create_model
from hpacam.cam.puzzle import PuzzleNet, alpha_at, merge_features, puzzle_cam_loss, tile_features
from hpacam.classes import NUM_CLASSES

TINY = {"channels": (8, 16, 32, 64), "stem_width": 8}


@settings(max_examples=40, deadline=None)
@given(batch=st.integers(1, 3), channels=st.integers(1, 5), side=st.integers(1, 4),
       tile_h=st.integers(1, 6), tile_w=st.integers(1, 6))
def test_tile_then_merge_is_the_identity(batch, channels, side, tile_h, tile_w):
    x = torch.randn(batch, channels, side * tile_h, side * tile_w)
    tiles = tile_features(x, side * side)
    assert tiles.shape == (side * side * batch, channels, tile_h, tile_w)
    assert torch.equal(merge_features(tiles, side * side, batch), x)


def test_tiles_are_row_major_with_the_batch_inside():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).reshape(2, 1, 4, 4)
    tiles = tile_features(x, 4)
    assert torch.equal(tiles[0], x[0, :, :2, :2])  # tile 0 (top left) of image 0
    assert torch.equal(tiles[1], x[1, :, :2, :2])  # tile 0 of image 1
    assert torch.equal(tiles[2], x[0, :, :2, 2:])  # tile 1 (top right) of image 0
    assert torch.equal(tiles[7], x[1, :, 2:, 2:])  # tile 3 (bottom right) of image 1


def test_tiling_refuses_uneven_sizes_and_non_square_counts():
    with pytest.raises(ValueError, match="equal tiles"):
        tile_features(torch.zeros(1, 1, 5, 4), 4)
    with pytest.raises(ValueError, match="square"):
        tile_features(torch.zeros(1, 1, 4, 4), 3)
    with pytest.raises(ValueError, match="tiles"):
        merge_features(torch.zeros(6, 1, 2, 2), 4, 2)


def test_alpha_ramps_linearly_to_its_maximum_over_the_share():
    cfg = LossConfig(alpha=4.0, alpha_schedule=0.5)
    assert alpha_at(0, 100, cfg) == 0.0
    assert alpha_at(25, 100, cfg) == pytest.approx(2.0)
    assert alpha_at(50, 100, cfg) == pytest.approx(4.0)
    assert alpha_at(99, 100, cfg) == pytest.approx(4.0)
    assert alpha_at(0, 100, LossConfig(alpha=3.0, alpha_schedule=0.0)) == 3.0


def fake_outputs(batch=2, size=4):
    torch.manual_seed(0)
    cams = torch.randn(batch, NUM_CLASSES, size, size)
    return {"logits": cams.mean(dim=(2, 3)), "cams": cams, "merged_cams": cams + torch.randn_like(cams)}


def test_masked_reconstruction_only_counts_positive_classes():
    outputs = fake_outputs()
    targets = torch.zeros(2, NUM_CLASSES)
    _, terms = puzzle_cam_loss(outputs, targets, LossConfig(reconstruction="masking"), alpha=1.0)
    assert terms["reconstruction"] == 0.0
    targets[0, 3] = 1.0
    _, terms = puzzle_cam_loss(outputs, targets, LossConfig(reconstruction="masking"), alpha=1.0)
    expected = (outputs["cams"][0, 3] - outputs["merged_cams"][0, 3]).abs().sum() / outputs["cams"].numel()
    assert terms["reconstruction"] == pytest.approx(float(expected), rel=1e-5)
    _, unmasked = puzzle_cam_loss(outputs, targets, LossConfig(reconstruction="all"), alpha=1.0)
    assert unmasked["reconstruction"] > terms["reconstruction"]


def test_total_is_class_plus_puzzle_class_plus_alpha_times_reconstruction():
    outputs = fake_outputs()
    targets = (torch.rand(2, NUM_CLASSES) > 0.7).float()
    total, terms = puzzle_cam_loss(outputs, targets, LossConfig(), alpha=2.5)
    expected = terms["class"] + terms["puzzle_class"] + 2.5 * terms["reconstruction"]
    assert float(total) == pytest.approx(expected, rel=1e-5)


def test_plain_mode_has_only_the_classification_term():
    outputs = fake_outputs()
    targets = (torch.rand(2, NUM_CLASSES) > 0.7).float()
    total, terms = puzzle_cam_loss(outputs, targets, LossConfig(mode="plain"), alpha=4.0)
    assert set(terms) == {"class", "alpha"}
    assert float(total) == pytest.approx(terms["class"])


def test_focal_with_gamma_zero_is_binary_cross_entropy():
    logits = torch.randn(4, NUM_CLASSES)
    targets = (torch.rand(4, NUM_CLASSES) > 0.5).float()
    torch.testing.assert_close(focal_bce_with_logits(logits, targets),
                               F.binary_cross_entropy_with_logits(logits, targets, reduction="none"))


def test_focal_term_down_weights_confident_right_answers():
    logits = torch.tensor([[4.0, -4.0, 0.0]])
    targets = torch.tensor([[1.0, 0.0, 1.0]])
    bce = focal_bce_with_logits(logits, targets, gamma=0.0)
    focal = focal_bce_with_logits(logits, targets, gamma=2.0)
    p = torch.sigmoid(torch.tensor(4.0))
    assert float(focal[0, 0]) == pytest.approx(float(bce[0, 0] * (1 - p) ** 2), rel=1e-5)
    assert float(focal[0, 2]) == pytest.approx(float(bce[0, 2]) * 0.25, rel=1e-5)


def test_label_smoothing_moves_targets_towards_one_half():
    torch.testing.assert_close(smooth_targets(torch.tensor([0.0, 1.0]), 0.1), torch.tensor([0.05, 0.95]))
    with pytest.raises(ValueError):
        smooth_targets(torch.tensor([1.0]), 1.0)


@pytest.mark.parametrize("name,kwargs,mode", [
    ("resnet10t", TINY, "puzzle"),
    ("resnet10t", TINY, "plain"),
    ("efficientnet-b0", {}, "puzzle"),
    ("resnest50", {}, "puzzle"),
])
def test_a_training_step_gives_every_parameter_a_finite_gradient(name, kwargs, mode):
    torch.manual_seed(0)
    model = create_model(name, output_stride=8, **kwargs)
    net = PuzzleNet(model, num_pieces=4, puzzle=mode == "puzzle").train()
    images = torch.rand(2, 4, 32, 32)
    targets = torch.zeros(2, NUM_CLASSES)
    targets[0, [0, 5]] = 1.0
    targets[1, 16] = 1.0
    loss, terms = puzzle_cam_loss(net(images), targets, LossConfig(mode=mode, focal_gamma=1.0), alpha=4.0)
    loss.backward()
    assert math.isfinite(float(loss.detach())) and all(math.isfinite(v) for v in terms.values())
    for param_name, param in model.named_parameters():
        assert param.grad is not None, f"{param_name} got no gradient"
        assert torch.isfinite(param.grad).all(), f"{param_name} has a non-finite gradient"
    assert float(model.classifier.weight.grad.abs().sum()) > 0
