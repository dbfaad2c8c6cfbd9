"""ResNeXt (Xie et al. 2017) over plain Keras layers, laid out as torchvision's, for the seed's ResNeXt-101.

Neither `keras.applications` nor `keras_hub` ships a ResNeXt, and the seed's ResNeXt-101 image
model started from ImageNet weights. This builder reproduces torchvision's `ResNet(Bottleneck,
groups, width_per_group)` layer for layer (stride on the grouped 3x3 convolution, symmetric
zero padding, batch-norm epsilon 1e-5, ImageNet mean/std normalisation inside the model), with
each layer named after its torchvision parameter (`layer3.4.conv2` -> `layer3_4_conv2`), so
`load_torchvision_state` can copy a torchvision checkpoint in exactly. `tools/resnext_weights.py`
turns `resnext101_32x8d-8ba56ff5.pth` into a `.weights.h5` file that `model.weights` (with
`model.weights_scope=backbone`) loads offline; nothing is ever downloaded here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import keras
import numpy as np

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BN_EPSILON = 1e-5  # torch's default; Keras' 1e-3 would shift every activation of a converted model
EXPANSION = 4
STAGE_PLANES = (64, 128, 256, 512)


@dataclass(frozen=True)
class ResNeXtShape:
    """Blocks per stage, cardinality and width per group (torchvision's `groups`, `width_per_group`)."""

    depths: tuple[int, int, int, int]
    groups: int
    width_per_group: int

    def width(self, planes: int) -> int:
        return int(planes * (self.width_per_group / 64.0)) * self.groups


RESNEXT101_32X8D = ResNeXtShape((3, 4, 23, 3), 32, 8)
RESNEXT_TINY = ResNeXtShape((1, 1, 1, 1), 4, 4)  # tests: the same code path in a second


def _conv(x, filters: int, kernel: int, stride: int, name: str, groups: int = 1):
    """torch's Conv2d(padding=kernel // 2, bias=False): explicit symmetric padding, then 'valid'."""
    if kernel > 1:
        x = keras.layers.ZeroPadding2D(kernel // 2, name=f"{name}_pad")(x)
    return keras.layers.Conv2D(filters, kernel, strides=stride, padding="valid", groups=groups, use_bias=False,
                               name=name)(x)


def _bn(x, name: str):
    return keras.layers.BatchNormalization(epsilon=BN_EPSILON, momentum=0.9, name=name)(x)


def _bottleneck(x, shape: ResNeXtShape, planes: int, stride: int, prefix: str, downsample: bool):
    """torchvision's Bottleneck: 1x1 -> grouped 3x3 (the stride) -> 1x1 x4, plus the shortcut."""
    width = shape.width(planes)
    out = keras.layers.ReLU(name=f"{prefix}_relu1")(_bn(_conv(x, width, 1, 1, f"{prefix}_conv1"), f"{prefix}_bn1"))
    out = _conv(out, width, 3, stride, f"{prefix}_conv2", groups=shape.groups)
    out = keras.layers.ReLU(name=f"{prefix}_relu2")(_bn(out, f"{prefix}_bn2"))
    out = _bn(_conv(out, planes * EXPANSION, 1, 1, f"{prefix}_conv3"), f"{prefix}_bn3")
    shortcut = x
    if downsample:
        shortcut = _bn(_conv(x, planes * EXPANSION, 1, stride, f"{prefix}_downsample_0"), f"{prefix}_downsample_1")
    return keras.layers.ReLU(name=f"{prefix}_out")(keras.layers.Add(name=f"{prefix}_add")([out, shortcut]))


def build_resnext(size: int, shape: ResNeXtShape = RESNEXT101_32X8D, name: str = "resnext101_32x8d") -> keras.Model:
    """(size, size, 3) images in [0, 1] -> globally average-pooled features (2048 for ResNeXt-101)."""
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Normalization(mean=IMAGENET_MEAN, variance=[s * s for s in IMAGENET_STD], name="imagenet_norm")(inputs)
    x = keras.layers.ReLU(name="relu")(_bn(_conv(x, 64, 7, 2, "conv1"), "bn1"))
    x = keras.layers.ZeroPadding2D(1, name="maxpool_pad")(x)  # zeros are safe: the input is >= 0 after ReLU
    x = keras.layers.MaxPooling2D(3, strides=2, name="maxpool")(x)
    channels = 64
    for stage, (planes, depth) in enumerate(zip(STAGE_PLANES, shape.depths), start=1):
        for block in range(depth):
            stride = 2 if block == 0 and stage > 1 else 1
            downsample = block == 0 and (stride != 1 or channels != planes * EXPANSION)
            x = _bottleneck(x, shape, planes, stride, f"layer{stage}_{block}", downsample)
            channels = planes * EXPANSION
    outputs = keras.layers.GlobalAveragePooling2D(name="avgpool")(x)
    return keras.Model(inputs, outputs, name=name)


def shape_of_state(state: Mapping[str, np.ndarray]) -> ResNeXtShape:
    """The ResNeXt shape a torchvision state dict was saved from (blocks per stage, groups, width)."""
    depths = tuple(len({key.split(".")[1] for key in state if key.startswith(f"layer{stage}.")}) for stage in range(1, 5))
    if "layer1.0.conv2.weight" not in state or not all(depths):
        raise ValueError("not a torchvision ResNet/ResNeXt state dict (no layer1..layer4 blocks)")
    width, per_group = state["layer1.0.conv2.weight"].shape[:2]  # (width, width / groups, 3, 3)
    groups = int(width) // int(per_group)
    return ResNeXtShape(depths, groups, int(width) * 64 // (STAGE_PLANES[0] * groups))


def load_torchvision_state(model: keras.Model, state: Mapping[str, np.ndarray]) -> int:
    """Copy a torchvision ResNeXt state dict (numpy arrays) into `model`; returns the layers set.

    Conv kernels go from (out, in / groups, kh, kw) to Keras' (kh, kw, in / groups, out); batch
    norms take weight, bias, running mean and variance. A layer the state lacks, or a shape that
    differs, is an error naming the parameter: a half-converted backbone trains, just badly.
    """
    done = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            key = layer.name.replace("_", ".")
            kernel = np.transpose(_param(state, f"{key}.weight"), (2, 3, 1, 0))
            _assign(layer, [kernel], key)
        elif isinstance(layer, keras.layers.BatchNormalization):
            key = layer.name.replace("_", ".")
            _assign(layer, [_param(state, f"{key}.{p}") for p in ("weight", "bias", "running_mean", "running_var")], key)
        else:
            continue
        done += 1
    return done


def _param(state: Mapping[str, np.ndarray], key: str) -> np.ndarray:
    if key not in state:
        raise ValueError(f"the torchvision state dict has no {key}")
    return np.asarray(state[key], dtype=np.float32)


def _assign(layer: keras.layers.Layer, values: list[np.ndarray], key: str) -> None:
    expected = [tuple(w.shape) for w in layer.get_weights()]
    if expected != [v.shape for v in values]:
        raise ValueError(f"{key}: shapes {[v.shape for v in values]} do not fit the Keras layer's {expected}")
    layer.set_weights(values)
