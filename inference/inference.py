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
from hpacam.fileio import atomic_path, check_writable_file, exclusive_lock
from hpacam.inference import InferenceConfig, merge_shards, read_sample, run_inference
from hpacam.runs import log_to_run_file, setup_logging
from hpacam.segmentation import SegmentationError
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


SIDE_OUTPUTS = (".image_probs.csv", ".image_sources.csv")  # beside PATH, after its stem
RUN_ERRORS = (ValueError, OSError, SegmentationError)  # bad input, models or settings: one line, exit 1


def output_lock(out: Path):
    """The lock every writer of `out` takes (run and merge alike): a second writer is refused."""
    return exclusive_lock(out.parent / f".{out.name}.lock", str(out))


def run(argv) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, required=True, help="folder of {ID}_{channel}.png files")
    parser.add_argument("--sample", type=Path, required=True, help="sample_submission.csv (IDs and sizes)")
    parser.add_argument("--out", type=Path, required=True, help="submission.csv to write")
    parser.add_argument("--shard", type=parse_shard, default=(0, 1), help="i/n: score every n-th image from i")
    parser.add_argument("--pictures", type=Path, help="write per-image PNGs here (config: visualise=N)")
    cfg, args = parse_args(InferenceConfig, argv, parser=parser)
    stem = args.out.with_suffix("")
    try:
        check_writable_file(args.out)  # before any work, not after it
        if args.pictures is not None:
            check_writable_file(args.pictures / ".probe.png")
        with output_lock(args.out):
            return logged_run(cfg, args, stem)
    except RUN_ERRORS as exc:
        parser.exit(1, f"inference: error: {exc}\n")


def logged_run(cfg: InferenceConfig, args: argparse.Namespace, stem: Path) -> int:
    """One run under the outputs' lock: the previous run's outputs go first, every failure is logged.

    Removing them first means a failed rerun never leaves an old submission beside the new run's
    config and log, which would pass for this run's result. Bad input, models or settings end the
    run with one line on stderr (and in the log) and status 1.
    """
    for path in (args.out, *(Path(f"{stem}{suffix}") for suffix in SIDE_OUTPUTS)):
        path.unlink(missing_ok=True)
    setup_logging(f"{stem}.log.txt")
    save_config(cfg, f"{stem}.config.yaml")
    try:
        if not args.images.is_dir():
            raise FileNotFoundError(f"{args.images}: image folder not found")
        sample = read_sample(args.sample)
        submission, probs, sources = run_inference(cfg, args.images, sample, args.shard, args.pictures)
        write_outputs(cfg, args.out, stem, submission, probs, sources)
    except RUN_ERRORS as exc:  # the run's own log says why it has no submission; run() prints the line
        log_to_run_file(log, f"inference: error: {exc}")
        raise
    except BaseException:
        log.exception("run failed")
        raise
    empty = int((submission["PredictionString"] == "").sum())
    print(f"wrote {args.out}: {len(submission)} images ({empty} with no prediction)")
    return 0


def write_outputs(cfg: InferenceConfig, out: Path, stem: Path, submission, probs, sources) -> None:
    """The submission last, so that it exists only when everything beside it was written too."""
    if cfg.write_image_probs:
        with atomic_path(f"{stem}.image_probs.csv") as tmp:
            probs.to_csv(tmp, index=False, float_format="%.6g")
        with atomic_path(f"{stem}.image_sources.csv") as tmp:
            sources.to_csv(tmp, index=False, float_format="%.6g")
    write_submission(submission, out)


def merge(argv) -> int:
    parser = argparse.ArgumentParser(prog="inference.py merge", description="join shard submissions")
    parser.add_argument("--sample", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("parts", type=Path, nargs="+")
    args = parser.parse_args(argv)
    try:
        check_writable_file(args.out)
        with output_lock(args.out):
            merged = merge_shards(args.sample, args.parts, args.out)
    except (ValueError, OSError) as exc:
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
