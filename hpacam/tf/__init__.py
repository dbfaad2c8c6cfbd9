"""The TensorFlow/Keras image-level stage (Kaggle TPU notebook).

The only package of hpacam that imports TensorFlow, so the torch stages never load it.
Modules: `config` (typed config, TensorFlow-free), `strategy` (TPU / GPUs / default, precision),
`data` (tf.data from HPA channel files), `tfrecords` (sharded TFRecords: writer and reader),
`models` (library backbones + sigmoid head), `callbacks`, `train`, `predict` (inference entry).
Submodules are not imported here, so importing `hpacam.tf.config` stays cheap.
"""
