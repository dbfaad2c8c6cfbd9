"""Per-cell CAM intensities of labelled images -> a tidy CSV for the calibration regressor.

    python train-gradboost-regressor/extract_intensities.py --config configs/regressor/extract.yaml \
        images=data/synth/train/images labels=data/synth/train/labels.csv \
        'checkpoints=[data/cam/tiny/best.pt]' out_dir=data/intensities

Writes OUT_DIR/intensities.csv (image, cell, model, class, intensity_sum, intensity_mean,
image_prob, area, border, target), OUT_DIR/config.yaml and OUT_DIR/log.txt.
"""

import sys

from hpacam.config import parse_args
from hpacam.extraction import ExtractConfig, extract, write_table
from hpacam.runs import prepare_run_dir


def main(argv=None) -> int:
    cfg, _ = parse_args(ExtractConfig, argv, description=__doc__.splitlines()[0])
    run_dir = prepare_run_dir(cfg.out_dir, cfg)
    try:
        table = extract(cfg)
    except (ValueError, FileNotFoundError) as exc:
        print(f"extract_intensities: error: {exc}", file=sys.stderr)
        return 1
    path = write_table(table, run_dir / "intensities.csv")
    print(f"wrote {len(table)} rows ({table['image'].nunique()} images, {table['cell'].size // 19} cell-model pairs) "
          f"to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
