"""The Keras stage reads several {images, labels} sources (data.sources), as the torch stage does:
two tiny synthetic sources combined, the same folds as the torch stage, TFRecords and a real run."""

import os
import runpy
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("tensorflow")

from hpacam.cam.config import TrainCamConfig  # noqa: E402
from hpacam.cam.data import read_sources as torch_read_sources, split_folds as torch_split_folds  # noqa: E402
from hpacam.classes import CHANNELS  # noqa: E402
from hpacam.config import load_config  # noqa: E402
from hpacam.images import ImageReadError  # noqa: E402
from hpacam.labels import LabelFileError  # noqa: E402
from hpacam.tf.config import ImgTrainConfig  # noqa: E402
from hpacam.tf.data import folder_datasets, load_images, read_sources, split_folds  # noqa: E402
from hpacam.tf.tfrecords import make_tfrecords, record_datasets  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def write_source(root: Path, prefix: str, n: int, seed: int, bits: int = 8) -> tuple[Path, Path]:
    """`n` random 40 px images named {prefix}NN with 1-2 labels each, and their Kaggle label CSV."""
    images = root / prefix / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    dtype, top = (np.uint8, 255) if bits == 8 else (np.uint16, 65535)
    rows = []
    for i in range(n):
        for channel in CHANNELS:
            assert cv2.imwrite(str(images / f"{prefix}{i:02d}_{channel}.png"), rng.integers(0, top, (40, 40)).astype(dtype))
        rows.append(f"{prefix}{i:02d},{'|'.join(map(str, sorted({int(v) for v in rng.integers(0, 19, 2)})))}")
    labels = root / prefix / "labels.csv"
    labels.write_text("ID,Label\n" + "\n".join(rows) + "\n")
    return images, labels


@pytest.fixture
def two_sources(tmp_path):
    return write_source(tmp_path, "kag", 8, seed=1), write_source(tmp_path, "pub", 7, seed=2, bits=16)


def sources_override(*pairs) -> str:
    return "data.sources=[" + ", ".join(f"{{images: {i}, labels: {lab}}}" for i, lab in pairs) + "]"


def img_config(pairs, *extra: str) -> ImgTrainConfig:
    return load_config(ImgTrainConfig, None, [sources_override(*pairs), "data.image_size=32", "data.n_folds=3",
                                              "records.images_per_shard=4", *extra])


def test_sources_combine_with_the_torch_stages_ids_targets_and_folds(two_sources):
    table = read_sources(img_config(two_sources).data)
    assert table.ids == [f"kag{i:02d}" for i in range(8)] + [f"pub{i:02d}" for i in range(7)]
    assert table.folders == [str(two_sources[0][0])] * 8 + [str(two_sources[1][0])] * 7
    torch_cfg = load_config(TrainCamConfig, None, [sources_override(*two_sources), "data.n_folds=3", "data.fold=1",
                                                   "data.image_size=64"])
    torch_table = torch_read_sources(torch_cfg.data)
    assert torch_table.ids == table.ids
    np.testing.assert_array_equal(torch_table.targets, table.targets)
    _, torch_valid = torch_split_folds(torch_table, torch_cfg.data)
    _, valid = split_folds(table, 1)
    assert valid.ids == torch_valid.ids  # both stages validate on the same images


def test_folder_batches_read_each_image_from_its_own_source(two_sources):
    cfg = img_config(two_sources, "data.fold=1")
    table = read_sources(cfg.data)
    _, valid = split_folds(table, 1)
    _, valid_ds = folder_datasets(cfg, 2)
    got = np.concatenate([x.numpy() for x, _ in valid_ds])
    expected = np.concatenate([load_images(folder, [image_id], "rgb", 32)
                               for image_id, folder in zip(valid.ids, valid.folders)])
    assert {f for f in valid.folders} == {str(two_sources[0][0]), str(two_sources[1][0])}  # both sources
    np.testing.assert_array_equal(got, expected)


def test_tfrecords_from_two_sources_hold_every_image_and_list_the_sources(two_sources, tmp_path):
    cfg = img_config(two_sources)
    manifest = make_tfrecords(cfg, str(tmp_path / "records"))
    assert sum(shard["count"] for shard in manifest["shards"]) == 15
    assert manifest["sources"] == [{"images": str(i), "labels": str(lab)} for i, lab in two_sources]
    train_ds, valid_ds = record_datasets(img_config(two_sources, f"data.tfrecords={tmp_path / 'records'}",
                                                    "data.fold=0"), 1)
    _, valid = split_folds(read_sources(cfg.data), 0)
    assert sum(len(t) for _, t in valid_ds) == len(valid.ids)


def test_a_tiny_model_trains_on_two_sources_through_the_script(two_sources, tmp_path):
    run_dir = tmp_path / "run"
    result = runpy.run_path(str(REPO / "train-image-level-model" / "train_img.py"))["main"]([
        "--config", str(REPO / "configs" / "img" / "tiny_cpu.yaml"), f"run_dir={run_dir}", sources_override(*two_sources),
        "data.image_size=32", "data.n_folds=3", "train.batch_per_replica=4", "train.epochs=1", "train.verbose=0"])
    assert result.finished and (run_dir / "best.keras").is_file()
    assert f"images from {two_sources[0][0]}, {two_sources[1][0]}: 10 train, 5 valid" in (run_dir / "log.txt").read_text()


def test_bad_sources_are_named(two_sources, tmp_path):
    (kag_images, kag_labels), (pub_images, _) = two_sources
    both = img_config(two_sources, f"data.images={kag_images}")
    with pytest.raises(ValueError, match="give data.sources or data.images/data.labels, not both"):
        read_sources(both.data)
    with pytest.raises(LabelFileError, match="more than one label table.*kag00"):
        read_sources(img_config([(kag_images, kag_labels), (pub_images, kag_labels)]).data)
    (pub_images / "pub03_blue.png").unlink()
    with pytest.raises(ImageReadError, match="pub03_blue.png: missing channel file"):
        folder_datasets(img_config(two_sources, "data.color_mode=rgb", "data.fold=-1"), 2)
