"""Stage 1: train a Puzzle-CAM classifier on RGBY images from image-level labels.

    python train-cam-model/train_cam.py --config configs/cam/resnest101_640.yaml run_dir=data/cam/r101
    torchrun --nproc_per_node=4 train-cam-model/train_cam.py --config ... (DistributedDataParallel)

Writes run_dir/{config.yaml, log.txt, metrics.csv, last.pt, best.pt}; `train.resume=auto`
continues a stopped run exactly. Exits non-zero with a one-line message on bad input.
"""

from __future__ import annotations

import sys

from hpacam.cam.config import TrainCamConfig
from hpacam.config import parse_args


def main(argv: list[str] | None = None) -> int:
    cfg, _ = parse_args(TrainCamConfig, argv, description=__doc__.splitlines()[0])
    from hpacam.cam.checkpoint import CheckpointError
    from hpacam.cam.models import PretrainedWeightsError
    from hpacam.cam.train import NonFiniteLossError, train
    from hpacam.images import ImageReadError
    from hpacam.labels import LabelFileError

    try:
        result = train(cfg)
    except (ImageReadError, LabelFileError, CheckpointError, PretrainedWeightsError, NonFiniteLossError,
            ValueError) as exc:
        print(f"train_cam: error: {exc}", file=sys.stderr)
        return 1
    if result.last_checkpoint is not None:
        print(f"last checkpoint: {result.last_checkpoint}")
        if result.best_checkpoint is not None:
            print(f"best checkpoint: {result.best_checkpoint} ({cfg.train.best_metric} = {result.best:.4f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
