"""Fit the per-cell calibration regressor of each CAM model on the tidy intensity CSV.

    python train-gradboost-regressor/train_grad_boost.py --config configs/regressor/gradboost.yaml \
        intensities=data/intensities/intensities.csv out_dir=data/regressor

Writes, per CAM model, OUT_DIR/<model>.npz (scaler + trees in a code-free format) and
OUT_DIR/<model>_mapping.png, plus OUT_DIR/report.json, config.yaml and log.txt; prints the
held-out MAE/RMSE and the per-class ROC-AUC of the regressor against the per-image sigmoid.
"""

import sys

from hpacam.config import parse_args
from hpacam.regression import RegressorStageConfig, format_report, train_regressors
from hpacam.runs import prepare_run_dir


def main(argv=None) -> int:
    cfg, _ = parse_args(RegressorStageConfig, argv, description=__doc__.splitlines()[0])
    prepare_run_dir(cfg.out_dir, cfg)
    try:
        reports = train_regressors(cfg)
    except (ValueError, FileNotFoundError) as exc:
        print(f"train_grad_boost: error: {exc}", file=sys.stderr)
        return 1
    print(format_report(reports))
    return 0


if __name__ == "__main__":
    sys.exit(main())
