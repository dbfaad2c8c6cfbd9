"""Backbones behind one factory, and the CAM classifier on top of them.

`create_model(name, ...)` follows timm's style: it never downloads on construction. ImageNet
weights come either from a local file (`pretrained_path`, a state dict as the libraries publish
it) or, only when `pretrained=True` is asked for explicitly, from the backbone library's own
loader, which needs the network or a cached copy (~/.cache/torch, ~/.cache/huggingface).

Backbone names:
    resnest50 / resnest101 / resnest200 / resnest269   the `resnest` package (Puzzle-CAM's choice)
    efficientnet-b0 ... efficientnet-b7                 the `efficientnet-pytorch` package
    anything else                                       a timm model name (`resnet10t`, ...)

The HPA images have four channels (red, green, blue, yellow); the stem of a 3-channel backbone is
widened to four with the yellow filters copied from the red ones, as the original solution did:
the ER (yellow) and microtubule (red) stains are both cytoplasmic, so red is the best prior.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from hpacam.classes import NUM_CLASSES
from hpacam.torchfile import load_tensors
from hpacam.triton_guard import load_triton_first

log = logging.getLogger(__name__)

RESNEST_NAMES = ("resnest50", "resnest101", "resnest200", "resnest269")
EFFICIENTNET_NAMES = tuple(f"efficientnet-b{i}" for i in range(8))
OUTPUT_STRIDES = (8, 16, 32)
# ImageNet statistics; the yellow channel borrows red's, like its stem filters.
RGBY_MEAN = (0.485, 0.456, 0.406, 0.485)
RGBY_STD = (0.229, 0.224, 0.225, 0.229)
MASK_MEAN_STD = (0.5, 0.5)  # a cell mask (the cell-level classifier's fifth channel) is 0 or 1
# Head parameters of the source libraries' checkpoints: dropped when loading a backbone.
HEAD_PREFIXES = ("fc.", "_fc.", "classifier.", "head.", "last_linear.")


class PretrainedWeightsError(ValueError):
    """A pretrained-weights file is missing, unreadable, or does not fit the backbone."""


# ----------------------------------------------------------------------------- the classifier


class CamClassifier(nn.Module):
    """Backbone -> 1x1 conv to one map per class (no bias) -> global average pooling.

    Without a bias the class map is a pure linear read-out of the features, so averaging the map
    gives exactly the logit: the map is where the evidence for the logit sits (Zhou et al. 2016).
    Inputs are images in [0, 1]; the normalisation lives inside the model (as buffers) so a
    checkpoint alone is enough to run inference.
    """

    def __init__(self, backbone: nn.Module, num_features: int, num_classes: int,
                 mean: Sequence[float], std: Sequence[float], arch: dict):
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean has {len(mean)} values but std has {len(std)}")
        self.backbone = backbone
        self.classifier = nn.Conv2d(num_features, num_classes, kernel_size=1, bias=False)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.arch = arch  # plain data: create_model(**arch) rebuilds this model

    @property
    def num_classes(self) -> int:
        return self.classifier.out_channels

    def forward(self, images: torch.Tensor, with_cam: bool = False):
        """Logits (B, classes); with `with_cam`, also the class maps (B, classes, H/s, W/s)."""
        if images.shape[1] != self.mean.shape[1]:
            raise ValueError(f"expected {self.mean.shape[1]} input channels, got {images.shape[1]}")
        features = self.backbone((images - self.mean) / self.std)
        if with_cam:
            cams = self.classifier(features)
            return cams.mean(dim=(2, 3)), cams
        pooled = features.mean(dim=(2, 3), keepdim=True)
        return self.classifier(pooled).flatten(1)


def parameter_groups(model: CamClassifier) -> list[list[nn.Parameter]]:
    """[backbone weights, backbone biases, new weights, new biases], every parameter once.

    Puzzle-CAM trains these at 1x / 2x / 10x / 20x the learning rate (and decays only weights):
    the pretrained backbone moves slowly while the freshly initialised class maps catch up.
    """
    groups: list[list[nn.Parameter]] = [[], [], [], []]
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        is_new = not name.startswith("backbone.")
        is_bias = name.endswith("bias")
        groups[2 * is_new + is_bias].append(param)
    return groups


# ----------------------------------------------------------------------------- the factory


def create_model(name: str, pretrained: bool = False, in_chans: int = 4, output_stride: int = 16,
                 num_classes: int = NUM_CLASSES, pretrained_path: str | Path | None = None,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 **kwargs: Any) -> CamClassifier:
    """Build a CAM classifier; never touches the network unless `pretrained=True`.

    `output_stride` (8, 16 or 32) dilates the last stage(s) instead of striding: cells are
    ~100 px in a 640 px image, so stride 32 would give each cell a couple of map pixels.
    `kwargs` go to the backbone constructor (e.g. timm's `channels`, `drop_path_rate`).
    """
    if in_chans not in (3, 4, 5):
        raise ValueError(f"in_chans must be 3 (RGB), 4 (RGBY) or 5 (RGBY + a cell mask), got {in_chans}")
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"output_stride must be one of {OUTPUT_STRIDES}, got {output_stride}")
    mean = tuple(mean) if mean is not None else (RGBY_MEAN + MASK_MEAN_STD[:1])[:in_chans]
    std = tuple(std) if std is not None else (RGBY_STD + MASK_MEAN_STD[1:])[:in_chans]
    backbone, num_features = create_backbone(name, pretrained, output_stride, **kwargs)
    if in_chans >= 4:
        widen_stem_to_rgby(backbone)
    if in_chans == 5:
        add_mask_channel(backbone)
    if pretrained_path is not None:
        load_backbone_weights(backbone, pretrained_path)
    arch = {"name": name, "in_chans": in_chans, "output_stride": output_stride,
            "num_classes": num_classes, "mean": list(mean), "std": list(std), "kwargs": dict(kwargs)}
    return CamClassifier(backbone, num_features, num_classes, mean, std, arch)


def create_backbone(name: str, pretrained: bool, output_stride: int, **kwargs) -> tuple[nn.Module, int]:
    """(feature extractor returning a (B, C, h, w) map, C) for any supported name.

    Every backbone library imports triton; after TensorFlow that import crashes the process
    unless triton is loaded the safe way first (`hpacam.triton_guard`).
    """
    load_triton_first()
    if name in RESNEST_NAMES:
        return _resnest_backbone(name, pretrained, output_stride, **kwargs)
    if name in EFFICIENTNET_NAMES:
        return _efficientnet_backbone(name, pretrained, output_stride, **kwargs)
    if name.startswith("resnest") or name.startswith("efficientnet-"):
        raise ValueError(f"unknown backbone {name!r}; expected one of {RESNEST_NAMES + EFFICIENTNET_NAMES} "
                         "or a timm model name")
    return _timm_backbone(name, pretrained, output_stride, **kwargs)


def _library_weights_error(name: str, exc: Exception) -> PretrainedWeightsError:
    return PretrainedWeightsError(
        f"could not load ImageNet weights for {name!r} from its library ({type(exc).__name__}: {exc}); "
        "model.pretrained=true needs the network or a cached copy. Give a local file with "
        "model.pretrained_path=... or set model.pretrained=false")


# ---- ResNeSt


class ResNeStFeatures(nn.Module):
    """The `resnest` package's ResNet without its pooling and fully connected head."""

    def __init__(self, net: nn.Module):
        super().__init__()
        del net.fc, net.avgpool
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        net = self.net
        x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        return net.layer4(net.layer3(net.layer2(net.layer1(x))))


def _resnest_backbone(name: str, pretrained: bool, output_stride: int, **kwargs) -> tuple[nn.Module, int]:
    import resnest.torch as resnest_models

    dilation = {32: 1, 16: 2, 8: 4}[output_stride]  # the package's switch: dilate layer4, or layers 3-4
    try:
        net = getattr(resnest_models, name)(pretrained=pretrained, dilation=dilation, **kwargs)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError; a hash mismatch a RuntimeError
        if not pretrained:
            raise
        raise _library_weights_error(name, exc) from exc
    num_features = net.fc.in_features
    return ResNeStFeatures(net), num_features


# ---- EfficientNet (efficientnet-pytorch)


class EfficientNetFeatures(nn.Module):
    """`efficientnet-pytorch`'s EfficientNet up to its head convolution (no pooling, no fc)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        del net._fc, net._avg_pooling, net._dropout
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(x)


def _efficientnet_backbone(name: str, pretrained: bool, output_stride: int, **kwargs) -> tuple[nn.Module, int]:
    from efficientnet_pytorch import EfficientNet

    # image_size=None selects dynamic "same" padding, which stays right at any input size and
    # after the dilation below (static padding is computed once for the 224-600 px ImageNet size).
    kwargs = {"image_size": None, **kwargs}
    if pretrained:
        try:
            net = EfficientNet.from_pretrained(name, **kwargs)
        except (OSError, RuntimeError) as exc:
            raise _library_weights_error(name, exc) from exc
    else:
        net = EfficientNet.from_name(name, **kwargs)
    dilate_efficientnet(net, output_stride)
    num_features = net._fc.in_features
    return EfficientNetFeatures(net), num_features


def dilate_efficientnet(net: nn.Module, output_stride: int) -> None:
    """Turn the strides that would exceed `output_stride` into dilations (DeepLab's recipe).

    The block that would have strided keeps the old dilation with stride 1; the blocks after
    it use the dilation multiplied by the dropped stride, so receptive fields are unchanged.
    """
    current_stride, dilation = _stride_of(net._conv_stem), 1
    for block in net._blocks:
        conv = block._depthwise_conv
        stride = _stride_of(conv)
        next_dilation = dilation
        if current_stride * stride > output_stride:
            conv.stride = (1, 1)
            next_dilation = dilation * stride
        else:
            current_stride *= stride
        conv.dilation = (dilation, dilation)
        dilation = next_dilation


def _stride_of(conv: nn.Conv2d) -> int:
    stride = conv.stride
    return int(stride[0] if isinstance(stride, (tuple, list)) else stride)


# ---- timm


class TimmFeatures(nn.Module):
    """A timm model's `forward_features`: the last feature map, before pooling."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.net.forward_features(x)
        if features.ndim != 4:
            raise ValueError(f"timm model {type(self.net).__name__} gives {features.ndim}-D features; "
                             "CAMs need a convolutional (B, C, H, W) feature map")
        return features


def _timm_backbone(name: str, pretrained: bool, output_stride: int, **kwargs) -> tuple[nn.Module, int]:
    import timm

    if not timm.is_model(name):
        raise ValueError(f"unknown backbone {name!r}: not a timm model, and not one of "
                         f"{RESNEST_NAMES + EFFICIENTNET_NAMES}")
    if output_stride != 32:
        kwargs["output_stride"] = output_stride
    try:
        net = timm.create_model(name, pretrained=pretrained, num_classes=0, global_pool="", **kwargs)
    except TypeError as exc:
        raise ValueError(f"timm model {name!r} does not accept {sorted(kwargs)} ({exc}); "
                         "output_stride < 32 needs a model that supports dilation") from exc
    except (OSError, RuntimeError) as exc:
        if not pretrained:
            raise
        raise _library_weights_error(name, exc) from exc
    return TimmFeatures(net), net.num_features


# ----------------------------------------------------------------------------- 4-channel stem


def find_stem_conv(module: nn.Module) -> tuple[str, nn.Conv2d]:
    """The convolution that reads the image (the first one registered), with its name."""
    for name, child in module.named_modules():
        if isinstance(child, nn.Conv2d):
            if child.in_channels not in (3, 4, 5):
                raise ValueError(f"{type(module).__name__}: first convolution {name!r} reads "
                                 f"{child.in_channels} channels; expected an RGB(Y) stem (+ a mask)")
            return name, child
    raise ValueError(f"{type(module).__name__}: no input convolution found")


def rgby_stem_weight(weight: torch.Tensor) -> torch.Tensor:
    """(out, 3, k, k) RGB filters -> (out, 4, k, k) RGBY filters, yellow copied from red."""
    if weight.ndim != 4 or weight.shape[1] != 3:
        raise ValueError(f"expected a (out, 3, k, k) stem weight, got {tuple(weight.shape)}")
    return torch.cat([weight, weight[:, :1]], dim=1)


def widen_stem_to_rgby(module: nn.Module) -> None:
    """Make the backbone read 4 channels, in place, keeping the convolution's class.

    Replacing the weight (not the module) keeps library-specific subclasses (TF "same" padding,
    weight standardisation) working.
    """
    name, conv = find_stem_conv(module)
    if conv.in_channels != 3:
        raise ValueError(f"stem {name!r} already reads {conv.in_channels} channels")
    conv.weight = nn.Parameter(rgby_stem_weight(conv.weight.detach()).contiguous())
    conv.in_channels = 4


def add_mask_channel(module: nn.Module) -> None:
    """A fifth input channel (a cell's mask) with zero filters: pretrained stems start unchanged."""
    name, conv = find_stem_conv(module)
    if conv.in_channels != 4:
        raise ValueError(f"stem {name!r} reads {conv.in_channels} channels; a mask channel goes after RGBY")
    conv.weight = nn.Parameter(stem_weight_for(conv.weight.detach(), 5).contiguous())
    conv.in_channels = 5


# ----------------------------------------------------------------------------- local weights


def stem_weight_for(weight: torch.Tensor, in_channels: int) -> torch.Tensor:
    """A file's stem filters widened as `create_model` widens the stem: RGB -> RGBY -> RGBY + mask.

    ImageNet files have 3-channel stems; a cell model reads five channels (the mask's filters start
    at zero, so the pretrained stem's response is unchanged). Any other pairing is left for the
    shape check to name.
    """
    if weight.ndim == 4 and weight.shape[1] == 3 and in_channels >= 4:
        weight = rgby_stem_weight(weight)
    if weight.ndim == 4 and weight.shape[1] == 4 and in_channels == 5:
        weight = torch.cat([weight, torch.zeros_like(weight[:, :1])], dim=1)
    return weight


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a `.pth`/`.pt`/`.bin` (torch, weights only) or `.safetensors` file.

    Accepts the shapes libraries publish: a bare state dict, or one under `state_dict`/`model`,
    with or without DataParallel's `module.` prefix.
    """
    path = Path(path)
    if not path.is_file():
        raise PretrainedWeightsError(f"{path}: pretrained weights file not found")
    if path.suffix == ".safetensors":
        state = read_safetensors(path)
    else:
        state = load_tensors(path, "weights file", PretrainedWeightsError)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PretrainedWeightsError(f"{path}: not a state dict (a mapping of names to tensors)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """A `.safetensors` file (a code-free format by design); PretrainedWeightsError naming it if bad."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception as exc:  # safetensors raises several types for a bad file
        raise PretrainedWeightsError(f"{path}: unreadable weights file ({type(exc).__name__}: {exc})") from None


def load_backbone_weights(backbone: nn.Module, path: str | Path) -> None:
    """Load ImageNet weights from a local file into a (possibly widened) backbone.

    A 3-channel stem in the file is widened like the model's (yellow from red); classifier
    heads in the file are ignored; any backbone weight the file lacks is an error, because a
    silently half-initialised backbone trains, just badly.
    """
    state = read_state_dict(path)
    target = backbone.net if hasattr(backbone, "net") else backbone
    stem_name, stem = find_stem_conv(target)
    key = f"{stem_name}.weight"
    if key in state:
        state[key] = stem_weight_for(state[key], stem.in_channels)
    state = {k: v for k, v in state.items() if not k.startswith(HEAD_PREFIXES)}
    expected = target.state_dict()
    wrong = [k for k, v in state.items() if k in expected and expected[k].shape != v.shape]
    if wrong:
        raise PretrainedWeightsError(
            f"{path}: {len(wrong)} weight(s) have the wrong shape for this backbone, e.g. {wrong[0]} "
            f"{tuple(state[wrong[0]].shape)} vs {tuple(expected[wrong[0]].shape)}")
    result = target.load_state_dict(state, strict=False)
    if result.missing_keys:
        raise PretrainedWeightsError(
            f"{path}: does not fit this backbone: {len(result.missing_keys)} weight(s) missing, "
            f"e.g. {result.missing_keys[:3]}")
    if result.unexpected_keys:
        log.warning("%s: ignored %d weight(s) the backbone does not have, e.g. %s",
                    path, len(result.unexpected_keys), result.unexpected_keys[:3])
    log.info("loaded pretrained backbone weights from %s", path)

