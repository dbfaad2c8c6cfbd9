"""The TensorFlow/Keras image-level stage (Kaggle TPU notebook).

The only package of hpacam that imports TensorFlow, so the torch stages never load it.
Modules: `config` (typed config, TensorFlow-free), `strategy` (TPU / GPUs / default, precision),
`data` (tf.data from HPA channel files), `tfrecords` (sharded TFRecords: writer and reader),
`models` (library backbones + sigmoid head), `callbacks`, `backup` (repairing a killed run's backup),
`train`, `predict` (inference entry).
Submodules are not imported here, so importing `hpacam.tf.config` stays cheap (triton, below, takes ~0.1 s).
"""

import importlib.util

# Importing triton (the GPU compiler that CUDA builds of torch install, and that torchvision pulls
# in) after TensorFlow 2.21 crashes the process with a segmentation fault; the other order works.
# Every TensorFlow import of hpacam goes through this package, so a process that runs both stages
# (inference with Keras image models, the demo, a notebook) imports triton first where it exists.
if importlib.util.find_spec("triton") is not None:
    import triton  # noqa: F401
