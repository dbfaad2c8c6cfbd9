"""Typed config of the image-level (TensorFlow/Keras) stage.

Kept free of TensorFlow imports so that a script can parse and check its command line in a
fraction of a second, before paying for the TensorFlow import.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

ColorMode = Literal["rgb", "ggg"]
Precision = Literal["auto", "float32", "mixed_bfloat16", "mixed_float16"]


@dataclass
class StrategyConfig:
    # "auto": a TPU when one is found (TPU_NAME or a local TPU VM), else several GPUs, else the
    # default strategy; "none": never a TPU; anything else is given to TPUClusterResolver
    # ("local" on a Kaggle/Cloud TPU VM, a TPU name or a grpc:// address).
    tpu: str = "auto"
    # "auto": mixed_bfloat16 on a TPU, float32 elsewhere.
    precision: Precision = "auto"


@dataclass
class DataSource:
    """One label table and the folder holding its images, as the torch stage's `data.sources`."""

    images: str = ""  # folder (local or gs://) of {ID}_{red,green,blue,yellow}.png
    labels: str = ""  # Kaggle train.csv or public-HPA CSV (local or gs://)


@dataclass
class DataConfig:
    images: str = ""  # folder (local or gs://) of {ID}_{red,green,blue,yellow}.png
    labels: str = ""  # Kaggle-format CSV (local or gs://): ID,Label with labels joined by |
    # Several {images, labels} pairs (e.g. the Kaggle set and the public HPA set), combined as the
    # torch stage combines them (folds over the combined table); instead of data.images/labels.
    sources: list[DataSource] = field(default_factory=list)
    tfrecords: str = ""  # folder written by make_tfrecords.py; when set, read instead of images
    color_mode: ColorMode = "rgb"  # ggg: the green channel copied to three channels
    image_size: int = 512  # square side the model sees
    n_folds: int = 5  # must match the torch stage so that validation folds are the same images
    fold_seed: int = 42
    fold: int = 0  # validation fold; -1 trains on every image (no validation)
    cache: str = ""  # "" no cache, "memory", or a file prefix for tf.data's on-disk cache
    shuffle_buffer: int = 2048


def data_sources(data: DataConfig) -> list[DataSource]:
    """The sources to read: `data.sources`, or the single `data.images`/`data.labels` pair.

    Both at once is refused: which one was meant cannot be guessed. Checked where the data is
    read, not in __post_init__, because overrides are applied one at a time.
    """
    if data.sources:
        if data.images or data.labels:
            raise ValueError("give data.sources or data.images/data.labels, not both")
        for i, source in enumerate(data.sources):
            if not source.images or not source.labels:
                raise ValueError(f"data.sources[{i}] needs both images and labels, got {source}")
        return list(data.sources)
    if not data.labels:
        raise ValueError("data.labels is empty: give the label CSV (Kaggle ID,Label format)")
    return [DataSource(data.images, data.labels)]


@dataclass
class AugmentConfig:
    hflip: bool = True
    vflip: bool = True
    rot90: bool = True


@dataclass
class ModelConfig:
    # efficientnet_b0..b7, convnext_tiny/small/base/large/xlarge, vit_b16, resnext101_32x8d (the
    # seed's ResNeXt-101; weights from tools/resnext_weights.py), small_cnn (the CPU demo:
    # configs/img/demo_cpu.yaml), tiny and resnext_tiny (plumbing tests: trace in seconds, learn little)
    architecture: str = "efficientnet_b7"
    # "none" (random), "imagenet" (downloads: only when asked for), or a local file:
    # a .keras / .weights.h5 of this whole classifier, or (weights_scope=backbone) backbone weights.
    weights: str = "none"
    weights_scope: Literal["model", "backbone"] = "model"
    dropout: float = 0.2


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_per_replica: int = 8  # the global batch is this times the number of replicas
    lr: float = 1e-4
    monitor: str = "val_auc"  # without validation (data.fold=-1) the training metric is used
    monitor_mode: Literal["max", "min"] = "max"
    plateau_factor: float = 0.5
    plateau_patience: int = 2
    min_lr: float = 1e-7
    steps_per_execution: int = 1  # 32 or more on a TPU keeps the host out of the loop
    jit_compile: bool = False  # XLA on GPU; TPUs always compile
    time_limit_min: float = 0.0  # stop cleanly before this (Kaggle's 9 h); 0 = no limit
    backup_dir: str = ""  # pre-emption backup; "" = {run_dir}/backup; may be gs://
    verbose: int = 2


@dataclass
class RecordsConfig:
    """Only make_tfrecords.py reads this section."""

    bits: Literal[8, 16] = 16  # 16 keeps the decoded values to 1/65535; 8 halves the size
    images_per_shard: int = 128


@dataclass
class ImgTrainConfig:
    run_dir: str = "data/img/run"
    seed: int = 0
    # Bit-identical reruns (the demo's promise): deterministic kernels and tf.data order, slower.
    deterministic: bool = False
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    data: DataConfig = field(default_factory=DataConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    records: RecordsConfig = field(default_factory=RecordsConfig)

    def __post_init__(self):
        if self.data.image_size < 32:
            raise ValueError(f"data.image_size must be at least 32, got {self.data.image_size}")
        if not -1 <= self.data.fold < self.data.n_folds:
            raise ValueError(f"data.fold must be -1 or 0..{self.data.n_folds - 1}, got {self.data.fold}")
        if self.train.batch_per_replica < 1 or self.train.epochs < 1:
            raise ValueError("train.batch_per_replica and train.epochs must be at least 1")
