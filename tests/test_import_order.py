"""TensorFlow and torch in one process, TensorFlow first: what inference and notebooks do."""

import importlib.util
import os
import subprocess
import sys

import pytest


@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="TensorFlow is not installed")
def test_torchvision_after_the_keras_stage_does_not_crash():
    code = "import hpacam.tf.train, keras, torchvision.ops, timm; print('both loaded')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert done.returncode == 0, done.stderr[-2000:]  # -11 (a segmentation fault) without the guard
    assert done.stdout.strip() == "both loaded"
