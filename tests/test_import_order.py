"""TensorFlow and torch in one process, in the orders the notebooks show (docs/kaggle-tpu.md cell 1
imports TensorFlow first, then cell 3 imports hpacam.tf.train; inference loads CAM backbones and
Keras models in one process). Each order runs in a fresh interpreter: a crash is exit -11."""

import importlib.util
import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None,
                                reason="TensorFlow is not installed")

TRITON = importlib.util.find_spec("triton") is not None
# A tiny timm backbone through hpacam's own factory: the torch path that imports torchvision.
BUILD_CAM = ("from hpacam.cam.models import create_model; import torch; "
             "m = create_model('resnet10t', output_stride=32); print(tuple(m(torch.zeros(1, 4, 64, 64))[0].shape))")
KERAS_STEP = "import keras; print(tuple(keras.layers.Dense(2)(keras.ops.zeros((1, 3))).shape))"


def run_python(code: str) -> subprocess.CompletedProcess:
    """Run `code` in a new interpreter with the test's environment (PYTHONPATH included)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env)


def assert_ran(done: subprocess.CompletedProcess, last_line: str) -> None:
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"  # -11: segfault
    assert done.stdout.strip().splitlines()[-1] == last_line, done.stdout


def test_tpu_notebook_order_tensorflow_first_then_hpacam_tf():
    """docs/kaggle-tpu.md: cell 1 `import tensorflow as tf, keras`, cell 3 `hpacam.tf.train`, then torch."""
    done = run_python("import tensorflow as tf, keras\n"
                      "from hpacam.tf.train import main\n"
                      "import hpacam.triton_guard as g, sys\n"
                      "print('triton' in sys.modules)\n"
                      "import torchvision.ops, timm\n"
                      f"{KERAS_STEP}\n")
    assert_ran(done, "(1, 2)")
    assert done.stdout.splitlines()[0] == str(TRITON)  # hpacam.tf loaded triton, safely
    assert "RuntimeWarning" not in done.stderr


def test_tensorflow_first_then_inference_builds_a_cam_backbone():
    """A notebook that imported TensorFlow, then runs hpacam.inference's torch models."""
    done = run_python("import tensorflow\nimport hpacam.inference\n" + BUILD_CAM.replace("; ", "\n"))
    assert_ran(done, "(19,)")


def test_hpacam_tf_first_then_tensorflow_and_torch():
    """The reverse order: hpacam.tf (triton first, plainly), then TensorFlow, Keras and timm."""
    done = run_python("import hpacam.tf.predict\nimport tensorflow\n" + KERAS_STEP + "\n"
                      + BUILD_CAM.replace("; ", "\n"))
    assert_ran(done, "(19,)")


def test_inference_first_then_tensorflow_keras_stage():
    """hpacam.inference and a CAM backbone first, then the Keras image-level stage."""
    done = run_python("import hpacam.inference\n" + BUILD_CAM.replace("; ", "\n")
                      + "\nimport tensorflow\nimport hpacam.tf.train\n" + KERAS_STEP)
    assert_ran(done, "(1, 2)")


@pytest.mark.skipif(not TRITON, reason="triton is not installed: nothing can crash")
def test_without_deepbind_triton_is_disabled_with_a_warning_not_a_crash():
    """Where RTLD_DEEPBIND does not exist (not glibc), hpacam blocks triton and says why."""
    done = run_python("import os\ndel os.RTLD_DEEPBIND\nimport tensorflow\nimport warnings\n"
                      "warnings.simplefilter('always')\nimport hpacam.tf\nimport sys\n"
                      "print(sys.modules['triton'])\n" + BUILD_CAM.replace("; ", "\n"))
    assert_ran(done, "(19,)")
    assert done.stdout.splitlines()[0] == "None"
    assert "import hpacam.tf (or triton) before tensorflow" in done.stderr
