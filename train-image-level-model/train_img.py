"""Train an image-level classifier (TensorFlow/Keras; TPU, GPUs or CPU).

    python train-image-level-model/train_img.py --config configs/img/effb7_rgb_512.yaml \
        data.images=gs://.../train data.labels=gs://.../train.csv data.fold=0 run_dir=data/img/effb7_rgb_f0

The config is checked before TensorFlow is imported. Running the same command again resumes an
interrupted run. See docs/kaggle-tpu.md for the Kaggle TPU notebook.
"""

from hpacam.config import parse_args
from hpacam.tf.config import ImgTrainConfig


def main(argv=None):
    cfg, _ = parse_args(ImgTrainConfig, argv, description=__doc__.splitlines()[0])
    from hpacam.tf.train import train  # imports TensorFlow

    return train(cfg)


if __name__ == "__main__":
    main()
