"""Fixtures shared by several test files, and the import order for the one process that runs them.

Test files that import Keras directly load TensorFlow before `hpacam.tf` can import triton first
(see hpacam/tf/__init__.py), and a later torchvision import then crashes the process. Loading the
package's guard here, before any test module, keeps any selection and order of tests safe.
"""

import logging
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import hpacam.tf  # noqa: F401
from hpacam.classes import CHANNELS

# tools/ holds the checkout's own scripts (the demo, the ablation, the stage commands): not a
# package, so the tests that call their functions import them by file name, as the scripts
# import each other when run.
TOOLS = Path(__file__).resolve().parents[1] / "tools"
sys.path.insert(0, str(TOOLS))


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


def write_tiny_cam_checkpoint(path, seed: int, image_size: int = 32):
    """An untrained ResNet-10 CAM checkpoint (seeded weights) in the format inference loads.

    Its outputs mean nothing, but they are real maps of a real model, and two seeds give two
    models that disagree: enough to test what the stages do with them, in a second.
    """
    import torch

    from hpacam.cam.checkpoint import save_checkpoint
    from hpacam.cam.config import TrainCamConfig
    from hpacam.cam.models import create_model
    from hpacam.classes import CLASS_NAMES
    from hpacam.config import load_config, to_dict
    from hpacam.images import COLOR_MODES

    torch.manual_seed(seed)
    model = create_model("resnet10t", in_chans=4, output_stride=8, channels=(8, 16, 32, 64), stem_width=8)
    cfg = load_config(TrainCamConfig, None, [f"data.image_size={image_size}", "model.output_stride=8",
                                              "loss.mode=plain"])
    return save_checkpoint(path, {"arch": model.arch, "classes": list(CLASS_NAMES), "channels": list(COLOR_MODES["rgby"]),
                                  "config": to_dict(cfg), "model": model.state_dict()})


@pytest.fixture(scope="session")
def tiny_cam_set(tmp_path_factory):
    """(two tiny CAM checkpoints, a folder of three synthetic 96 px images with labels and cell truth)."""
    from hpacam.synth import generate_dataset

    root = tmp_path_factory.mktemp("tiny_cam_set")
    generate_dataset(root / "set", 3, 96, seed=5, progress=False)
    checkpoints = [write_tiny_cam_checkpoint(root / f"cam{seed}" / "best.pt", seed) for seed in (1, 2)]
    return checkpoints, root / "set"


@pytest.fixture(scope="module")
def random_rgby_set(tmp_path_factory):
    """24 random 32x32 RGBY PNGs under images/ with 1-2 labels each among five classes, and
    labels.csv: data for the training loop, which needs images and labels but no signal."""
    root = tmp_path_factory.mktemp("random_rgby")
    rng = np.random.default_rng(0)
    (root / "images").mkdir()
    rows = []
    for i in range(24):
        image_id = f"img{i:02d}"
        for channel in CHANNELS:
            cv2.imwrite(str(root / "images" / f"{image_id}_{channel}.png"),
                        rng.integers(0, 255, (32, 32), dtype=np.uint8))
        labels = sorted(set(rng.choice([0, 5, 6, 7, 16], size=int(rng.integers(1, 3))).tolist()))
        rows.append(f"{image_id},{'|'.join(map(str, labels))}\n")
    (root / "labels.csv").write_text("ID,Label\n" + "".join(rows))
    return root
