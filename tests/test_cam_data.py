"""Label sources, folds, augmentations, the resumable sampler and the validation metrics."""

import cv2
import numpy as np
import pytest

from hpacam.cam.config import AugmentConfig, DataConfig, DataSource
from hpacam.cam.data import CamDataset, ShardedSampler, augment, read_sources, sample_rng, split_folds
from hpacam.cam.metrics import classification_metrics, f1_scores
from hpacam.classes import CHANNELS, NUM_CLASSES
from hpacam.images import ImageReadError
from hpacam.labels import LabelFileError

NO_AUGMENT = AugmentConfig(hflip=False, vflip=False, rot90=False, crop_scale=(1.0, 1.0), brightness=0.0)


def write_images(folder, ids, size=24, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for image_id in ids:
        for channel in CHANNELS:
            cv2.imwrite(str(folder / f"{image_id}_{channel}.png"), rng.integers(0, 255, (size, size), dtype=np.uint8))


def write_source(root, name, labels: dict[str, str]):
    images = root / name / "images"
    write_images(images, labels)
    csv = root / name / "labels.csv"
    csv.write_text("ID,Label\n" + "".join(f"{k},{v}\n" for k, v in labels.items()))
    return DataSource(images=images, labels=csv)


def test_sources_combine_kaggle_and_public_tables(tmp_path):
    kaggle = write_source(tmp_path, "kaggle", {"a": "0|16", "b": "5"})
    public = tmp_path / "public"
    write_images(public / "images", ["c"])
    (public / "hpa.csv").write_text(",ID,Cellline,Label,Labels_list\n0,c,U-2 OS,2|3,\"[2, 3]\"\n")
    images = read_sources(DataConfig(sources=[kaggle, DataSource(public / "images", public / "hpa.csv")]))
    assert images.ids == ["a", "b", "c"]
    assert images.folders[2] == public / "images"
    assert images.targets.shape == (3, NUM_CLASSES)
    assert np.flatnonzero(images.targets[0]).tolist() == [0, 16]
    assert np.flatnonzero(images.targets[2]).tolist() == [2, 3]


def test_missing_images_are_reported_before_training(tmp_path):
    source = write_source(tmp_path, "set", {"a": "0", "b": "1"})
    (source.images / "b_green.png").unlink()
    for channel in CHANNELS:
        (source.images / f"a_{channel}.png").unlink(missing_ok=True)
    with pytest.raises(ImageReadError, match=r"5 channel file\(s\) of images listed in .*labels.csv are missing, "
                                             r"e.g. \['a_red', 'a_green', 'a_blue'\]"):
        read_sources(DataConfig(sources=[source]))
    with pytest.raises(ImageReadError, match="nowhere: image folder"):
        read_sources(DataConfig(sources=[DataSource(tmp_path / "nowhere", source.labels)]))


def test_bad_label_file_names_the_line(tmp_path):
    source = write_source(tmp_path, "set", {"a": "0"})
    source.labels.write_text("ID,Label\na,0\nb,42\n")
    with pytest.raises(LabelFileError, match="line 3"):
        read_sources(DataConfig(sources=[source]))


def test_folds_partition_the_images(tmp_path):
    labels = {f"img{i:02d}": str(i % 5) for i in range(20)}
    images = read_sources(DataConfig(sources=[write_source(tmp_path, "set", labels)]))
    train, valid = split_folds(images, DataConfig(n_folds=4, fold=1))
    assert len(train) == 15 and len(valid) == 5
    assert not set(train.ids) & set(valid.ids)
    again_train, _ = split_folds(images, DataConfig(n_folds=4, fold=1))
    assert again_train.ids == train.ids
    everything, none = split_folds(images, DataConfig(fold=-1))
    assert len(everything) == 20 and none is None


def test_augmentation_is_a_function_of_seed_epoch_and_index():
    image = np.random.default_rng(0).random((40, 40, 4), dtype=np.float32)
    cfg = AugmentConfig()
    first = augment(image, 32, cfg, sample_rng(0, 1, 7))
    assert first.shape == (32, 32, 4) and first.dtype == np.float32
    assert 0.0 <= first.min() and first.max() <= 1.0
    assert np.array_equal(first, augment(image, 32, cfg, sample_rng(0, 1, 7)))
    assert not np.array_equal(first, augment(image, 32, cfg, sample_rng(0, 2, 7)))


def test_flips_and_rotations_only_move_pixels():
    image = np.random.default_rng(1).random((16, 16, 4), dtype=np.float32)
    cfg = AugmentConfig(crop_scale=(1.0, 1.0), brightness=0.0)
    for index in range(8):
        out = augment(image, 16, cfg, sample_rng(0, 0, index))
        assert np.allclose(np.sort(out.ravel()), np.sort(image.ravel()))
    assert np.array_equal(augment(image, 16, NO_AUGMENT, sample_rng(0, 0, 0)), image)


def test_brightness_scales_each_channel_on_its_own():
    image = np.full((8, 8, 4), 0.5, dtype=np.float32)
    cfg = AugmentConfig(hflip=False, vflip=False, rot90=False, crop_scale=(1.0, 1.0), brightness=0.3)
    out = augment(image, 8, cfg, sample_rng(3, 0, 0))
    per_channel = out.reshape(-1, 4)
    assert np.allclose(per_channel, per_channel[0])  # uniform within a channel
    assert len(set(np.round(per_channel[0], 6))) == 4  # different gains per channel
    assert np.all(np.abs(per_channel[0] - 0.5) <= 0.15 + 1e-6)


def test_dataset_gives_chw_tensors_and_targets(tmp_path):
    images = read_sources(DataConfig(sources=[write_source(tmp_path, "set", {"a": "1", "b": "2|3"})]))
    dataset = CamDataset(images, image_size=16, mode="rgby", augment_cfg=AugmentConfig(), seed=0)
    tensor, target, index = dataset[1]
    assert tuple(tensor.shape) == (4, 16, 16) and index == 1
    assert np.flatnonzero(target.numpy()).tolist() == [2, 3]
    plain = CamDataset(images, image_size=24, mode="rgby")
    assert tuple(plain[0][0].shape) == (4, 24, 24)


def test_image_cache_gives_the_same_items_and_decodes_each_image_once(tmp_path, monkeypatch):
    import hpacam.cam.data as data

    images = read_sources(DataConfig(sources=[write_source(tmp_path, "set", {"a": "1", "b": "2|3"})]))
    plain = CamDataset(images, image_size=16, mode="rgby", augment_cfg=AugmentConfig(), seed=0)
    cached = CamDataset(images, image_size=16, mode="rgby", augment_cfg=AugmentConfig(), seed=0, cache=True)
    reads = []
    real_read = data.read_image
    monkeypatch.setattr(data, "read_image", lambda *a, **k: reads.append(a[1]) or real_read(*a, **k))
    for epoch in range(3):
        plain.set_epoch(epoch)
        cached.set_epoch(epoch)
        for index in range(len(images)):
            assert np.array_equal(plain[index][0].numpy(), cached[index][0].numpy())
            cached[index][0].mul_(0)  # a caller writing into its batch must not reach the cache
    assert reads.count("a") == 3 + 1 and reads.count("b") == 3 + 1  # plain every epoch, cached once


def test_sampler_shards_cover_the_epoch_and_differ_per_epoch():
    shards = [ShardedSampler(10, True, seed=3, rank=r, world_size=3) for r in range(3)]
    seen = [i for s in shards for i in s]
    assert len(seen) == 12 and set(seen) == set(range(10))  # padded to a multiple of 3
    first = list(shards[0])
    shards[0].set_epoch(1)
    assert list(shards[0]) != first


def test_sampler_limit_and_skip_resume_part_way_into_an_epoch():
    sampler = ShardedSampler(20, True, seed=0)
    sampler.set_epoch(2, limit=16)
    whole = list(sampler)
    assert len(whole) == len(sampler) == 16
    sampler.set_epoch(2, skip=6, limit=16)
    assert list(sampler) == whole[6:] and len(sampler) == 10


def test_validation_sampler_does_not_pad():
    shards = [ShardedSampler(5, False, 0, rank=r, world_size=2, pad=False) for r in range(2)]
    assert [list(s) for s in shards] == [[0, 2, 4], [1, 3]]


def test_metrics_on_a_known_case():
    targets = np.zeros((4, NUM_CLASSES), dtype=np.float32)
    targets[[0, 1], 0] = 1
    targets[[2], 3] = 1
    probs = np.zeros_like(targets)
    probs[:, 0] = [0.9, 0.6, 0.4, 0.1]  # ranks class 0 perfectly
    probs[:, 3] = [0.8, 0.1, 0.3, 0.2]  # class 3: positive ranked second of four
    metrics = classification_metrics(probs, targets, thresholds=(0.5,))
    assert metrics["auc_0"] == 1.0
    assert metrics["auc_3"] == pytest.approx(2 / 3)
    assert metrics["macro_auc"] == pytest.approx((1 + 2 / 3) / 2)
    assert "auc_5" not in metrics  # no positives: left out, not counted as 0
    # at 0.5: class 0 -> tp 2, fp 0, fn 0 (F1 1); class 3 -> tp 0, fp 1, fn 1 (F1 0)
    assert metrics["macro_f1@0.5"] == pytest.approx(0.5)
    assert metrics["micro_f1@0.5"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    assert f1_scores(probs, targets, 0.05)[1] < 1.0
