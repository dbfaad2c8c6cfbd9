"""Throughput of the cell-level classifier stage: crops/s when cutting, training and predicting.

    python bench/cell_model.py [--recipe configs/cell/tiny_cpu.yaml] [--images 16] [--size 256]
                               [--steps 20] [--device cpu|cuda] [--threads 2]

Generates synthetic images, cuts every segmented cell once (crop cache build, segmentation
included), then times training steps of the recipe's model (built without pretrained weights;
AMP and channels_last as the recipe says) and inference with the four flips. Prints crops/s of
each; the figures go to docs/benchmarks.md with the machine named.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=REPO / "configs" / "cell" / "tiny_cpu.yaml")
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    from hpacam.cam.models import create_model
    from hpacam.cellmodel.config import TrainCellConfig
    from hpacam.cellmodel.crops import CropSettings, build_crop_set
    from hpacam.cellmodel.data import CellCropDataset, input_channels
    from hpacam.cellmodel.predict import LoadedCellModel, predict_crops
    from hpacam.config import load_config
    from hpacam.segmentation import SegmentationConfig, Segmenter
    from hpacam.segmentation.settings import CacheSettings
    from hpacam.synth import generate_dataset

    torch.set_num_threads(args.threads)
    cfg = load_config(TrainCellConfig, args.recipe)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate_dataset(root / "synth", args.images, args.size, seed=0, progress=False)
        ids = sorted({p.name.rsplit("_", 1)[0] for p in (root / "synth" / "images").glob("*.png")})
        segmenter = Segmenter(SegmentationConfig(cache=CacheSettings(enabled=False)))
        settings = CropSettings(size=cfg.data.image_size, margin=cfg.cells.crops.margin)
        start = time.perf_counter()
        crops = build_crop_set(root / "crops", root / "synth" / "images", ids, segmenter, settings, progress=False)
        cut = time.perf_counter() - start
        n = len(crops.crops)
        print(f"recipe {args.recipe.name}: {cfg.model.name} on {settings.size} px crops, mask {cfg.cells.crops.mask}; "
              f"device {device}, {args.threads} threads")
        print(f"cut (segment + crop + write): {n} crops of {args.images} images at {args.size} px in {cut:.2f} s "
              f"= {n / cut:.0f} crops/s")

        chans = input_channels(cfg.cells.crops.mask)
        model = create_model(cfg.model.name, in_chans=chans, output_stride=cfg.model.output_stride,
                             **cfg.model.kwargs).to(device)
        if cfg.train.channels_last:
            model = model.to(memory_format=torch.channels_last)
        data = CellCropDataset(crops.crops, np.zeros((n, 19), np.float32), cfg.cells.crops.mask, cfg.augment)
        batch = cfg.train.batch_size
        rows = np.arange(batch) % n
        x = torch.stack([data[int(i)][0] for i in rows]).to(device)
        y = torch.zeros(batch, 19, device=device)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        amp = cfg.train.amp and device.type == "cuda"
        scaler = torch.amp.GradScaler("cuda", enabled=amp)
        for step in range(args.steps + 2):
            if step == 2:  # two warm-up steps
                if device.type == "cuda":
                    torch.cuda.synchronize()
                start = time.perf_counter()
            with torch.autocast(device.type, dtype=torch.float16 if device.type == "cuda" else torch.bfloat16,
                                enabled=amp):
                loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x).float(), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        if device.type == "cuda":
            torch.cuda.synchronize()
        trained = time.perf_counter() - start
        print(f"train: batch {batch}, {args.steps} steps in {trained:.2f} s = {args.steps * batch / trained:.0f} crops/s "
              f"(model only; the loader's decoding of cached crops is not included)")

        member = LoadedCellModel("bench", model.eval(), settings, cfg.cells.crops.mask)
        predict_crops(member, np.asarray(crops.crops[: min(n, 64)]), device)  # warm-up
        start = time.perf_counter()
        predict_crops(member, np.asarray(crops.crops), device, flips=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        predicted = time.perf_counter() - start
        print(f"predict (4 flips): {n} crops in {predicted:.2f} s = {n / predicted:.0f} crops/s")


if __name__ == "__main__":
    main()
