"""Image-level classifiers: a library backbone, a 19-way sigmoid head, binary cross-entropy.

Backbones come from maintained libraries (`keras.applications`, `keras_hub`), built from
their architecture definitions, so nothing is downloaded unless `weights="imagenet"` is asked
for; the seed's ResNeXt-101, which neither library has, is built over Keras layers
(`hpacam.tf.resnext`) and takes its ImageNet weights from a converted local file. Every model takes images in [0, 1] (what `hpacam.tf.data` yields) and rescales them to the
range its library's ImageNet weights expect, inside the model, so a saved `.keras` file is
self-contained for inference.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Callable

import keras

from hpacam.classes import NUM_CLASSES
from hpacam.tf import storage
from hpacam.tf.config import ModelConfig, TrainConfig

log = logging.getLogger(__name__)

WEIGHT_FILE_SUFFIXES = (".keras", ".weights.h5", ".h5")
VIT_B16_IMAGENET_PRESETS = {224: "vit_base_patch16_224_imagenet", 384: "vit_base_patch16_384_imagenet"}

# backbone_weights: None (random), "imagenet", or a local file of backbone weights.
BackboneFactory = Callable[[int, "str | None"], keras.Model]


@dataclass(frozen=True)
class Architecture:
    build_backbone: BackboneFactory
    input_scale: float  # [0, 1] -> the library's input range: x * scale + offset
    input_offset: float = 0.0
    token_pooling: bool = False  # transformer: the class token is the image feature


def _keras_application(constructor: Callable[..., keras.Model], **extra) -> BackboneFactory:
    """keras.applications model without its top, globally average-pooled; it loads files itself."""

    def build(size: int, weights: str | None) -> keras.Model:
        return constructor(include_top=False, weights=weights, input_shape=(size, size, 3),
                           pooling="avg", **extra)

    return build


def _vit(size: int, weights: str | None, **shape) -> keras.Model:
    """A keras-hub ViTBackbone of the given shape, random or with local backbone weights."""
    import keras_hub

    patch = shape["patch_size"]
    if size % patch:
        raise ValueError(f"this ViT needs an image size divisible by its patch size {patch}, got {size}")
    backbone = keras_hub.models.ViTBackbone(image_shape=(size, size, 3), **shape)
    if weights is not None:
        backbone.load_weights(weights)
    return backbone


def _vit_b16(size: int, weights: str | None) -> keras.Model:
    """ViT-B/16 (keras-hub): 12 layers, 12 heads, width 768, MLP 3072."""
    import keras_hub

    if weights == "imagenet":
        if size not in VIT_B16_IMAGENET_PRESETS:
            raise ValueError(f"vit_b16 ImageNet weights exist for image sizes {sorted(VIT_B16_IMAGENET_PRESETS)}, "
                             f"not {size} (the position embeddings are sized by the image)")
        return keras_hub.models.ViTBackbone.from_preset(VIT_B16_IMAGENET_PRESETS[size])
    return _vit(size, weights, patch_size=16, num_layers=12, num_heads=12, hidden_dim=768, mlp_dim=3072)


def _tiny(size: int, weights: str | None) -> keras.Model:
    """A one-layer keras-hub ViT (16k parameters) so that tests and demos train on a CPU in seconds.

    Few variables matter more than few parameters here: tracing the training step of a CNN with
    a hundred variables (MobileNetV3Small) takes tens of seconds on two cores.
    """
    if weights == "imagenet":
        raise ValueError("architecture 'tiny' has no ImageNet weights; use weights=none")
    return _vit(size, weights, patch_size=8, num_layers=1, num_heads=2, hidden_dim=32, mlp_dim=64)


SMALL_CNN_WIDTHS = (16, 32, 64, 96, 128)  # one 3x3 conv block each; all but the last halve the side


def _small_cnn(size: int, weights: str | None, widths: tuple[int, ...] = SMALL_CNN_WIDTHS) -> keras.Model:
    """A plain five-block CNN (about 200k parameters, 17 variables) that the CPU demo can train.

    The one-layer ViT of `tiny` traces in seconds but learns nothing on the synthetic HPA images
    (validation AUC about 0.5): the classes differ by where the green stain sits relative to the
    nucleus and the microtubules, a local texture that convolutions pick up and eight-pixel
    patches through one attention layer do not. The library CNNs have a hundred variables or
    more, which makes tracing the training step alone take tens of seconds on two cores, so this
    one is built from a handful of Keras layers. Average and max pooling are both kept: a
    compartment stained in a few cells of the image is a small bright region that averaging dilutes.
    """
    if weights == "imagenet":
        raise ValueError("architecture 'small_cnn' has no ImageNet weights; use weights=none")
    if size % 2 ** (len(widths) - 1):
        raise ValueError(f"small_cnn needs an image size divisible by {2 ** (len(widths) - 1)}, got {size}")
    inputs = keras.Input((size, size, 3))
    x = inputs
    for i, width in enumerate(widths):
        stride = 2 if i < len(widths) - 1 else 1
        x = keras.layers.Conv2D(width, 3, strides=stride, padding="same", use_bias=False, name=f"conv{i}")(x)
        # momentum 0.9: a demo epoch is about 30 steps, too few for the default 0.99 moving
        # statistics (what validation runs on) to settle in the first epochs.
        x = keras.layers.BatchNormalization(momentum=0.9, name=f"bn{i}")(x)
        x = keras.layers.ReLU(name=f"relu{i}")(x)
    x = keras.layers.Concatenate(name="pooled")([keras.layers.GlobalAveragePooling2D(name="avg_pool")(x),
                                                 keras.layers.GlobalMaxPooling2D(name="max_pool")(x)])
    backbone = keras.Model(inputs, x, name="small_cnn")
    if weights is not None:
        backbone.load_weights(weights)
    return backbone


def _resnext(shape, name: str) -> BackboneFactory:
    """A ResNeXt of `hpacam.tf.resnext` (torchvision's layout); ImageNet weights only from a local file."""

    def build(size: int, weights: str | None) -> keras.Model:
        from hpacam.tf.resnext import build_resnext

        if weights == "imagenet":
            raise ValueError(f"architecture {name!r} has no library ImageNet weights: convert torchvision's with "
                             "tools/resnext_weights.py and give the file (model.weights=..., "
                             "model.weights_scope=backbone)")
        backbone = build_resnext(size, shape, name)
        if weights is not None:
            backbone.load_weights(weights)
        return backbone

    return build


def _architectures() -> dict[str, Architecture]:
    from hpacam.tf.resnext import RESNEXT101_32X8D, RESNEXT_TINY

    apps = keras.applications
    table = {f"efficientnet_b{i}": Architecture(_keras_application(getattr(apps, f"EfficientNetB{i}")), 255.0)
             for i in range(8)}
    for size, suffix in (("tiny", "Tiny"), ("small", "Small"), ("base", "Base"), ("large", "Large"),
                         ("xlarge", "XLarge")):
        table[f"convnext_{size}"] = Architecture(_keras_application(getattr(apps, f"ConvNeXt{suffix}")), 255.0)
    table["vit_b16"] = Architecture(_vit_b16, 2.0, -1.0, token_pooling=True)  # ViT: mean 0.5, std 0.5
    table["tiny"] = Architecture(_tiny, 2.0, -1.0, token_pooling=True)
    table["small_cnn"] = Architecture(_small_cnn, 2.0, -1.0)
    # ImageNet mean/std normalisation is inside the ResNeXt backbone: inputs stay in [0, 1].
    table["resnext101_32x8d"] = Architecture(_resnext(RESNEXT101_32X8D, "resnext101_32x8d"), 1.0)
    table["resnext_tiny"] = Architecture(_resnext(RESNEXT_TINY, "resnext_tiny"), 1.0)
    return table


ARCHITECTURES = _architectures()


def get_architecture(name: str) -> Architecture:
    if name not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {name!r}; known: {', '.join(sorted(ARCHITECTURES))}")
    return ARCHITECTURES[name]


def build_model(cfg: ModelConfig, image_size: int) -> keras.Model:
    """Input [0, 1] (image_size, image_size, 3) -> 19 probabilities (float32 even under mixed precision)."""
    arch = get_architecture(cfg.architecture)
    weights = _check_weights(cfg.weights)
    backbone_weights = weights if cfg.weights_scope == "backbone" or weights == "imagenet" else None
    inputs = keras.Input((image_size, image_size, 3), name="image")
    x = keras.layers.Rescaling(arch.input_scale, arch.input_offset, name="to_backbone_range")(inputs)
    x = arch.build_backbone(image_size, backbone_weights)(x)
    if arch.token_pooling:
        x = x[:, 0]
    x = keras.layers.Dropout(cfg.dropout, name="head_dropout")(x)
    outputs = keras.layers.Dense(NUM_CLASSES, activation="sigmoid", dtype="float32", name="probabilities")(x)
    model = keras.Model(inputs, outputs, name=f"hpacam_img_{cfg.architecture}")
    if weights not in (None, "imagenet") and cfg.weights_scope == "model":
        load_model_weights(model, weights)
    return model


def _check_weights(weights: str) -> str | None:
    """"none" -> None; "imagenet" as is; anything else must be an existing weights file."""
    if weights in ("none", "", None):
        return None
    if weights == "imagenet":
        log.warning("weights=imagenet: the library downloads ImageNet weights (needs internet)")
        return weights
    if not weights.endswith(WEIGHT_FILE_SUFFIXES):
        raise ValueError(f"model.weights={weights!r}: expected none, imagenet or a file ending in "
                         f"{', '.join(WEIGHT_FILE_SUFFIXES)}")
    if not storage.exists(weights):
        raise FileNotFoundError(f"{weights}: weights file not found (model.weights)")
    return weights


def load_model_weights(model: keras.Model, path: str) -> None:
    """Weights of a whole classifier of the same architecture (.keras or .weights.h5) into `model`."""
    try:
        model.load_weights(path)
    except (ValueError, KeyError) as exc:
        raise ValueError(f"{path}: these weights do not fit {model.name} "
                         f"(another architecture or image size?): {exc}") from exc
    log.info("loaded weights from %s", os.path.basename(path))


def float32_copy(model: keras.Model) -> keras.Model:
    """The same classifier with float32 compute, for saving a model trained in mixed precision.

    Mixed-precision variables are float32 already, so the weights copy exactly; the saved model
    then runs on any inference device (bfloat16 is slow or missing on older GPUs and CPUs). The
    copy is rebuilt from the model's own serialized config with every dtype policy set to float32.
    """
    config = _float32_policies(keras.saving.serialize_keras_object(model))
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")  # for sublayers built without a dtype
    try:
        copy = keras.saving.deserialize_keras_object(config)
    finally:
        keras.mixed_precision.set_global_policy(previous)
    copy.set_weights(model.get_weights())
    return copy


def _float32_policies(node):
    if isinstance(node, list):
        return [_float32_policies(item) for item in node]
    if not isinstance(node, dict):
        return node
    if node.get("class_name") == "DTypePolicy" and isinstance(node.get("config"), dict):
        return {**node, "config": {**node["config"], "name": "float32"}}
    return {key: _float32_policies(value) for key, value in node.items()}


@keras.saving.register_keras_serializable(package="hpacam")
class DefinedClassAUC(keras.metrics.AUC):
    """Mean ROC AUC over the classes that have both positive and negative examples so far.

    Keras's multi-label AUC averages over all labels and scores a label with no positive example
    as 0, so a validation fold without a single rare-class image (Mitotic spindle, 0.4% of HPA
    images) caps the figure at 18/19 and moves it with the fold rather than the model. A class
    without both kinds of example has no AUC; it is left out, as scikit-learn would refuse it.
    """

    def result(self):
        positives = self.true_positives[0] + self.false_negatives[0]
        negatives = self.false_positives[0] + self.true_negatives[0]
        previous = self.label_weights
        self.label_weights = keras.ops.cast((positives > 0) & (negatives > 0), "float32")
        try:
            return super().result()
        finally:
            self.label_weights = previous


def compile_model(model: keras.Model, cfg: TrainConfig) -> keras.Model:
    """Adam, binary cross-entropy over the 19 labels, and the mean ROC AUC over classes that have one."""
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=cfg.lr),
        loss=keras.losses.BinaryCrossentropy(),
        metrics=[DefinedClassAUC(multi_label=True, num_labels=NUM_CLASSES, name="auc")],
        steps_per_execution=cfg.steps_per_execution,
        jit_compile=cfg.jit_compile,
    )
    return model
