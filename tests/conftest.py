"""Fixtures shared by several test files, and the import order for the one process that runs them.

Test files that import Keras directly load TensorFlow before `hpacam.tf` can import triton first
(see hpacam/tf/__init__.py), and a later torchvision import then crashes the process. Loading the
package's guard here, before any test module, keeps any selection and order of tests safe.
"""

import logging

import cv2
import numpy as np
import pytest

import hpacam.tf  # noqa: F401


@pytest.fixture
def restore_root_logging():
    """Drop the log handlers (and level) that a stage run inside the test added to the root logger."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in set(root.handlers) - set(handlers):
        root.removeHandler(handler)
        handler.close()
    root.setLevel(level)


@pytest.fixture(scope="module")
def keras_images(tmp_path_factory):
    """16 small images of mixed bit depths; classes 0 and 1 brighten green so there is a signal."""
    root = tmp_path_factory.mktemp("img_data")
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    rows = []
    for i in range(16):
        label = i % 2
        top = 65535 if i % 4 == 1 else 255
        dtype = np.uint16 if i % 2 else np.uint8
        for name in ("red", "green", "blue", "yellow"):
            plane = rng.integers(0, top // 2, (40, 40))
            if name == "green" and label:
                plane = plane + top // 2
            assert cv2.imwrite(str(images / f"s{i:02d}_{name}.png"), plane.astype(dtype))
        rows.append(f"s{i:02d},{label}")
    labels = root / "labels.csv"
    labels.write_text("ID,Label\n" + "\n".join(rows) + "\n")
    return images, labels
