"""One place that decides where training runs: a TPU, several GPUs, or the default device.

Detection must be quick and offline on a machine without accelerators: `TPUClusterResolver()`
only contacts anything when a TPU name is set in the environment, and a TPU VM ("local") is only
tried when its device files exist.
"""

from __future__ import annotations

import glob
import logging
import os
from dataclasses import dataclass

import keras
import tensorflow as tf

log = logging.getLogger(__name__)

TPU_ENV_VARIABLES = ("TPU_NAME", "KUBE_GOOGLE_CLOUD_TPU_ENDPOINTS", "TPU_CONFIG")
TPU_DEVICE_FILES = ("/dev/accel*", "/dev/vfio/[0-9]*")  # TPU v2-v4 VMs / v5e and later


@dataclass
class StrategyChoice:
    strategy: tf.distribute.Strategy
    kind: str  # "tpu", "multi_gpu" or "default"
    replicas: int

    def global_batch(self, per_replica: int) -> int:
        return global_batch_size(per_replica, self.strategy)


def global_batch_size(per_replica: int, strategy: tf.distribute.Strategy) -> int:
    """Each replica sees `per_replica` images, so the dataset is batched by their total."""
    return per_replica * strategy.num_replicas_in_sync


def select_strategy(tpu: str = "auto") -> StrategyChoice:
    """TPU when present (or named), else MirroredStrategy over several GPUs, else the default."""
    resolver = _tpu_resolver(tpu)
    if resolver is not None:
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        strategy = tf.distribute.TPUStrategy(resolver)
        kind = "tpu"
    elif len(tf.config.list_physical_devices("GPU")) > 1:
        strategy, kind = tf.distribute.MirroredStrategy(), "multi_gpu"
    else:
        strategy, kind = tf.distribute.get_strategy(), "default"
    choice = StrategyChoice(strategy, kind, strategy.num_replicas_in_sync)
    log.info("distribution strategy: %s (%s), %d replica(s)", kind, type(strategy).__name__, choice.replicas)
    return choice


def _tpu_resolver(tpu: str) -> tf.distribute.cluster_resolver.TPUClusterResolver | None:
    if tpu == "none":
        return None
    if tpu != "auto":
        return tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)  # named: failures are errors
    if any(name in os.environ for name in TPU_ENV_VARIABLES):
        try:
            return tf.distribute.cluster_resolver.TPUClusterResolver()
        except (ValueError, RuntimeError) as exc:
            log.warning("TPU named in the environment but not reachable (%s); not using a TPU", exc)
            return None
    if local_tpu_present():
        try:
            return tf.distribute.cluster_resolver.TPUClusterResolver(tpu="local")
        except (ValueError, RuntimeError) as exc:
            log.warning("TPU device files found but no local TPU resolved (%s); not using a TPU", exc)
    return None


def local_tpu_present() -> bool:
    """Whether this is a TPU VM (the TPU chips appear as device files)."""
    return any(glob.glob(pattern) for pattern in TPU_DEVICE_FILES)


def set_precision(precision: str, kind: str) -> str:
    """Set Keras's global dtype policy; "auto" is bfloat16 compute on a TPU, float32 elsewhere.

    The classifier head is always float32, so probabilities and the loss keep full precision.
    """
    policy = ("mixed_bfloat16" if kind == "tpu" else "float32") if precision == "auto" else precision
    keras.mixed_precision.set_global_policy(policy)
    log.info("dtype policy: %s", policy)
    return policy
