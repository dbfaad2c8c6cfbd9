"""Stage 1: train a Puzzle-CAM classifier on RGBY images from image-level labels.

    python train-cam-model/train_cam.py --config configs/cam/resnest101_640.yaml run_dir=data/cam/r101
    torchrun --nproc_per_node=4 train-cam-model/train_cam.py --config ... (DistributedDataParallel)

Writes run_dir/{config.yaml, log.txt, metrics.csv, last.pt, best.pt}; `train.resume=auto`
continues a stopped run exactly. Exits non-zero with a one-line message on bad input.
"""

from __future__ import annotations

import sys

from hpacam.cam.config import TrainCamConfig
from hpacam.config import ConfigError, check_config_fields, parse_args


def main(argv: list[str] | None = None) -> int:
    cfg, _ = parse_args(TrainCamConfig, argv, description=__doc__.splitlines()[0], check=False)
    try:
        check_config_fields(cfg)  # before torch is imported: a bad value costs no import time
    except ConfigError as exc:
        print(f"train_cam: error: {exc}", file=sys.stderr)
        return 1
    from hpacam.cam.train import main_of_script, train

    return main_of_script("train_cam", train, cfg)


if __name__ == "__main__":
    sys.exit(main())
