"""Per-cell CAM intensities of labelled images -> a tidy CSV for the calibration regressor.

    python train-gradboost-regressor/extract_intensities.py --config configs/regressor/extract.yaml \
        images=data/synth/train/images labels=data/synth/train/labels.csv \
        'checkpoints=[data/cam/tiny/best.pt]' out_dir=data/intensities

Writes OUT_DIR/intensities.csv (image, cell, model, class, intensity_sum, intensity_mean,
image_prob, area, border, target), OUT_DIR/config.yaml and OUT_DIR/log.txt.
"""

import logging
import sys

from hpacam.config import parse_args
from hpacam.regressor.extraction import ExtractConfig, extract, write_table
from hpacam.runs import log_to_run_file, prepare_run_dir
from hpacam.segmentation import SegmentationError


# Bad input, a model or the segmentation backend: one line naming the file, status 1. The stage has
# no skip policy: its table trains the regressor, so a bad image stops it rather than go missing.
RUN_ERRORS = (ValueError, OSError, SegmentationError)


def main(argv=None) -> int:
    cfg, _ = parse_args(ExtractConfig, argv, description=__doc__.splitlines()[0])
    try:
        run_dir = prepare_run_dir(cfg.out_dir, cfg)
        table = extract(cfg)
        path = write_table(table, run_dir / "intensities.csv")
    except RUN_ERRORS as exc:
        log_to_run_file(logging.getLogger("extract_intensities"), f"extract_intensities: error: {exc}")
        print(f"extract_intensities: error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {len(table)} rows ({table['image'].nunique()} images, {table['cell'].size // 19} cell-model pairs) "
          f"to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
