"""Train a cell-level classifier on crops of segmented cells, from image-level labels only.

    python train-cell-model/train_cell.py --config configs/cell/tiny_cpu.yaml run_dir=data/cell/run \
        "data.sources=[{images: data/train/images, labels: data/train/train.csv}]"
    torchrun --nproc_per_node=4 train-cell-model/train_cell.py --config configs/cell/efficientnet_b0_224.yaml ...

Every training image is segmented (through the mask cache), each cell is cropped once into the
crop cache (`cells.crops.cache_dir`, default run_dir/crops), and each crop learns its image's
labels (`cells.pseudo.*` lowers those the CAM evidence, or with `cells.pseudo.rounds` > 0 the
cell model's own out-of-fold predictions, do not support). Writes run_dir/{config.yaml, log.txt,
metrics.csv, last.pt, best.pt} (and rounds/round{r}/ for the fold models); `train.resume=auto`
continues a stopped run exactly. Exits non-zero with a one-line message on bad input.
"""

from __future__ import annotations

import sys

from hpacam.cellmodel.config import TrainCellConfig
from hpacam.config import ConfigError, check_config_fields, parse_args


def main(argv: list[str] | None = None) -> int:
    cfg, _ = parse_args(TrainCellConfig, argv, description=__doc__.splitlines()[0], check=False)
    try:
        check_config_fields(cfg)  # TrainCellConfig.check, before torch is imported: no import time lost
    except ConfigError as exc:
        print(f"train_cell: error: {exc}", file=sys.stderr)
        return 1
    from hpacam.cam.train import main_of_script
    from hpacam.cellmodel.train import train_cell_model
    from hpacam.segmentation import SegmentationError

    return main_of_script("train_cell", train_cell_model, cfg, (SegmentationError,))


if __name__ == "__main__":
    sys.exit(main())
