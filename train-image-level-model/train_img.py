"""Train an image-level classifier (TensorFlow/Keras; TPU, GPUs or CPU).

    python train-image-level-model/train_img.py --config configs/img/effb7_rgb_600.yaml \
        data.images=gs://.../train data.labels=gs://.../train.csv data.fold=0 run_dir=data/img/effb7_rgb_f0

The config is checked before TensorFlow is imported. Running the same command again resumes an
interrupted run. See docs/kaggle-tpu.md for the Kaggle TPU notebook.
"""

import argparse
import logging

from hpacam.config import parse_args
from hpacam.runs import log_to_run_file
from hpacam.tf.config import ImgTrainConfig


def main(argv=None):
    """The training result; bad input (a label, an image file) ends with one line and status 1.

    The line is in the run folder's log.txt too; the folder stays resumable (nothing half-written).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    cfg, _ = parse_args(ImgTrainConfig, argv, parser=parser)
    import tensorflow as tf

    from hpacam.tf.train import train  # imports TensorFlow

    try:
        return train(cfg)
    except (ValueError, OSError, tf.errors.OpError) as exc:
        message = f"train_img: error: {' '.join(str(exc).split())}"
        log_to_run_file(logging.getLogger("train_img"), message)
        parser.exit(1, message + "\n")


if __name__ == "__main__":
    main()
