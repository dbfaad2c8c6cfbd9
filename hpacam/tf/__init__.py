"""The TensorFlow/Keras image-level stage (Kaggle TPU notebook).

The only package of hpacam that imports TensorFlow, so the torch stages never load it.
Modules: `config` (typed config, TensorFlow-free), `strategy` (TPU / GPUs / default, precision),
`data` (tf.data from HPA channel files), `tfrecords` (sharded TFRecords: writer and reader),
`models` (library backbones + sigmoid head), `callbacks`, `backup` (repairing a killed run's backup),
`train`, `predict` (inference entry).
Submodules are not imported here, so importing `hpacam.tf.config` stays cheap (triton, below, takes ~0.1 s).
"""

from hpacam.triton_guard import load_triton_first

# Importing triton (the GPU compiler that CUDA builds of torch install, and that torchvision pulls
# in) after TensorFlow 2.21 crashes the process with a segmentation fault. Every TensorFlow import
# of hpacam goes through this package, so triton is loaded here first where it exists, and loaded
# safely (hpacam.triton_guard) when the user's notebook imported TensorFlow before hpacam.tf.
load_triton_first()
