"""Per-stage seconds per image and peak memory of inference on CPU, at 2048 px by default.

    python bench/inference_stages.py [--size 2048] [--images 4] [--checkpoint PATH | --recipe YAML]
                                     [--scales 1.0,1.3,1.6] [--threads 1]

Without --checkpoint it trains a CAM recipe (the tiny CPU one unless --recipe names another, e.g.
configs/cam/resnest101_640.yaml, built without pretrained weights) for one step on the generated
images, since timing does not depend on the weights, and names the model's size. Stages: reading the four PNGs,
segmentation (cache off), CAM with test-time augmentation, per-cell intensities, calibration,
mask encoding. Peak memory is the maximum resident set size of the inference process (training runs in a child).
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def one_step_checkpoint(recipe: Path, data: Path, run: Path) -> Path:
    """Train in a child process, so the peak memory printed is inference's alone."""
    subprocess.run([sys.executable, str(REPO / "train-cam-model" / "train_cam.py"), "--config", str(recipe),
                    f"run_dir={run}", f"data.sources=[{{images: {data / 'images'}, labels: {data / 'labels.csv'}}}]",
                    "data.fold=-1", "data.num_workers=0", "model.pretrained=false", "train.epochs=1",
                    "train.stop_after_steps=1", "train.batch_size=2", "train.accumulation=1", "train.amp=false",
                    "train.progress=false"], check=True, stderr=subprocess.DEVNULL)
    return run / "last.pt"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--recipe", type=Path, default=REPO / "configs" / "cam" / "tiny_cpu.yaml")
    parser.add_argument("--scales", default="1.0,1.3,1.6")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    from hpacam.cam.loading import load_cam_models
    from hpacam.cam.tta import TTAConfig, predict_maps
    from hpacam.images import read_image
    from hpacam.labels import read_labels
    from hpacam.masks import encode_label_image
    from hpacam.regressor.calibration import sigmoid_calibrate
    from hpacam.regressor.intensities import activate, cell_intensities
    from hpacam.segmentation import SegmentationConfig, Segmenter
    from hpacam.synth import generate_dataset

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "synth"
        generate_dataset(data, args.images, args.size, seed=3, progress=False)
        checkpoint = args.checkpoint or one_step_checkpoint(args.recipe, data, Path(tmp) / "cam")
        cam = load_cam_models([checkpoint])[0]
        params = sum(p.numel() for p in cam.model.parameters())
        tta = TTAConfig(scales=[float(s) for s in args.scales.split(",")])
        cfg = SegmentationConfig()
        cfg.cache.enabled = False
        segmenter = Segmenter(cfg)
        times: dict[str, list[float]] = defaultdict(list)

        def timed(stage, fn):
            start = time.perf_counter()
            out = fn()
            times[stage].append(time.perf_counter() - start)
            return out

        for image_id in read_labels(data / "labels.csv")["ID"]:
            image = timed("read 4 PNGs", lambda: read_image(data / "images", image_id, "rgby"))
            seg = timed("segment", lambda: segmenter.segment_file(data / "images", image_id))
            probs, maps = timed("CAM + TTA", lambda: predict_maps(cam, image, tta))
            result = timed("intensities", lambda: cell_intensities(seg.cells, activate(maps, "swish"), probs))
            timed("calibration (sigmoid)", lambda: sigmoid_calibrate(result.sums))
            timed("encode masks", lambda: encode_label_image(seg.cells))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.images} images at {args.size} px, {args.threads} thread(s); CAM model {cam.model.arch['name']} "
          f"({params / 1e6:.2f} M parameters) at {cam.image_size} px, scales {tta.scales} x 4 flips")
    total = 0.0
    for stage, values in times.items():
        mean = float(np.mean(values[1:] if len(values) > 1 else values))  # the first image warms up
        total += mean
        print(f"  {stage:<24} {mean:7.3f} s/image")
    print(f"  {'total':<24} {total:7.3f} s/image   peak RSS {peak_mb:.0f} MB")


if __name__ == "__main__":
    main()
