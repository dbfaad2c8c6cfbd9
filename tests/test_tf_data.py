"""TensorFlow input: decoding matches the torch-side reader, TFRecords round-trip, strategy on CPU."""

import os
import runpy
import subprocess
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

tf = pytest.importorskip("tensorflow")

from hpacam.config import load_config  # noqa: E402
from hpacam.images import ImageReadError, read_image  # noqa: E402
from hpacam.labels import make_folds, multi_hot, read_labels  # noqa: E402
from hpacam.tf.config import AugmentConfig, ImgTrainConfig  # noqa: E402
from hpacam.tf.data import augment_image, folder_datasets, load_images, read_labeled_images  # noqa: E402
from hpacam.tf.strategy import select_strategy, set_precision  # noqa: E402
from hpacam.tf.tfrecords import RecordsError, load_tfrecords, make_tfrecords, record_datasets  # noqa: E402

CHANNELS = ("red", "green", "blue", "yellow")
REPO = Path(__file__).resolve().parents[1]


def test_tensorflow_stays_out_of_the_torch_path_and_bad_configs_fail_before_importing_it():
    code = ("import sys, hpacam, hpacam.images, hpacam.labels, hpacam.config, hpacam.tf, hpacam.tf.config; "
            "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
    bad = subprocess.run([sys.executable, str(REPO / "train-image-level-model/train_img.py"),
                          "--config", str(REPO / "configs/img/tiny_cpu.yaml"), "model.archtecture=tiny"],
                         capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2 and "unknown key(s) ['archtecture']" in bad.stderr


@pytest.mark.parametrize("recipe", sorted((REPO / "configs/img").glob("*.yaml")), ids=lambda p: p.name)
def test_recipes_load(recipe):
    cfg = load_config(ImgTrainConfig, recipe)
    assert cfg.data.color_mode in ("rgb", "ggg")
    # the library's ImageNet weights, none, or a local file under weights/ (weights/README.md)
    assert cfg.model.weights in ("imagenet", "none") or cfg.model.weights.startswith("weights/")


def write_image(folder, image_id, planes):
    for name, plane in zip(CHANNELS, planes):
        assert cv2.imwrite(str(folder / f"{image_id}_{name}.png"), plane)


def bit_depth_zoo(folder, side=40, seed=0):
    """One image of each kind HPA data comes in, plus a 16-bit image whose green is dim."""
    rng = np.random.default_rng(seed)
    u8 = lambda top=255: rng.integers(0, top + 1, (side, side)).astype(np.uint8)  # noqa: E731
    u16 = lambda top=65535: rng.integers(0, top + 1, (side, side)).astype(np.uint16)  # noqa: E731
    images = {
        "eight": [u8() for _ in CHANNELS],
        "sixteen": [u16() for _ in CHANNELS],
        "eight_in_sixteen": [u16(255) for _ in CHANNELS],
        "dim_green": [u16(), u16(200), u16(), u16()],  # rgb: /65535; ggg (green alone): /255
        "mixed_files": [u16(), u8(), u8(), u8()],
    }
    for image_id, planes in images.items():
        write_image(folder, image_id, planes)
    return list(images)


@pytest.mark.parametrize("mode", ["rgb", "ggg"])
@pytest.mark.parametrize("size", [None, 20, 32, 56])
def test_decoding_matches_the_torch_side_reader(tmp_path, mode, size):
    ids = bit_depth_zoo(tmp_path)
    ours = load_images(str(tmp_path), ids, mode, size)
    theirs = np.stack([read_image(tmp_path, image_id, mode, size) for image_id in ids])
    assert ours.shape == theirs.shape and ours.dtype == np.float32
    if size is None:
        np.testing.assert_array_equal(ours, theirs)  # same bits, not just close
    else:
        np.testing.assert_allclose(ours, theirs, atol=1e-5)  # area / bilinear resize, cv2 vs TF


def test_8_bit_png_is_not_scaled_by_257(tmp_path):
    write_image(tmp_path, "a", [np.full((8, 8), v, np.uint8) for v in (10, 100, 200, 255)])
    image = load_images(str(tmp_path), ["a"], "rgb")[0]
    np.testing.assert_allclose(image[0, 0], np.array([10, 100, 200]) / 255, rtol=1e-6)


def test_missing_channel_names_the_file(tmp_path):
    bit_depth_zoo(tmp_path)
    os.remove(tmp_path / "eight_blue.png")
    with pytest.raises(ImageReadError, match="eight_blue.png: missing channel file"):
        load_images(str(tmp_path), ["eight"], "rgb")
    load_images(str(tmp_path), ["eight"], "ggg")  # green-only models do not need blue


def test_corrupt_file_names_the_file(tmp_path):
    bit_depth_zoo(tmp_path)
    (tmp_path / "sixteen_green.png").write_bytes(b"")
    with pytest.raises(tf.errors.InvalidArgumentError, match="sixteen_green.png"):
        load_images(str(tmp_path), ["sixteen"], "rgb")


def test_augmentation_is_a_dihedral_transform():
    tf.random.set_seed(1)
    image = tf.reshape(tf.range(2 * 2 * 3, dtype=tf.float32), (2, 2, 3))
    variants = {augment_image(image, AugmentConfig()).numpy().tobytes() for _ in range(64)}
    assert len(variants) == 8  # 4 rotations x flip: all reached, nothing else
    same = augment_image(image, AugmentConfig(hflip=False, vflip=False, rot90=False))
    np.testing.assert_array_equal(same.numpy(), image.numpy())


def test_strategy_falls_back_to_default_on_cpu():
    choice = select_strategy("auto")
    assert choice.kind == "default" and choice.replicas == 1
    assert choice.global_batch(8) == 8
    assert select_strategy("none").kind == "default"
    assert set_precision("auto", choice.kind) == "float32"
    assert set_precision("auto", "tpu") == "mixed_bfloat16"
    set_precision("float32", "default")


# ----------------------------------------------------------------------------- TFRecords


def labelled_set(tmp_path, n=12, side=40, seed=3):
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        dtype, top = [(np.uint8, 255), (np.uint16, 65535), (np.uint16, 255)][i % 3]
        write_image(images, f"id{i:02d}", [rng.integers(0, top + 1, (side, side)).astype(dtype) for _ in CHANNELS])
        labels = sorted(set(rng.integers(0, 19, 2).tolist()))
        rows.append(f"id{i:02d},{'|'.join(map(str, labels))}")
    labels_csv = tmp_path / "labels.csv"
    labels_csv.write_text("ID,Label\n" + "\n".join(rows) + "\n")
    return images, labels_csv


def data_config(images, labels_csv, **overrides):
    base = [f"data.images={images}", f"data.labels={labels_csv}", "data.image_size=32", "data.n_folds=3",
            "records.images_per_shard=3"]
    return load_config(ImgTrainConfig, None, base + [f"{k}={v}" for k, v in overrides.items()])


@pytest.mark.parametrize("mode, bits, atol", [("rgb", 16, 1e-5), ("ggg", 8, 0.5 / 255 + 1e-6)])
def test_tfrecord_round_trip_gives_the_same_images_labels_and_folds(tmp_path, mode, bits, atol):
    images, labels_csv = labelled_set(tmp_path)
    cfg = data_config(images, labels_csv, **{"data.color_mode": mode, "records.bits": bits})
    out = str(tmp_path / "records")
    if mode == "rgb":
        manifest = make_tfrecords(cfg, out)
    else:  # through the command line
        script = runpy.run_path(str(REPO / "train-image-level-model/make_tfrecords.py"))
        manifest = script["main"](["--out", out, f"data.images={images}", f"data.labels={labels_csv}",
                                   "data.image_size=32", "data.n_folds=3", "records.images_per_shard=3",
                                   f"data.color_mode={mode}", f"records.bits={bits}"])
    assert sum(s["count"] for s in manifest["shards"]) == 12
    assert all(s["count"] <= 3 for s in manifest["shards"])  # records.images_per_shard

    records = load_tfrecords(out)
    frame = read_labels(labels_csv).set_index("ID")
    expected_folds = dict(zip(frame.index, make_folds(multi_hot(frame["labels"]), 3, 42)))
    assert sorted(records.ids) == sorted(frame.index)
    np.testing.assert_array_equal(records.targets, multi_hot(frame.loc[records.ids, "labels"]))
    assert [expected_folds[i] for i in records.ids] == records.folds.tolist()
    folder_images = load_images(str(images), records.ids, mode, 32)
    assert records.images.shape == folder_images.shape == (12, 32, 32, 3)
    np.testing.assert_allclose(records.images, folder_images, atol=atol)


def test_training_batches_from_records_and_folder_split_the_same_folds(tmp_path):
    images, labels_csv = labelled_set(tmp_path)
    out = str(tmp_path / "records")
    make_tfrecords(data_config(images, labels_csv), out)
    cfg = data_config(images, labels_csv, **{"data.tfrecords": out, "data.fold": 1})
    table = read_labeled_images(str(labels_csv), 3, 42)
    for train_ds, valid_ds in (record_datasets(cfg, 2), folder_datasets(cfg, 2)):
        valid_targets = np.concatenate([t.numpy() for _, t in valid_ds])
        np.testing.assert_array_equal(valid_targets, table.targets[table.folds == 1])
        train_batches = [(x.numpy(), t.numpy()) for x, t in train_ds]
        n_train = int((table.folds != 1).sum())
        assert sum(len(t) for _, t in train_batches) == n_train // 2 * 2  # full batches only
        assert all(x.shape == (2, 32, 32, 3) for x, _ in train_batches)


def test_records_made_for_other_folds_are_refused(tmp_path):
    images, labels_csv = labelled_set(tmp_path)
    out = str(tmp_path / "records")
    make_tfrecords(data_config(images, labels_csv), out)
    cfg = data_config(images, labels_csv, **{"data.tfrecords": out, "data.fold_seed": 7})
    with pytest.raises(RecordsError, match="fold_seed"):
        record_datasets(cfg, 2)
    with pytest.raises(RecordsError, match="manifest.json: not found"):
        record_datasets(data_config(images, labels_csv, **{"data.tfrecords": str(tmp_path)}), 2)


# ----------------------------------------------------------------------------- bad input (issue 15, item 10)


def damage_png(path, how):
    """`truncated`: the second half cut off; `corrupt`: a complete PNG whose image data is garbage."""
    data = bytearray(path.read_bytes())
    if how == "truncated":
        path.write_bytes(bytes(data[: len(data) // 2]))
    else:
        start = data.index(b"IDAT") + 4
        data[start:start + 40] = bytes(range(7, 47))
        path.write_bytes(bytes(data))


def run_make_tfrecords(*argv):
    """make_tfrecords.py's main(argv) -> (exit status, manifest or None)."""
    script = runpy.run_path(str(REPO / "train-image-level-model/make_tfrecords.py"))
    try:
        return 0, script["main"](list(argv))
    except SystemExit as exc:
        return int(exc.code), None


@pytest.mark.parametrize("how", ["truncated", "corrupt"])
def test_make_tfrecords_on_a_damaged_png_names_the_file_and_leaves_no_records(tmp_path, capsys, how):
    images, labels_csv = labelled_set(tmp_path)
    out = tmp_path / "records"
    args = ["--out", str(out), f"data.images={images}", f"data.labels={labels_csv}", "data.image_size=32",
            "data.n_folds=3", "records.images_per_shard=1"]
    assert run_make_tfrecords(*args)[0] == 0  # a finished conversion first: its manifest must not survive
    damage_png(images / "id07_green.png", how)
    status, _ = run_make_tfrecords(*args)
    assert status == 1
    err = capsys.readouterr().err
    problem = "truncated PNG file" if how == "truncated" else "TensorFlow cannot decode it"
    assert f"make_tfrecords: error: {images / 'id07_green.png'}: {problem}" in err, err
    assert not list(out.iterdir())  # no manifest, no shards, no config: nothing that reads as a conversion


def test_make_tfrecords_on_an_unknown_class_names_the_row_and_writes_nothing(tmp_path, capsys):
    images, labels_csv = labelled_set(tmp_path)
    lines = labels_csv.read_text().splitlines()
    lines[2] = "id01,3|19"
    labels_csv.write_text("\n".join(lines) + "\n")
    status, _ = run_make_tfrecords("--out", str(tmp_path / "records"), f"data.images={images}",
                                   f"data.labels={labels_csv}", "data.n_folds=3")
    assert status == 1
    assert f"make_tfrecords: error: {labels_csv}, line 3 (ID id01): unknown class 19 (classes are 0..18)" in \
        capsys.readouterr().err
    assert not (tmp_path / "records").exists()
