"""The Puzzle-CAM training loop, readable in one sitting.

    train(cfg) runs: data -> model -> optimizer/schedule -> [resume] -> epochs of
    (optimizer steps of `accumulation` micro-batches) -> validation -> checkpoints + metrics.csv.

One process trains on one CPU or GPU; `torchrun --nproc_per_node=N` starts N processes that
train one model with DistributedDataParallel (each takes every N-th image of the epoch's order;
rank 0 alone writes files). Positions are counted in optimizer steps, and every random choice
is either seeded per (epoch, sample) or saved in the checkpoint, so a resumed run continues
exactly where the stopped one was.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm import tqdm

from hpacam.cam.checkpoint import capture_rng_state, read_checkpoint, restore_rng_state, save_checkpoint
from hpacam.cam.config import OptimConfig, TrainCamConfig, check_config, choose_weights
from hpacam.cam.data import CamDataset, ShardedSampler, read_sources, shard_size, split_folds, summarise_images
from hpacam.cam.metrics import classification_metrics
from hpacam.cam.models import CamClassifier, create_model, parameter_groups
from hpacam.cam.puzzle import PuzzleNet, alpha_at, classification_loss, puzzle_cam_loss
from hpacam.classes import CLASS_NAMES
from hpacam.config import to_dict
from hpacam.devices import resolve_device
from hpacam.fileio import atomic_path, remove_stale_temp_files
from hpacam.images import COLOR_MODES
from hpacam.runs import prepare_run_dir

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; training stopped before writing any checkpoint."""


# ----------------------------------------------------------------------------- processes


@dataclass
class Processes:
    """Where this process sits: rank among world_size, and the device it trains on."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def start_processes(device_name: str, backend: str) -> Processes:
    """Join the torchrun process group when launched by torchrun; a single process otherwise."""
    use_cuda = resolve_device(device_name, "train.device") == "cuda"
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return Processes(device=torch.device("cuda" if use_cuda else "cpu"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local_rank}") if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(device)
    if backend == "auto":
        backend = "nccl" if use_cuda else "gloo"
    dist.init_process_group(backend=backend)
    return Processes(rank=dist.get_rank(), world_size=dist.get_world_size(), device=device)


def mean_over_processes(value: torch.Tensor, procs: Processes) -> float:
    """The average of a scalar over all processes (so every rank sees a NaN on any rank)."""
    value = value.detach().float().reshape(1)
    if procs.distributed:
        dist.all_reduce(value)
        value /= procs.world_size
    return float(value)


# ----------------------------------------------------------------------------- optimizer and schedule


def build_optimizer(model: CamClassifier, cfg: OptimConfig) -> torch.optim.Optimizer:
    """SGD (Nesterov) or Adam over the four parameter groups, weight decay on weights only."""
    groups = []
    for index, (params, multiplier) in enumerate(zip(parameter_groups(model), cfg.lr_multipliers)):
        if params:
            decay = cfg.weight_decay if index % 2 == 0 else 0.0
            groups.append({"params": params, "lr": cfg.lr * multiplier, "weight_decay": decay})
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum,
                               nesterov=cfg.nesterov and cfg.momentum > 0)
    return torch.optim.Adam(groups, lr=cfg.lr)


def lr_factor(step: int, total_steps: int, steps_per_epoch: int, cfg: OptimConfig) -> float:
    """Multiplier of the base learning rates after `step` optimizer steps."""
    progress = min(step / max(total_steps, 1), 1.0)
    if cfg.schedule == "poly":
        return (1.0 - progress) ** cfg.poly_power
    if cfg.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if cfg.schedule == "step":
        return cfg.step_gamma ** (step // max(cfg.step_epochs * steps_per_epoch, 1))
    return 1.0


def build_scheduler(optimizer, total_steps: int, steps_per_epoch: int, cfg: OptimConfig):
    def factor(step: int) -> float:
        return lr_factor(step, total_steps, steps_per_epoch, cfg)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ----------------------------------------------------------------------------- state and logs


@dataclass
class TrainState:
    """Counters that go into every checkpoint."""

    step: int = 0
    best: float | None = None
    amp_skipped: int = 0
    last_metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    last_checkpoint: Path | None
    best_checkpoint: Path | None
    best: float | None
    metrics: dict[str, float]


def is_better(value: float, best: float | None, metric: str) -> bool:
    if value is None or math.isnan(value):
        return False
    if best is None:
        return True
    return value < best if metric == "val_loss" else value > best


def write_metrics_csv(path: Path, rows: list[dict]) -> None:
    with atomic_path(path) as tmp:
        pd.DataFrame(rows).to_csv(tmp, index=False)


def read_metrics_rows(path: Path, up_to_step: int) -> list[dict]:
    """Rows of an earlier run's metrics.csv, dropping any written after the resumed checkpoint."""
    if not path.is_file():
        return []
    frame = pd.read_csv(path)
    return frame[frame["step"] <= up_to_step].to_dict("records")


def open_tensorboard(run_dir: Path, enabled: bool):
    if not enabled:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        raise ValueError("train.tensorboard=true needs the `tensorboard` package "
                           "(pip install tensorboard), or set train.tensorboard=false") from exc
    return SummaryWriter(str(run_dir / "tensorboard"))


# ----------------------------------------------------------------------------- checkpoints


def checkpoint_payload(cfg: TrainCamConfig, model: CamClassifier, optimizer, scheduler, scaler,
                       state: TrainState, steps_per_epoch: int) -> dict[str, Any]:
    return {
        "arch": model.arch,
        "classes": list(CLASS_NAMES),
        "channels": list(COLOR_MODES[cfg.data.mode]),
        "config": to_dict(cfg),
        "epoch": state.step // steps_per_epoch,  # epochs completed
        "step": state.step,
        "steps_per_epoch": steps_per_epoch,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict(),
        "rng": capture_rng_state(),
        "metric": {"name": cfg.train.best_metric, "value": state.last_metrics.get(cfg.train.best_metric),
                   "best": state.best},
        "metrics": dict(state.last_metrics),
        "amp_skipped": state.amp_skipped,
        "torch_version": str(torch.__version__),
    }


def resume_path(cfg: TrainCamConfig) -> Path | None:
    if cfg.train.resume is None:
        return None
    if cfg.train.resume == "auto":
        path = Path(cfg.run_dir) / "last.pt"
        return path if path.is_file() else None
    return Path(cfg.train.resume)


def restore(path: Path, model, optimizer, scheduler, scaler, steps_per_epoch: int) -> TrainState:
    checkpoint = read_checkpoint(path)
    if checkpoint["arch"] != model.arch:
        raise ValueError(f"{path}: checkpoint architecture {checkpoint['arch']} differs from the "
                         f"configured one {model.arch}")
    if checkpoint["steps_per_epoch"] != steps_per_epoch:
        log.warning("%s: trained with %d steps per epoch, this config gives %d; the resume is not exact",
                    path, checkpoint["steps_per_epoch"], steps_per_epoch)
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    scheduler.load_state_dict(checkpoint["scheduler"])
    scaler.load_state_dict(checkpoint["scaler"])
    restore_rng_state(checkpoint["rng"])
    log.info("resumed from %s at step %d (epoch %d)", path, checkpoint["step"], checkpoint["epoch"])
    return TrainState(step=checkpoint["step"], best=checkpoint["metric"]["best"],
                      amp_skipped=checkpoint.get("amp_skipped", 0), last_metrics=dict(checkpoint["metrics"]))


# ----------------------------------------------------------------------------- one epoch


@dataclass
class StepContext:
    """Everything a training step needs, bundled so the epoch loop stays short."""

    cfg: TrainCamConfig
    procs: Processes
    net: torch.nn.Module  # PuzzleNet, possibly wrapped in DDP
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: torch.amp.GradScaler
    state: TrainState
    total_steps: int
    tensorboard: Any = None

    def autocast(self):
        device = self.procs.device.type
        dtype = torch.float16 if device == "cuda" else torch.bfloat16
        return torch.autocast(device_type=device, dtype=dtype, enabled=self.cfg.train.amp)

    def to_device(self, images: torch.Tensor, targets: torch.Tensor):
        memory_format = torch.channels_last if self.cfg.train.channels_last else torch.contiguous_format
        images = images.to(self.procs.device, non_blocking=True).contiguous(memory_format=memory_format)
        return images, targets.to(self.procs.device, non_blocking=True)


def micro_step(ctx: StepContext, images, targets, sync: bool) -> dict[str, float]:
    """Forward, loss and backward of one micro-batch; gradients are all-reduced only if `sync`."""
    no_sync = ctx.net.no_sync if isinstance(ctx.net, DistributedDataParallel) and not sync else contextlib.nullcontext
    with no_sync():
        with ctx.autocast():
            outputs = ctx.net(images)
        alpha = alpha_at(ctx.state.step, ctx.total_steps, ctx.cfg.loss)
        loss, terms = puzzle_cam_loss(outputs, targets, ctx.cfg.loss, alpha)
        terms["loss"] = mean_over_processes(loss, ctx.procs)
        if not math.isfinite(terms["loss"]):
            raise NonFiniteLossError(
                f"loss is {terms['loss']} at step {ctx.state.step} (terms {terms}); training stopped and "
                f"the last good checkpoint in {ctx.cfg.run_dir} was kept. Lower optim.lr, or set train.amp=false")
        ctx.scaler.scale(loss / ctx.cfg.train.accumulation).backward()
    return terms


def optimizer_step(ctx: StepContext) -> None:
    """Clip, step (unless the fp16 scaler found inf gradients), update the schedule, zero grads."""
    if ctx.cfg.optim.grad_clip > 0:
        ctx.scaler.unscale_(ctx.optimizer)
        torch.nn.utils.clip_grad_norm_(ctx.net.parameters(), ctx.cfg.optim.grad_clip)
    scale_before = ctx.scaler.get_scale() if ctx.scaler.is_enabled() else None
    ctx.scaler.step(ctx.optimizer)
    ctx.scaler.update()
    if scale_before is not None and ctx.scaler.get_scale() < scale_before:
        ctx.state.amp_skipped += 1
        log.warning("AMP: inf/NaN gradients at step %d, optimizer step skipped (%d so far)",
                    ctx.state.step, ctx.state.amp_skipped)
    ctx.scheduler.step()
    ctx.optimizer.zero_grad(set_to_none=True)
    ctx.state.step += 1


def train_epoch(ctx: StepContext, loader: DataLoader, epoch: int, stop_at: int) -> dict[str, float]:
    """Optimizer steps until the epoch ends or `stop_at` steps are done -> mean loss terms."""
    accumulation = ctx.cfg.train.accumulation
    sums: dict[str, float] = {}
    count = 0
    bar = tqdm(loader, desc=f"epoch {epoch}", disable=not (ctx.procs.is_main and ctx.cfg.train.progress),
               leave=False, dynamic_ncols=True)
    ctx.net.train()
    for micro, (images, targets, _) in enumerate(bar):
        images, targets = ctx.to_device(images, targets)
        sync = (micro + 1) % accumulation == 0
        terms = micro_step(ctx, images, targets, sync)
        for name, value in terms.items():
            sums[name] = sums.get(name, 0.0) + value
        count += 1
        if not sync:
            continue
        lr = ctx.optimizer.param_groups[0]["lr"]  # the rate this step uses
        optimizer_step(ctx)
        bar.set_postfix(loss=f"{terms['loss']:.4f}", lr=f"{lr:.2e}", step=ctx.state.step)
        log_step(ctx, terms, lr)
        if ctx.state.step >= stop_at:
            break
    return {name: value / max(count, 1) for name, value in sums.items()}


def log_step(ctx: StepContext, terms: dict[str, float], lr: float) -> None:
    step = ctx.state.step
    if ctx.procs.is_main and ctx.cfg.train.log_every > 0 and step % ctx.cfg.train.log_every == 0:
        detail = " ".join(f"{k}={v:.4f}" for k, v in terms.items())
        log.info("step %d/%d lr=%.3e %s", step, ctx.total_steps, lr, detail)
    if ctx.tensorboard is not None and ctx.procs.is_main:
        for name, value in terms.items():
            ctx.tensorboard.add_scalar(f"train/{name}", value, step)
        ctx.tensorboard.add_scalar("train/lr", lr, step)


# ----------------------------------------------------------------------------- validation


@torch.no_grad()
def validate(ctx: StepContext, model: CamClassifier, loader: DataLoader) -> dict[str, float]:
    """Image-level metrics on the validation fold, gathered from every process."""
    if ctx.procs.distributed:  # evaluate rank 0's batch-norm statistics everywhere
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)
    model.eval()
    indices, probs, targets, losses = [], [], [], []
    bar = tqdm(loader, desc="validate", disable=not (ctx.procs.is_main and ctx.cfg.train.progress), leave=False)
    for images, target, index in bar:
        images, target = ctx.to_device(images, target)
        with ctx.autocast():
            logits = model(images)
        losses.append(float(classification_loss(logits, target, ctx.cfg.loss)) * len(index))
        indices.append(index.numpy())
        probs.append(torch.sigmoid(logits.float()).cpu().numpy())
        targets.append(target.cpu().numpy())
    local = (np.concatenate(indices), np.concatenate(probs), np.concatenate(targets), sum(losses))
    if ctx.procs.distributed:
        gathered = [None] * ctx.procs.world_size
        dist.all_gather_object(gathered, local)
    else:
        gathered = [local]
    index = np.concatenate([g[0] for g in gathered])
    order = np.argsort(index)
    prob = np.concatenate([g[1] for g in gathered])[order]
    target = np.concatenate([g[2] for g in gathered])[order]
    metrics = classification_metrics(prob, target, ctx.cfg.train.thresholds)
    metrics["val_loss"] = sum(g[3] for g in gathered) / max(len(index), 1)
    return metrics


# ----------------------------------------------------------------------------- the run


def make_loader(dataset: Any, sampler: ShardedSampler, batch_size: int, cfg: TrainCamConfig,
                procs: Processes) -> DataLoader:
    # The loader's own generator keeps it from drawing on the global torch RNG, which the
    # checkpoint saves: creating an iterator must not shift what a resumed run would see.
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=cfg.data.num_workers,
                      pin_memory=procs.device.type == "cuda", drop_last=False,
                      generator=torch.Generator().manual_seed(cfg.train.seed))


def seed_everything(seed: int) -> None:
    import random

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass
class TrainingData:
    """What the loop trains on: datasets of (input, target, index) items with `set_epoch(epoch)`.

    The CAM stage's are whole images (`cam_training_data`); the cell stage's are crops of cells
    (`hpacam.cellmodel.train`). Everything else, from resume to DDP, is the same loop.
    """

    train_set: Any
    val_set: Any | None
    in_chans: int


def cam_training_data(cfg: TrainCamConfig, procs: Processes) -> TrainingData:
    train_images, val_images = split_folds(read_sources(cfg.data), cfg.data)
    if procs.is_main:
        log.info("train: %s", summarise_images(train_images))
        log.info("validation: %s", summarise_images(val_images) if val_images is not None else "none (data.fold=-1)")
    train_set = CamDataset(train_images, cfg.data.image_size, cfg.data.mode, cfg.augment, cfg.train.seed,
                           read_options=cfg.data.read, cache=cfg.data.cache_images)
    val_set = None
    if val_images is not None:
        val_set = CamDataset(val_images, cfg.data.image_size, cfg.data.mode, read_options=cfg.data.read)
    return TrainingData(train_set, val_set, len(COLOR_MODES[cfg.data.mode]))


DataBuilder = Callable[[TrainCamConfig, Processes], TrainingData]


def train(cfg: TrainCamConfig, data_builder: DataBuilder = cam_training_data,
          check: Callable[[TrainCamConfig], None] = check_config,
          runner: Optional[Callable[[TrainCamConfig, Processes, DataBuilder], TrainResult]] = None) -> TrainResult:
    """Train a classifier as `cfg` says; returns where the checkpoints are and the last metrics.

    `runner` replaces `run_training` for a stage that trains several models in one process group
    (the cell stage's out-of-fold rounds); it gets the same started processes and data builder.
    """
    check(cfg)
    procs = start_processes(cfg.train.device, cfg.train.dist_backend)
    try:
        return (runner or run_training)(cfg, procs, data_builder)
    except Exception as exc:
        if procs.is_main:
            log.error("training stopped: %s", exc)  # the run folder's log.txt keeps the cause
        raise
    finally:
        close_run_log(Path(cfg.run_dir) / "log.txt")
        if procs.distributed:
            dist.destroy_process_group()


def main_of_script(prog: str, run: Callable[[Any], TrainResult], cfg: TrainCamConfig,
                   extra_errors: tuple[type[Exception], ...] = ()) -> int:
    """A training script's body: run, one line on stderr and status 1 for bad input, else where the
    checkpoints are. Shared by train_cam.py and train_cell.py, so both fail and report alike."""
    from hpacam.cam.checkpoint import CheckpointError
    from hpacam.cam.models import PretrainedWeightsError
    from hpacam.images import ImageReadError
    from hpacam.labels import LabelFileError

    try:
        result = run(cfg)
    except (ImageReadError, LabelFileError, CheckpointError, PretrainedWeightsError, NonFiniteLossError,
            ValueError, *extra_errors) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 1
    if result.last_checkpoint is not None:
        print(f"last checkpoint: {result.last_checkpoint}")
        if result.best_checkpoint is not None:
            print(f"best checkpoint: {result.best_checkpoint} ({cfg.train.best_metric} = {result.best:.4f})")
    return 0


def close_run_log(log_file: Path) -> None:
    """Detach this run's log file, so a later run in the same process does not write into it."""
    root = logging.getLogger()
    target = str(log_file.resolve())
    for handler in list(root.handlers):
        if getattr(handler, "baseFilename", None) == target:
            root.removeHandler(handler)
            handler.close()


def build_model(cfg: TrainCamConfig, procs: Processes, in_chans: int) -> tuple[CamClassifier, torch.nn.Module]:
    """(the classifier, its training view: PuzzleNet, wrapped in DDP when distributed)."""
    download, weights_file = choose_weights(cfg.model)
    if download and cfg.model.pretrained_path is not None:
        log.warning("%s not found: model.pretrained=true, so the library downloads the weights",
                    cfg.model.pretrained_path)
    model = create_model(cfg.model.name, pretrained=download,
                         in_chans=in_chans, output_stride=cfg.model.output_stride,
                         pretrained_path=weights_file, mean=cfg.model.mean, std=cfg.model.std,
                         **cfg.model.kwargs).to(procs.device)
    if cfg.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = PuzzleNet(model, cfg.loss.num_pieces, puzzle=cfg.loss.mode == "puzzle")
    if procs.distributed:
        device_ids = [procs.device.index] if procs.device.type == "cuda" else None
        net = DistributedDataParallel(net, device_ids=device_ids)
    return model, net


def stop_step(train_cfg, total_steps: int, steps_per_epoch: int) -> int:
    """The step a run stops at: the earliest of the whole schedule and the two stop limits."""
    limits = [total_steps]
    if train_cfg.stop_after_steps:
        limits.append(train_cfg.stop_after_steps)
    if train_cfg.stop_after_epochs:
        limits.append(train_cfg.stop_after_epochs * steps_per_epoch)
    return min(limits)


def count_steps_per_epoch(n_images: int, cfg: TrainCamConfig, procs: Processes) -> int:
    """Whole optimizer steps each process can take per epoch (leftover items wait for the next epoch)."""
    per_step = cfg.train.batch_size * cfg.train.accumulation
    steps = shard_size(n_images, procs.world_size) // per_step
    if steps == 0:
        raise ValueError(f"{n_images} training items over {procs.world_size} process(es) are fewer than one "
                         f"optimizer step (batch_size {cfg.train.batch_size} x accumulation {cfg.train.accumulation})")
    return steps


@dataclass
class Loaders:
    train_set: Any
    train_sampler: ShardedSampler
    train: DataLoader
    validation: DataLoader | None


def build_loaders(data: TrainingData, cfg: TrainCamConfig, procs: Processes) -> Loaders:
    train_sampler = ShardedSampler(len(data.train_set), True, cfg.train.seed, procs.rank, procs.world_size)
    validation = None
    if data.val_set is not None:
        val_sampler = ShardedSampler(len(data.val_set), False, 0, procs.rank, procs.world_size, pad=False)
        validation = make_loader(data.val_set, val_sampler, cfg.data.val_batch_size or 2 * cfg.train.batch_size,
                                 cfg, procs)
    return Loaders(data.train_set, train_sampler,
                   make_loader(data.train_set, train_sampler, cfg.train.batch_size, cfg, procs), validation)


def start_or_resume(cfg: TrainCamConfig, ctx: StepContext, model: CamClassifier, steps_per_epoch: int) -> bool:
    """Restore `ctx` from the checkpoint `train.resume` names, if any; True when resumed."""
    path = resume_path(cfg)
    if path is not None:
        ctx.state = restore(path, model, ctx.optimizer, ctx.scheduler, ctx.scaler, steps_per_epoch)
        return True
    if ctx.procs.is_main and (Path(cfg.run_dir) / "last.pt").is_file():
        log.warning("%s already holds last.pt; this fresh run overwrites it after its first epoch "
                    "(train.resume=auto continues it instead)", cfg.run_dir)
    return False


def finish_epoch(ctx: StepContext, model: CamClassifier, loaders: Loaders, epoch: int, train_terms: dict,
                 started: float, steps_per_epoch: int, rows: list[dict]) -> bool:
    """Validate (at an epoch end), write last.pt (+ best.pt) and metrics.csv; True if best.pt was written."""
    cfg, state = ctx.cfg, ctx.state
    finished = state.step % steps_per_epoch == 0
    if finished:
        state.last_metrics = validate(ctx, model, loaders.validation) if loaders.validation is not None else {}
    improved = finished and is_better(state.last_metrics.get(cfg.train.best_metric), state.best,
                                      cfg.train.best_metric)
    if improved:
        state.best = state.last_metrics[cfg.train.best_metric]
    if ctx.procs.is_main:
        # last.pt is written last: it is the commit point. A kill before it leaves a metrics row or
        # best.pt ahead of last.pt, which the resumed run drops or rewrites when it redoes this epoch;
        # the other order would lose the row (or keep a stale best.pt) for good.
        run_dir = Path(cfg.run_dir)
        rows.append(epoch_row(epoch, state, ctx.optimizer, train_terms, time.time() - started, finished))
        write_metrics_csv(run_dir / "metrics.csv", rows)
        payload = checkpoint_payload(cfg, model, ctx.optimizer, ctx.scheduler, ctx.scaler, state, steps_per_epoch)
        if improved:
            save_checkpoint(run_dir / "best.pt", payload)
        save_checkpoint(run_dir / "last.pt", payload)
        log_epoch(rows[-1], ctx.tensorboard)
    if ctx.procs.distributed:
        dist.barrier()  # nobody starts the next epoch (or exits) before the files exist
    return improved


def run_training(cfg: TrainCamConfig, procs: Processes, data_builder: DataBuilder = cam_training_data) -> TrainResult:
    run_dir = Path(cfg.run_dir)
    choose_weights(cfg.model)  # a missing weights file fails now, before the run folder and the data
    if procs.is_main:
        prepare_run_dir(run_dir, cfg)
        log.info("training on %s x %d process(es), run folder %s", procs.device, procs.world_size, run_dir)
        for path in remove_stale_temp_files(run_dir):  # writes a killed run never finished
            log.info("removed %s, left by an interrupted write", path.name)
    data = data_builder(cfg, procs)
    seed_everything(cfg.train.seed)  # after the data: building it may draw (e.g. a model for pseudo-labels)
    model, net = build_model(cfg, procs, data.in_chans)
    steps_per_epoch = count_steps_per_epoch(len(data.train_set), cfg, procs)
    total_steps = cfg.train.epochs * steps_per_epoch
    optimizer = build_optimizer(model, cfg.optim)
    ctx = StepContext(cfg, procs, net, optimizer, build_scheduler(optimizer, total_steps, steps_per_epoch, cfg.optim),
                      torch.amp.GradScaler("cuda", enabled=cfg.train.amp and procs.device.type == "cuda"),
                      TrainState(), total_steps, open_tensorboard(run_dir, cfg.train.tensorboard and procs.is_main))
    resumed = start_or_resume(cfg, ctx, model, steps_per_epoch)
    loaders = build_loaders(data, cfg, procs)
    rows = read_metrics_rows(run_dir / "metrics.csv", ctx.state.step) if resumed else []
    wrote_best = resumed and (run_dir / "best.pt").is_file()
    stop_at = stop_step(cfg.train, total_steps, steps_per_epoch)
    log.info("%d steps per epoch, %d in all; starting at step %d", steps_per_epoch, total_steps, ctx.state.step)

    per_step = cfg.train.batch_size * cfg.train.accumulation
    while ctx.state.step < stop_at:
        epoch, done_in_epoch = divmod(ctx.state.step, steps_per_epoch)
        started = time.time()
        loaders.train_set.set_epoch(epoch)
        loaders.train_sampler.set_epoch(epoch, skip=done_in_epoch * per_step, limit=steps_per_epoch * per_step)
        train_terms = train_epoch(ctx, loaders.train, epoch, stop_at)
        wrote_best |= finish_epoch(ctx, model, loaders, epoch, train_terms, started, steps_per_epoch, rows)

    if ctx.tensorboard is not None:
        ctx.tensorboard.close()
    return TrainResult(run_dir, ctx.state.step, run_dir / "last.pt" if procs.is_main else None,
                       run_dir / "best.pt" if procs.is_main and wrote_best else None, ctx.state.best,
                       dict(ctx.state.last_metrics))


def epoch_row(epoch: int, state: TrainState, optimizer, train_terms: dict, seconds: float,
              finished: bool) -> dict[str, Any]:
    row = {"epoch": epoch, "step": state.step, "finished": finished, "lr": optimizer.param_groups[0]["lr"],
           **{f"train_{k}": v for k, v in train_terms.items()}, "amp_skipped": state.amp_skipped,
           "seconds": round(seconds, 2)}
    if finished:
        row.update({k: v for k, v in state.last_metrics.items() if not k.startswith("auc_")})
    return row


def log_epoch(row: dict[str, Any], tensorboard) -> None:
    shown = {k: v for k, v in row.items() if k in ("train_loss", "val_loss", "macro_auc", "amp_skipped")
             or k.startswith("macro_f1")}
    log.info("epoch %d (step %d%s): %s", row["epoch"], row["step"], "" if row["finished"] else ", stopped mid-epoch",
             " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in shown.items()))
    if tensorboard is not None:
        for key, value in row.items():
            if isinstance(value, float) and key not in ("lr",):
                tensorboard.add_scalar(f"epoch/{key}", value, row["step"])
