"""Image-level training on CPU: a tiny library model trains, saves, reloads safely, predicts the same."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import csv  # noqa: E402
import json  # noqa: E402
import runpy  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")
pytest.importorskip("keras_hub")

from hpacam.config import load_config  # noqa: E402
from hpacam.tf.config import ImgTrainConfig, ModelConfig  # noqa: E402
from hpacam.tf.data import load_images  # noqa: E402
from hpacam.tf.models import ARCHITECTURES, build_model, get_architecture  # noqa: E402
from hpacam.tf.predict import load_image_model, main as predict_main, predict_image_probabilities  # noqa: E402
from hpacam.tf.tfrecords import make_tfrecords  # noqa: E402
from hpacam.tf.train import main as train_main  # noqa: E402

TRAIN_SCRIPT = Path(__file__).resolve().parents[1] / "train-image-level-model" / "train_img.py"
DEMO_RECIPE = Path(__file__).resolve().parents[1] / "configs" / "img" / "demo_cpu.yaml"


def tiny_args(run_dir, images, labels, *extra):
    return [f"run_dir={run_dir}", f"data.images={images}", f"data.labels={labels}", "model.architecture=tiny",
            "data.image_size=32", "data.n_folds=4", "train.batch_per_replica=4", "train.epochs=1",
            "train.verbose=0", *extra]


def test_tiny_model_trains_saves_reloads_safely_and_predicts_the_same(tmp_path, keras_images):
    images, labels = keras_images
    run_dir = tmp_path / "run"
    result = runpy.run_path(str(TRAIN_SCRIPT))["main"](tiny_args(run_dir, images, labels, "data.color_mode=ggg"))

    assert result.finished and set(result.history) >= {"loss", "auc", "val_loss", "val_auc"}
    for name in ("best.keras", "best.keras.json", "config.yaml", "history.csv", "log.txt"):
        assert (run_dir / name).is_file(), name
    assert not (run_dir / "backup").exists()  # finished runs leave no backup behind
    assert not [p for p in os.listdir(run_dir) if ".partial" in p]
    saved = load_config(ImgTrainConfig, run_dir / "config.yaml")
    assert saved.data.color_mode == "ggg" and saved.model.architecture == "tiny"

    ids = [f"s{i:02d}" for i in (5, 0, 11, 3, 5)]  # any order, repeats allowed
    probs = predict_image_probabilities(str(run_dir / "best.keras"), ids, str(images))
    expected = result.model.predict(load_images(str(images), ids, "ggg", 32), verbose=0)
    assert probs.shape == (5, 19) and probs.dtype == np.float32
    assert np.all((probs >= 0) & (probs <= 1))
    np.testing.assert_allclose(probs, expected, atol=1e-6)
    np.testing.assert_allclose(probs[0], probs[4], atol=1e-6)  # same image, other batch position

    out_csv = tmp_path / "probs.csv"
    ids_csv = tmp_path / "ids.csv"
    ids_csv.write_text("ID\n" + "\n".join(ids) + "\n")
    frame = predict_main(["--model", str(run_dir / "best.keras"), "--images", str(images), "--ids", str(ids_csv),
                          "--out", str(out_csv)])
    with open(out_csv) as fh:
        assert next(csv.reader(fh)) == ["ID"] + [str(c) for c in range(19)]
    np.testing.assert_allclose(frame[[str(c) for c in range(19)]].to_numpy(), probs, atol=1e-6)


@pytest.fixture
def float32_afterwards():
    yield
    keras.mixed_precision.set_global_policy("float32")


def test_time_limit_stops_cleanly_and_the_same_command_resumes_from_tfrecords(tmp_path, keras_images,
                                                                             float32_afterwards):
    """Also the TPU settings that run on a CPU: TFRecords, bfloat16 mixed precision, several steps a call."""
    images, labels = keras_images
    records = tmp_path / "records"
    make_tfrecords(load_config(ImgTrainConfig, None, tiny_args(tmp_path / "x", images, labels)), str(records))
    run_dir = tmp_path / "run"
    args = tiny_args(run_dir, images, labels, f"data.tfrecords={records}", "train.epochs=2",
                     "strategy.precision=mixed_bfloat16", "train.steps_per_execution=2")

    first = train_main(args + ["train.time_limit_min=0.000001"])
    assert not first.finished and len(first.history["loss"]) == 1
    assert (run_dir / "backup" / "training_metadata.json").is_file()
    assert json.loads((run_dir / "best.keras.json").read_text())["epoch"] == 1

    second = train_main(args)
    assert second.finished and len(second.history["loss"]) == 1  # only the epoch that was missing
    with open(run_dir / "history.csv") as fh:
        assert [row["epoch"] for row in csv.DictReader(fh)] == ["0", "1"]
    assert not (run_dir / "backup").exists()
    keras.mixed_precision.set_global_policy("float32")  # as in an inference process
    reloaded = load_image_model(str(run_dir / "best.keras"))
    assert reloaded.input_shape == (None, 32, 32, 3)
    assert {layer.dtype_policy.name for layer in reloaded._flatten_layers()} == {"float32"}  # runs on any device


@pytest.mark.parametrize("suffix", [".weights.h5", ".keras"])
def test_weights_from_a_local_file(tmp_path, suffix):
    source = build_model(ModelConfig(architecture="tiny"), 32)
    path = tmp_path / f"start{suffix}"
    source.save_weights(path) if suffix == ".weights.h5" else source.save(path)
    loaded = build_model(ModelConfig(architecture="tiny", weights=str(path)), 32)
    for a, b in zip(source.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="do not fit"):
        build_model(ModelConfig(architecture="tiny", weights=str(path)), 48)  # other size: other positions


def test_backbone_weights_from_a_local_file(tmp_path):
    """weights_scope=backbone: e.g. ImageNet weights downloaded elsewhere, loaded into the backbone only."""
    source = build_model(ModelConfig(architecture="tiny"), 32)
    backbone = source.get_layer(index=2)
    path = tmp_path / "backbone.weights.h5"
    backbone.save_weights(path)
    loaded = build_model(ModelConfig(architecture="tiny", weights=str(path), weights_scope="backbone"), 32)
    for a, b in zip(backbone.get_weights(), loaded.get_layer(index=2).get_weights()):
        np.testing.assert_array_equal(a, b)


def test_bad_weights_and_architectures_are_named():
    with pytest.raises(ValueError, match="unknown architecture 'resnet9000'.*efficientnet_b7"):
        get_architecture("resnet9000")
    with pytest.raises(FileNotFoundError, match="nowhere.weights.h5: weights file not found"):
        build_model(ModelConfig(architecture="tiny", weights="/nowhere.weights.h5"), 32)
    with pytest.raises(ValueError, match="expected none, imagenet or a file"):
        build_model(ModelConfig(architecture="tiny", weights="pretrained"), 32)
    assert {"efficientnet_b7", "vit_b16", "convnext_base", "tiny"} <= set(ARCHITECTURES)


@pytest.mark.slow
@pytest.mark.parametrize("name, features", [("efficientnet_b7", 2560), ("vit_b16", 768), ("convnext_tiny", 768)])
def test_big_architectures_build_without_downloading(name, features):
    """Architecture only (a few seconds each on two idle cores); imagenet weights are never fetched."""
    model = build_model(ModelConfig(architecture=name), 32)
    assert model.output_shape == (None, 19)
    assert model.get_layer("probabilities").input.shape[-1] == features
    assert model.get_layer("probabilities").dtype_policy.name == "float32"


@pytest.fixture
def op_determinism_off_afterwards():
    """enable_op_determinism is process-wide; switch it off again so later tests run as users' runs do."""
    from tensorflow.python.framework import config as tf_framework_config

    yield
    tf_framework_config.disable_op_determinism()


def test_deterministic_runs_are_bit_identical(tmp_path, keras_images, op_determinism_off_afterwards):
    """`deterministic=true` (the demo's setting): the same seed gives the same weights, augmentation included."""
    images, labels = keras_images
    runs = [train_main(tiny_args(tmp_path / f"run{i}", images, labels, "deterministic=true", "seed=3"))
            for i in range(2)]
    first, second = (run.model.get_weights() for run in runs)
    assert len(first) == len(second) > 0
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert load_config(ImgTrainConfig, tmp_path / "run0" / "config.yaml").deterministic


def test_small_cnn_trains_and_its_saved_model_reloads_safely(tmp_path, keras_images):
    """The demo's architecture (configs/img/demo_cpu.yaml) through the real train(), at a small size."""
    images, labels = keras_images
    run_dir = tmp_path / "run"
    args = tiny_args(run_dir, images, labels, "model.architecture=small_cnn", "train.epochs=2",
                     "data.color_mode=rgb")
    result = train_main(["--config", str(DEMO_RECIPE)] + args)

    assert result.finished and len(result.history["val_auc"]) == 2
    saved = load_config(ImgTrainConfig, run_dir / "config.yaml")
    assert saved.model.architecture == "small_cnn" and saved.data.image_size == 32
    model = keras.saving.load_model(run_dir / "best.keras", safe_mode=True)
    probs = model.predict(load_images(str(images), ["s00", "s01", "s02"], "rgb", 32), verbose=0)
    assert probs.shape == (3, 19) and np.all((probs >= 0) & (probs <= 1))
    with pytest.raises(ValueError, match="'small_cnn' has no ImageNet weights"):
        build_model(ModelConfig(architecture="small_cnn", weights="imagenet"), 32)


def test_validation_auc_leaves_out_classes_without_both_kinds_of_example():
    """Keras's multi-label AUC scores a class with no positive example 0; the compiled metric leaves it out."""
    from sklearn.metrics import roc_auc_score

    from hpacam.tf.config import TrainConfig
    from hpacam.tf.models import compile_model

    rng = np.random.default_rng(0)
    targets = (rng.random((48, 19)) < 0.3).astype("float32")
    targets[:, 11] = 0.0  # no Mitotic spindle image in this fold
    targets[:, 15] = 1.0  # every image an Aggresome: no negative
    scores = np.clip(targets * 0.3 + rng.random((48, 19)) * 0.7, 0, 1).astype("float32")
    model = keras.Sequential([keras.Input((19,)), keras.layers.Identity()])
    compile_model(model, TrainConfig())
    result = model.evaluate(scores, targets, batch_size=16, verbose=0, return_dict=True)
    defined = [c for c in range(19) if 0 < targets[:, c].sum() < len(targets)]
    expected = np.mean([roc_auc_score(targets[:, c], scores[:, c]) for c in defined])
    assert result["auc"] == pytest.approx(expected, abs=2e-3)  # 200 thresholds


@pytest.mark.parametrize("fault", ["truncated_png", "class_19"])
def test_bad_input_stops_training_with_one_line_naming_the_file_and_no_model(tmp_path, keras_images, capsys, fault,
                                                                          restore_root_logging):
    import shutil

    source, source_labels = keras_images
    images, labels = tmp_path / "images", tmp_path / "labels.csv"
    shutil.copytree(source, images)
    lines = source_labels.read_text().splitlines()
    if fault == "truncated_png":
        data = (images / "s05_green.png").read_bytes()
        (images / "s05_green.png").write_bytes(data[: len(data) // 2])
    else:
        lines[4] = "s03,19"
    labels.write_text("\n".join(lines) + "\n")
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(TRAIN_SCRIPT))["main"](tiny_args(run_dir, images, labels, "data.fold=-1"))
    assert exit_info.value.code == 1
    expected = {"truncated_png": f"{images / 's05_green.png'}: truncated PNG file",
                "class_19": f"{labels}, line 5 (ID s03): unknown class 19 (classes are 0..18)"}[fault]
    err = capsys.readouterr().err
    assert f"train_img: error: {expected}" in err and "Traceback" not in err
    assert f"train_img: error: {expected}" in (run_dir / "log.txt").read_text()
    assert not (run_dir / "best.keras").exists()
