"""Training and inference throughput of one recipe, through the package's own training and TTA code.

    python bench/gpu_throughput.py --recipe configs/cam/resnest101_640.yaml --device cuda \
        --amp fp16 bf16 --json out/gpu.jsonl
    python bench/gpu_throughput.py --recipe configs/cam/tiny_cpu.yaml --device cpu \
        --steps 2 --warmup 1 --image-size 64 --batch-size 2 --infer-size 128   # the CPU check

Training: the model is built as `hpacam.cam.train.build_model` builds it (random weights, no
weights file), and each optimizer step is the loop's own `micro_step` x `train.accumulation`
then `optimizer_step` (Puzzle-CAM: full image + tiles, the recipe's loss, GradScaler for fp16,
channels_last as the recipe says) on one random batch kept in (pinned) host memory, so the
host-to-device copy is included but decoding is not (bench/gpu_session.sh part f has the loader).
`--amp bf16` is not a path the training loop offers on CUDA (it always autocasts to fp16 there):
it overrides the autocast dtype only, to show what bf16 would give; its records say so.
Inference: CAM recipes run `hpacam.cam.tta.predict_activated_maps` (the inference TTA: the recipe
size at the given scales x 4 flips, fp32 as inference runs it) on random 2048 px RGBY images;
cell recipes run `hpacam.cellmodel.predict.predict_crops` (4 flips) on random uint8 crops.
`--ddp` (under torchrun) wraps the training view in DistributedDataParallel on the process group
(nccl on CUDA), which the loop itself only does with two or more processes.
Each measurement prints one JSON line and appends it to `--json`; a failed one is a line with
`error` and the exit status is 1, the others still run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:  # run as a script from a checkout where hpacam is not installed
    sys.path.insert(0, str(REPO))

AMP_MODES = ("fp16", "bf16", "off")


# ----------------------------------------------------------------------------- recipe


def load_recipe(path: Path, image_size: int | None, batch_size: int | None):
    """(config, kind) of a CAM or cell recipe, with random weights and the size overrides applied.

    A cell recipe is told apart by its `cells` section, as checkpoints are.
    """
    from hpacam.cam.config import TrainCamConfig
    from hpacam.cellmodel.config import TrainCellConfig
    from hpacam.config import load_config, read_yaml

    kind = "cell" if "cells" in read_yaml(path) else "cam"
    overrides = ["model.pretrained=false", "model.pretrained_path=null"]
    if image_size:
        overrides.append(f"data.image_size={image_size}")
    if batch_size:
        overrides.append(f"train.batch_size={batch_size}")
    cfg = load_config(TrainCellConfig if kind == "cell" else TrainCamConfig, path, overrides)
    return cfg, kind


def input_channels(cfg, kind: str) -> int:
    """What the stage feeds the model: RGBY (or RGB) images, or crops with the mask as the stage says."""
    from hpacam.cellmodel.data import input_channels as crop_channels
    from hpacam.images import COLOR_MODES

    return crop_channels(cfg.cells.crops.mask) if kind == "cell" else len(COLOR_MODES[cfg.data.mode])


# ----------------------------------------------------------------------------- devices


def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device) -> None:
    """Free what the previous measurement left, so each peak is its own."""
    import gc

    import torch

    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device) -> float | None:
    """Peak memory PyTorch allocated since `reset_peak` (None on CPU, where it is not tracked)."""
    import torch

    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_allocated(device) / 2**30, 2)


def device_name(device) -> str:
    import torch

    return torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"


def start_ddp(device_arg: str, backend: str):
    """Join the torchrun process group (backend auto: nccl on CUDA, gloo on CPU) -> Processes."""
    import torch
    import torch.distributed as dist

    from hpacam.cam.train import Processes

    if "WORLD_SIZE" not in os.environ:
        raise SystemExit("--ddp needs torchrun (torchrun --standalone --nproc_per_node=1 ...)")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local_rank}") if device_arg.startswith("cuda") else torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend=backend)
    return Processes(rank=dist.get_rank(), world_size=dist.get_world_size(), device=device), backend


# ----------------------------------------------------------------------------- training


def bench_context_class():
    """StepContext with a choosable autocast dtype: the loop's own context fixes fp16 on CUDA."""
    import torch

    from hpacam.cam.train import StepContext

    @dataclass
    class BenchContext(StepContext):
        amp_dtype: Any = None

        def autocast(self):
            if self.amp_dtype is None:
                return super().autocast()
            return torch.autocast(device_type=self.procs.device.type, dtype=self.amp_dtype,
                                  enabled=self.cfg.train.amp)

    return BenchContext


def training_context(cfg, kind: str, procs, amp: str, total_steps: int, ddp: bool):
    """(the loop's StepContext for `cfg` with `amp`, the bare classifier), built as `run_training` does."""
    import torch
    from torch.nn.parallel import DistributedDataParallel

    from hpacam.cam.train import TrainState, build_model, build_optimizer, build_scheduler

    cfg.train.amp = amp != "off"
    model, net = build_model(cfg, procs, input_channels(cfg, kind))
    if ddp and not isinstance(net, DistributedDataParallel):  # one process: the loop would not wrap
        net = DistributedDataParallel(net, device_ids=[procs.device.index] if procs.device.type == "cuda" else None)
    optimizer = build_optimizer(model, cfg.optim)
    scheduler = build_scheduler(optimizer, total_steps, total_steps, cfg.optim)
    cuda = procs.device.type == "cuda"
    scaler = torch.amp.GradScaler("cuda", enabled=cfg.train.amp and cuda and amp == "fp16")
    dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(amp)
    ctx = bench_context_class()(cfg, procs, net, optimizer, scheduler, scaler, TrainState(), total_steps,
                                amp_dtype=dtype)
    return ctx, model


def random_batch(cfg, kind: str, device, seed: int = 0):
    """One (images in [0, 1], multilabel targets) batch on the host, pinned for CUDA as the loader pins."""
    import torch

    from hpacam.classes import NUM_CLASSES

    gen = torch.Generator().manual_seed(seed)
    size, batch = cfg.data.image_size, cfg.train.batch_size
    images = torch.rand(batch, input_channels(cfg, kind), size, size, generator=gen)
    targets = (torch.rand(batch, NUM_CLASSES, generator=gen) < 0.15).float()
    if device.type == "cuda":
        images, targets = images.pin_memory(), targets.pin_memory()
    return images, targets


def optimizer_steps(ctx, batch, count: int) -> None:
    """`count` optimizer steps of the loop: `accumulation` micro-steps each, the last one syncing."""
    from hpacam.cam.train import micro_step, optimizer_step

    accumulation = ctx.cfg.train.accumulation
    ctx.net.train()
    for _ in range(count):
        for micro in range(accumulation):
            images, targets = ctx.to_device(*batch)
            micro_step(ctx, images, targets, sync=micro + 1 == accumulation)
        optimizer_step(ctx)


def measure_training(cfg, kind: str, procs, amp: str, args) -> dict:
    """Images (or crops) per second of the loop's optimizer steps, after `warmup` untimed ones."""
    ctx, model = training_context(cfg, kind, procs, amp, args.warmup + args.steps, args.ddp)
    batch = random_batch(cfg, kind, procs.device)
    optimizer_steps(ctx, batch, args.warmup)
    synchronize(procs.device)
    reset_peak(procs.device)
    start = time.perf_counter()
    optimizer_steps(ctx, batch, args.steps)
    synchronize(procs.device)
    seconds = time.perf_counter() - start
    items = args.steps * cfg.train.batch_size * cfg.train.accumulation
    return {"items": items, "seconds": round(seconds, 3), "items_per_s": round(items / seconds, 2),
            "steps_per_s": round(args.steps / seconds, 3), "peak_gib": peak_gib(procs.device),
            "amp_skipped": ctx.state.amp_skipped, "package_path": amp != "bf16" or procs.device.type != "cuda",
            "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2)}


# ----------------------------------------------------------------------------- inference


def measure_cam_inference(cfg, model, device, args) -> dict:
    """Seconds per `--infer-size` px image of the inference TTA (scales x 4 flips, fp32)."""
    import torch

    from hpacam.cam.loading import LoadedCamModel
    from hpacam.cam.tta import TTAConfig, predict_activated_maps

    model = model.to(memory_format=torch.contiguous_format).eval()  # as load_for_inference builds it
    cam = LoadedCamModel("bench", model, cfg.data.image_size, cfg.data.mode, cfg.model.output_stride)
    tta = TTAConfig(scales=list(args.scales), flips=True)
    rng = np.random.default_rng(0)
    image = rng.random((args.infer_size, args.infer_size, input_channels(cfg, "cam")), dtype=np.float32)
    predict_activated_maps(cam, image, tta, "swish", device)  # warm-up
    synchronize(device)
    reset_peak(device)
    start = time.perf_counter()
    for _ in range(args.infer_images):
        predict_activated_maps(cam, image, tta, "swish", device)
    seconds = time.perf_counter() - start
    return {"items": args.infer_images, "seconds": round(seconds, 3), "items_per_s": round(args.infer_images / seconds, 3),
            "s_per_item": round(seconds / args.infer_images, 4), "peak_gib": peak_gib(device),
            "infer_size": args.infer_size, "scales": list(args.scales), "flips": 4, "package_path": True}


def measure_cell_inference(cfg, model, device, args) -> dict:
    """Crops per second of `predict_crops` (4 flips, its own batch of 256) on random uint8 crops."""
    import torch

    from hpacam.cellmodel.crops import CropSettings
    from hpacam.cellmodel.predict import LoadedCellModel, predict_crops

    model = model.to(memory_format=torch.contiguous_format).eval()
    crop = CropSettings(size=cfg.data.image_size, margin=cfg.cells.crops.margin)
    member = LoadedCellModel("bench", model, crop, cfg.cells.crops.mask)
    size = cfg.data.image_size
    crops = np.random.default_rng(0).integers(0, 256, (args.crops, 5, size, size), dtype=np.uint8)
    predict_crops(member, crops[: min(len(crops), 256)], device)  # warm-up
    synchronize(device)
    reset_peak(device)
    start = time.perf_counter()
    predict_crops(member, crops, device, flips=True)
    seconds = time.perf_counter() - start
    return {"items": args.crops, "seconds": round(seconds, 3), "items_per_s": round(args.crops / seconds, 1),
            "peak_gib": peak_gib(device), "flips": 4, "package_path": True}


# ----------------------------------------------------------------------------- records


def base_record(args, cfg, kind: str, procs) -> dict:
    import torch

    return {"bench": "gpu_throughput", "recipe": str(args.recipe), "kind": kind, "model": cfg.model.name,
            "device": str(procs.device), "device_name": device_name(procs.device), "torch": torch.__version__,
            "image_size": cfg.data.image_size, "batch_size": cfg.train.batch_size,
            "accumulation": cfg.train.accumulation, "channels_last": cfg.train.channels_last,
            "ddp": args.ddp, "world_size": procs.world_size, "label": args.label}


def emit(record: dict, json_path: Path | None) -> None:
    """One JSON line on stdout and, when asked, appended to the results file."""
    line = json.dumps(record, sort_keys=False)
    print(line, flush=True)
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        with open(json_path, "a") as handle:
            handle.write(line + "\n")


def guarded(record: dict, measure, *measure_args) -> dict:
    """The record with the measurement's figures, or with its error: one failure must not end the run."""
    import torch

    try:
        return {**record, **measure(*measure_args), "ok": True}
    except Exception as exc:  # noqa: BLE001 - an OOM or a backend failure is a result here
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return {**record, "ok": False, "error": f"{type(exc).__name__}: {str(exc)[:400]}"}


# ----------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, required=True, help="a configs/cam or configs/cell recipe")
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps")
    parser.add_argument("--warmup", type=int, default=3, help="untimed optimizer steps first")
    parser.add_argument("--amp", nargs="+", choices=AMP_MODES, default=None,
                        help="one measurement per mode; default: the recipe's (fp16 if train.amp, else off)")
    parser.add_argument("--image-size", type=int, default=None, help="override data.image_size")
    parser.add_argument("--batch-size", type=int, default=None, help="override train.batch_size")
    parser.add_argument("--parts", default="train,infer", help="train, infer or both (comma list)")
    parser.add_argument("--infer-images", type=int, default=4, help="timed CAM inference images")
    parser.add_argument("--infer-size", type=int, default=2048, help="side of the CAM inference images")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 1.3, 1.6], help="CAM TTA scales")
    parser.add_argument("--crops", type=int, default=2048, help="crops for the cell model's prediction")
    parser.add_argument("--ddp", action="store_true", help="wrap in DDP on the torchrun process group")
    parser.add_argument("--backend", default="auto", choices=("auto", "nccl", "gloo"))
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: leave as is)")
    parser.add_argument("--label", default="", help="free text copied into every record")
    parser.add_argument("--json", type=Path, default=None, help="append the JSON lines here")
    return parser.parse_args(argv)


def processes(args):
    """(Processes, backend or None): one plain process, or the torchrun group for --ddp."""
    import torch

    from hpacam.cam.train import Processes

    if args.ddp:
        return start_ddp(args.device, args.backend)
    device = torch.device(args.device)
    if device.type == "cuda":  # "cuda" -> "cuda:N", so every later call names the same card
        device = torch.device("cuda", torch.cuda.current_device() if device.index is None else device.index)
        torch.cuda.set_device(device)
    return Processes(device=device), None


def run(args) -> bool:
    """Every asked-for measurement of one recipe; True if all succeeded."""
    import torch

    from hpacam.cam.models import create_model

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg, kind = load_recipe(args.recipe, args.image_size, args.batch_size)
    procs, backend = processes(args)
    record = {**base_record(args, cfg, kind, procs), "backend": backend}
    parts = {p.strip() for p in args.parts.split(",")}
    ok = True
    for amp in (args.amp or ["fp16" if cfg.train.amp else "off"]) if "train" in parts else []:
        result = guarded({**record, "part": "train", "amp": amp}, measure_training, cfg, kind, procs, amp, args)
        emit(result, args.json)
        ok &= result["ok"]
    if "infer" in parts:
        model = create_model(cfg.model.name, in_chans=input_channels(cfg, kind),
                             output_stride=cfg.model.output_stride, **cfg.model.kwargs).to(procs.device)
        measure = measure_cell_inference if kind == "cell" else measure_cam_inference
        result = guarded({**record, "part": "infer", "amp": "off"}, measure, cfg, model, procs.device, args)
        emit(result, args.json)
        ok &= result["ok"]
    return ok


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return 0 if run(args) else 1
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
