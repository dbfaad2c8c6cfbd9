"""Fit the per-cell calibration regressor of each CAM model on the tidy intensity CSV.

    python train-gradboost-regressor/train_grad_boost.py --config configs/regressor/gradboost.yaml \
        intensities=data/intensities/intensities.csv out_dir=data/regressor

Writes, per CAM model, OUT_DIR/<model>.npz (scaler + trees in a code-free format) and
OUT_DIR/<model>_mapping.png, plus OUT_DIR/report.json, config.yaml and log.txt; logs the
held-out MAE/RMSE and the per-class ROC-AUC of the regressor against the per-image sigmoid.
"""

import logging
import sys

from hpacam.config import parse_args
from hpacam.regressor.train import RegressorStageConfig, train_regressors
from hpacam.runs import prepare_run_dir


def main(argv=None) -> int:
    cfg, _ = parse_args(RegressorStageConfig, argv, description=__doc__.splitlines()[0])
    try:
        prepare_run_dir(cfg.out_dir, cfg)
    except OSError as exc:  # a file in its place, a read-only or full disk: before any work
        print(f"train_grad_boost: error: {cfg.out_dir}: cannot write the regressor's output folder "
              f"({exc.strerror or exc})", file=sys.stderr)
        return 1
    try:
        train_regressors(cfg)  # logs its report to the console and the run folder's log.txt
    except (ValueError, OSError) as exc:  # bad input, or an output that cannot be written
        logging.getLogger("train_grad_boost").error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
