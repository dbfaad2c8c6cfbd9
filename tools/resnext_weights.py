"""Convert torchvision ResNeXt ImageNet weights into a Keras `.weights.h5` for `hpacam.tf.resnext`.

    python tools/resnext_weights.py --torch weights/resnext101_32x8d-8ba56ff5.pth \
        --out weights/resnext101_32x8d.weights.h5

The torch file is torchvision's `resnext101_32x8d` state dict (any torchvision ResNeXt works:
depth, groups and width are read from it). The output holds the backbone's weights, for
`model.architecture=resnext101_32x8d model.weights=... model.weights_scope=backbone`
(configs/img/resnext101_rgb_600.yaml). It is written to a temporary file and renamed. Bad input:
one line naming the file, exit 1.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def convert(torch_path: Path, out: Path) -> int:
    """Read, copy into a Keras ResNeXt of the same shape, save; returns the layers converted."""
    import hpacam.tf  # noqa: F401  (loads triton before TensorFlow and torch meet in this process)
    from hpacam.cam.models import read_state_dict
    from hpacam.tf.resnext import build_resnext, load_torchvision_state, shape_of_state

    state = {key: value.numpy() for key, value in read_state_dict(torch_path).items()}
    try:
        shape = shape_of_state(state)
        model = build_resnext(224, shape)
        layers = load_torchvision_state(model, state)
    except ValueError as exc:
        raise ValueError(f"{torch_path}: {exc}") from None
    tmp = out.with_name(f".{out.name.removesuffix('.weights.h5')}.tmp.weights.h5")
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        model.save_weights(str(tmp))
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return layers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--torch", type=Path, required=True, help="torchvision ResNeXt state dict (.pth)")
    parser.add_argument("--out", type=Path, required=True, help="Keras weights file to write (.weights.h5)")
    args = parser.parse_args(argv)
    if not args.out.name.endswith(".weights.h5"):
        parser.exit(1, f"resnext_weights: error: {args.out}: the output must end in .weights.h5\n")
    from hpacam.cam.models import PretrainedWeightsError

    try:
        layers = convert(args.torch, args.out)
    except (ValueError, PretrainedWeightsError) as exc:
        parser.exit(1, f"resnext_weights: error: {exc}\n")
    print(f"{args.out}: {layers} layers from {args.torch}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
