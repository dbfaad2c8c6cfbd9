"""From test images to Kaggle's submission.csv.

    python inference/inference.py --config CFG --images DIR --sample CSV --out PATH \
        [--shard i/n] [--pictures DIR] [key.sub=value ...]
    python inference/inference.py merge --sample CSV --out PATH SHARD.csv [SHARD.csv ...]

CFG names the CAM checkpoints (with their regressors), the image-level Keras models and every
blending weight (see hpacam.inference.InferenceConfig). With --shard i/n only every n-th image
starting at i is scored, so several GPUs or machines can split a test set; `merge` joins the
shards in the sample's order. Alongside PATH it writes PATH's stem + `.image_probs.csv` (the blended image
probabilities), `.image_sources.csv` (each image-level source before the blend),
`.config.yaml` and `.log.txt`.
"""

import argparse
import logging
import sys
from pathlib import Path

from hpacam.config import parse_args, save_config
from hpacam.fileio import atomic_path
from hpacam.inference import InferenceConfig, merge_shards, read_sample, run_inference
from hpacam.runs import setup_logging
from hpacam.submission import write_submission

log = logging.getLogger("inference")


def parse_shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"--shard {text!r}: expected i/n, e.g. 0/4") from None
    if not (count >= 1 and 0 <= index < count):
        raise argparse.ArgumentTypeError(f"--shard {text!r}: need 0 <= i < n")
    return index, count


def run(argv) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, required=True, help="folder of {ID}_{channel}.png files")
    parser.add_argument("--sample", type=Path, required=True, help="sample_submission.csv (IDs and sizes)")
    parser.add_argument("--out", type=Path, required=True, help="submission.csv to write")
    parser.add_argument("--shard", type=parse_shard, default=(0, 1), help="i/n: score every n-th image from i")
    parser.add_argument("--pictures", type=Path, help="write per-image PNGs here (config: visualise=N)")
    cfg, args = parse_args(InferenceConfig, argv, parser=parser)
    stem = args.out.with_suffix("")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    setup_logging(f"{stem}.log.txt")
    save_config(cfg, f"{stem}.config.yaml")
    if not args.images.is_dir():
        parser.exit(1, f"inference: error: {args.images}: image folder not found\n")
    try:
        sample = read_sample(args.sample)
        submission, probs, sources = run_inference(cfg, args.images, sample, args.shard, args.pictures)
    except (ValueError, FileNotFoundError, OSError) as exc:
        parser.exit(1, f"inference: error: {exc}\n")
    write_submission(submission, args.out)
    if cfg.write_image_probs:
        with atomic_path(f"{stem}.image_probs.csv") as tmp:
            probs.to_csv(tmp, index=False, float_format="%.6g")
        with atomic_path(f"{stem}.image_sources.csv") as tmp:
            sources.to_csv(tmp, index=False, float_format="%.6g")
    empty = int((submission["PredictionString"] == "").sum())
    print(f"wrote {args.out}: {len(submission)} images ({empty} with no prediction)")
    return 0


def merge(argv) -> int:
    parser = argparse.ArgumentParser(prog="inference.py merge", description="join shard submissions")
    parser.add_argument("--sample", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("parts", type=Path, nargs="+")
    args = parser.parse_args(argv)
    try:
        merged = merge_shards(args.sample, args.parts, args.out)
    except (ValueError, FileNotFoundError) as exc:
        parser.exit(1, f"inference merge: error: {exc}\n")
    print(f"wrote {args.out}: {len(merged)} images from {len(args.parts)} shards")
    return 0


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["merge"]:
        return merge(argv[1:])
    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
