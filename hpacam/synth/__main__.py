"""Command line: `python -m hpacam.synth --out DIR --n-images N --image-size S --seed K`."""

from __future__ import annotations

import argparse
import sys

from hpacam.synth.generate import format_stats, generate_dataset


def parse_sizes(text: str) -> tuple[int, ...]:
    """`2048` or `1728,2048,3072` -> sizes; argparse turns the ValueError into a usage error."""
    try:
        sizes = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"image size must be an integer or a comma list, got {text!r}") from None
    if not sizes or any(size <= 0 for size in sizes):
        raise argparse.ArgumentTypeError(f"image sizes must be positive integers, got {text!r}")
    return sizes


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m hpacam.synth",
        description="Write a synthetic HPA-like dataset (4-channel PNGs, labels, per-cell truth masks).",
    )
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--n-images", type=positive_int, required=True)
    parser.add_argument("--image-size", type=parse_sizes, required=True,
                        help="one size or a comma list (each image draws one), e.g. 1728,2048,3072")
    parser.add_argument("--seed", type=non_negative_int, required=True)
    parser.add_argument("--bit-depth", type=int, choices=(8, 16), default=16)
    parser.add_argument("--workers", type=positive_int, default=1)
    parser.add_argument("--overwrite", action="store_true", help="replace a dataset already in --out")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        stats = generate_dataset(args.out, args.n_images, args.image_size, args.seed, bit_depth=args.bit_depth,
                                 workers=args.workers, overwrite=args.overwrite, progress=not args.quiet)
    except (ValueError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(format_stats(stats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
