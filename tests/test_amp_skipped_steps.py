"""AMP: optimizer steps the gradient scaler skips (inf/NaN gradients) are counted, logged and checkpointed.

On CUDA the trainer uses fp16 autocast with a GradScaler, which skips the optimizer step when the
scaled gradients overflow. A CPU has no fp16 overflow to provoke (bf16 autocast keeps fp32
gradients), so these tests run the trainer's real step functions with a real, enabled CPU
GradScaler and put an inf into one gradient after a real backward pass, which is exactly what
an fp16 overflow leaves behind.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch

from hpacam.cam.checkpoint import save_checkpoint
from hpacam.cam.config import TrainCamConfig
from hpacam.cam.models import create_model
from hpacam.cam.puzzle import PuzzleNet
from hpacam.cam.train import (Processes, StepContext, TrainState, build_optimizer, build_scheduler,
                              checkpoint_payload, epoch_row, log_epoch, micro_step, optimizer_step, restore)
from hpacam.classes import NUM_CLASSES
from hpacam.config import load_config

RECIPE = Path(__file__).resolve().parents[1] / "configs" / "cam" / "tiny_cpu.yaml"


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors gain nothing from more threads, and on a busy machine OpenMP spinning makes them slow."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def step_context(*overrides: str) -> tuple[StepContext, torch.nn.Module]:
    cfg = load_config(TrainCamConfig, RECIPE, ["data.image_size=32", "optim.name=sgd", "optim.lr=0.1",
                                               "model.kwargs={channels: [8, 16, 32, 64], stem_width: 8}",
                                               *overrides])
    torch.manual_seed(0)
    model = create_model(cfg.model.name, pretrained=False, in_chans=4, output_stride=cfg.model.output_stride,
                         **cfg.model.kwargs)
    optimizer = build_optimizer(model, cfg.optim)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 16, enabled=True)
    ctx = StepContext(cfg, Processes(), PuzzleNet(model, cfg.loss.num_pieces), optimizer,
                      build_scheduler(optimizer, 10, 10, cfg.optim), scaler, TrainState(), total_steps=10)
    return ctx, model


def backward_on_a_batch(ctx: StepContext) -> None:
    images = torch.rand(2, 4, 32, 32)
    targets = torch.zeros(2, NUM_CLASSES)
    targets[:, 0] = 1
    micro_step(ctx, images, targets, sync=True)


def weights(model: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize("clip", ["optim.grad_clip=0", "optim.grad_clip=1.0"])
def test_an_overflowing_step_is_skipped_counted_and_logged(clip, caplog):
    ctx, model = step_context(clip)
    backward_on_a_batch(ctx)
    before = weights(model)
    optimizer_step(ctx)  # finite gradients: a real update, nothing skipped
    assert ctx.state.amp_skipped == 0 and ctx.state.step == 1
    assert any(not torch.equal(a, b) for a, b in zip(before, weights(model)))

    backward_on_a_batch(ctx)
    next(p for p in model.parameters() if p.grad is not None).grad[0] = float("inf")
    before, scale = weights(model), ctx.scaler.get_scale()
    with caplog.at_level(logging.WARNING, logger="hpacam.cam.train"):
        optimizer_step(ctx)
    assert ctx.state.amp_skipped == 1 and ctx.state.step == 2
    assert all(torch.equal(a, b) for a, b in zip(before, weights(model)))  # the step was not taken
    assert ctx.scaler.get_scale() == scale / 2
    assert "optimizer step skipped (1 so far)" in caplog.text


@pytest.mark.filterwarnings(r"ignore:Detected call of `lr_scheduler.step\(\)` before")
def test_the_count_reaches_the_epoch_log_and_survives_a_resume(tmp_path, caplog):
    ctx, model = step_context()
    for _ in range(3):
        backward_on_a_batch(ctx)
        next(p for p in model.parameters() if p.grad is not None).grad[0] = float("nan")
        optimizer_step(ctx)
    assert ctx.state.amp_skipped == 3

    row = epoch_row(0, ctx.state, ctx.optimizer, {"loss": 0.5}, 1.0, finished=False)
    with caplog.at_level(logging.INFO, logger="hpacam.cam.train"):
        log_epoch(row, None)
    assert row["amp_skipped"] == 3 and "amp_skipped=3" in caplog.text

    save_checkpoint(tmp_path / "last.pt", checkpoint_payload(ctx.cfg, model, ctx.optimizer, ctx.scheduler,
                                                             ctx.scaler, ctx.state, steps_per_epoch=10))
    fresh, fresh_model = step_context()
    state = restore(tmp_path / "last.pt", fresh_model, fresh.optimizer, fresh.scheduler, fresh.scaler, 10)
    assert state.amp_skipped == 3 and state.step == 3
    assert fresh.scaler.get_scale() == ctx.scaler.get_scale() == 2.0 ** 13
