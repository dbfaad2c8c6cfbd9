"""Convert an HPA image folder + label CSV into sharded TFRecords (the TPU-friendly input).

    python train-image-level-model/make_tfrecords.py --config configs/img/effb7_rgb_600.yaml \
        --out data/tfrec/rgb_600 data.images=data/synth/demo/images data.labels=data/synth/demo/labels.csv

Uses data.images, data.labels, data.color_mode, data.image_size, data.n_folds, data.fold_seed
and records.bits / records.images_per_shard. Train on the result with data.tfrecords=OUT.
"""

import argparse
import logging

from hpacam.config import parse_args
from hpacam.runs import setup_logging
from hpacam.tf.config import ImgTrainConfig


def main(argv=None):
    """The manifest; bad input (a label, an image file, the output) ends with one line and status 1."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="output folder (local or gs://)")
    cfg, args = parse_args(ImgTrainConfig, argv, parser=parser)
    setup_logging()
    import tensorflow as tf

    from hpacam.tf.tfrecords import make_tfrecords  # imports TensorFlow

    try:
        manifest = make_tfrecords(cfg, args.out)
    except (ValueError, OSError, tf.errors.OpError) as exc:  # a failed conversion removed its files
        parser.exit(1, f"make_tfrecords: error: {one_line(exc)}\n")
    logging.getLogger(__name__).info("wrote %d images in %d shards to %s",
                                     sum(s["count"] for s in manifest["shards"]), len(manifest["shards"]), args.out)
    return manifest


def one_line(exc: Exception) -> str:
    """The error's message on one line (TensorFlow's messages carry graph-node lines)."""
    return " ".join(str(exc).split())


if __name__ == "__main__":
    main()
