"""Inference on awkward and bad images, through the real CLI (inference/inference.py) in this process.

A tiny CAM model trained for one step on synthetic images scores a folder that mixes a good image
with a tiny one, a non-square one, an RGB file where a grayscale channel is expected, an image
with no cells, one over the pixel limit (a header that claims 9000x9000 over a few bytes of data,
so decoding it would fail or take gigabytes) and a sample ID with no files at all.
With `on_bad_image=skip` every ID gets a row, good ones scored normally; with `fail` the run stops
with an error naming the file and leaves no submission.csv. About 25 s on two cores.
"""

from __future__ import annotations

import importlib.util
import os
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from hpacam.classes import CHANNELS, NUM_CLASSES
from hpacam.masks import decode_mask
from hpacam.submission import parse_prediction_string, read_submission

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "configs" / "cam" / "tiny_cpu.yaml"
GOOD, TINY, WIDE, RGB, BLANK, BIG, ABSENT = "good", "tiny", "wide", "rgbfile", "blank", "big", "absent"
UNEVEN = "uneven"  # its yellow file is smaller than its other channels


@pytest.fixture(autouse=True)
def one_thread_and_clean_logging(restore_root_logging):
    """One torch thread (tiny models, busy machine); the log handlers each CLI run adds are dropped."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def png_claiming(path: Path, width: int, height: int) -> None:
    """A PNG whose header claims width x height over the pixel data of an 8x8 image."""
    ok, encoded = cv2.imencode(".png", np.zeros((8, 8), np.uint8))
    data = bytearray(encoded.tobytes())
    data[16:24] = struct.pack(">II", width, height)  # IHDR width and height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # the chunk's CRC over type + data
    path.write_bytes(bytes(data))


def copy_image(source: Path, source_id: str, folder: Path, image_id: str, crop=(slice(None), slice(None))) -> None:
    for channel in CHANNELS:
        array = cv2.imread(str(source / f"{source_id}_{channel}.png"), cv2.IMREAD_UNCHANGED)
        cv2.imwrite(str(folder / f"{image_id}_{channel}.png"), np.ascontiguousarray(array[crop]))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(inference config, image folder, sample rows by ID) shared by the tests."""
    from hpacam.cam.config import TrainCamConfig
    from hpacam.cam.train import train
    from hpacam.config import load_config
    from hpacam.synth import generate_dataset

    root = tmp_path_factory.mktemp("reliability")
    generate_dataset(root / "synth", 4, 128, seed=21, progress=False)
    synth = root / "synth"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(load_config(TrainCamConfig, RECIPE, [
            f"run_dir={root / 'cam'}", f"data.sources=[{{images: {synth / 'images'}, labels: {synth / 'labels.csv'}}}]",
            "data.image_size=32", "data.fold=-1", "model.kwargs={channels: [8, 16, 32, 64], stem_width: 8}",
            "train.batch_size=4", "train.epochs=1", "train.progress=false"]))
    finally:
        torch.set_num_threads(threads)
    config = root / "inference.yaml"
    config.write_text(f"cam_models:\n  - checkpoint: {root / 'cam' / 'last.pt'}\n"
                      "tta:\n  scales: [1.0]\n  flips: false\nsegmentation:\n  cache:\n    enabled: false\n")

    images, source = root / "images", synth / "images"
    images.mkdir()
    source_id = read_submission(synth / "sample_submission.csv")["ID"].iloc[0]
    copy_image(source, source_id, images, GOOD)
    copy_image(source, source_id, images, TINY, (slice(40, 56), slice(40, 56)))  # 16x16
    copy_image(source, source_id, images, WIDE, (slice(0, 80), slice(None)))  # 128 wide, 80 high
    copy_image(source, source_id, images, RGB)
    green = cv2.imread(str(images / f"{RGB}_green.png"), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(images / f"{RGB}_green.png"), np.stack([np.zeros_like(green), green, np.zeros_like(green)], -1))
    for channel in CHANNELS:
        cv2.imwrite(str(images / f"{BLANK}_{channel}.png"), np.zeros((64, 64), np.uint16))
        png_claiming(images / f"{BIG}_{channel}.png", 9000, 9000)  # 81 M pixels, over the default 67 M limit
    copy_image(source, source_id, images, UNEVEN)
    yellow = cv2.imread(str(images / f"{UNEVEN}_yellow.png"), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(images / f"{UNEVEN}_yellow.png"), np.ascontiguousarray(yellow[:64, :64]))
    sizes = {GOOD: (128, 128), TINY: (16, 16), WIDE: (128, 80), RGB: (128, 128), BLANK: (64, 64),
             BIG: (9000, 9000), ABSENT: (128, 128), UNEVEN: (128, 128)}
    return config, images, sizes


def write_sample(path: Path, sizes: dict, ids: list[str]) -> Path:
    pd.DataFrame([(i, *sizes[i], "") for i in ids], columns=["ID", "ImageWidth", "ImageHeight",
                                                             "PredictionString"]).to_csv(path, index=False)
    return path


def main_status(*argv: str) -> int:
    """inference/inference.py's main(argv) -> its exit status (parser.exit raises SystemExit)."""
    spec = importlib.util.spec_from_file_location("inference_cli", REPO / "inference" / "inference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    try:
        return module.main(list(argv))
    except SystemExit as exc:
        return int(exc.code)


def run_cli(config: Path, images: Path, sample: Path, out: Path, *overrides: str) -> int:
    """One inference run through the CLI -> its exit status."""
    return main_status("--config", str(config), "--images", str(images), "--sample", str(sample),
                       "--out", str(out), *overrides)


def assert_valid_cells(row: pd.Series) -> None:
    """Every cell has all 19 classes, its mask decodes at the image's own size, cells do not overlap."""
    items = parse_prediction_string(row["PredictionString"], row["ID"])
    masks = {item.mask for item in items}
    assert masks and len(items) == len(masks) * NUM_CLASSES
    union = sum(decode_mask(m, row["ImageHeight"], row["ImageWidth"]).astype(int) for m in masks)
    assert union.max() == 1


def test_skip_scores_every_good_image_and_leaves_bad_ones_empty_with_a_warning(setup, tmp_path):
    config, images, sizes = setup
    ids = [GOOD, BIG, TINY, ABSENT, WIDE, RGB, BLANK]
    sample = write_sample(tmp_path / "sample.csv", sizes, ids)
    assert run_cli(config, images, sample, tmp_path / "submission.csv") == 0

    sub = read_submission(tmp_path / "submission.csv")
    assert sub["ID"].tolist() == ids  # every sample ID once, in the sample's order
    rows = sub.set_index("ID", drop=False)
    for image_id in (GOOD, TINY, WIDE, RGB):  # odd sizes and an RGB file (converted) are scored normally
        assert_valid_cells(rows.loc[image_id])
    assert [rows.loc[i, "PredictionString"] for i in (BIG, ABSENT, BLANK)] == ["", "", ""]
    log = (tmp_path / "submission.log.txt").read_text()
    assert f"skipping {BIG}: {images / BIG}_red.png: 9000x9000 = 81000000 pixels exceeds the limit" in log
    assert f"skipping {ABSENT}: {images / ABSENT}_red.png: missing channel file" in log
    assert f"{BLANK}: no cells found; empty prediction string" in log
    assert f"{RGB}_green.png: 3-channel file where grayscale is expected" in log
    assert read_submission(tmp_path / "submission.csv").loc[0, "PredictionString"]  # the good image kept its cells


@pytest.mark.parametrize("bad, overrides, message", [
    (BIG, [], "big_red.png: 9000x9000 = 81000000 pixels exceeds the limit of 67108864"),
    (ABSENT, [], "absent_red.png: missing channel file"),
    (RGB, ["read.color_file=refuse"], "rgbfile_green.png: has 3 colour channels where a grayscale channel is expected"),
    (UNEVEN, [], "uneven_*: channels of different sizes (red 128x128, yellow 64x64, blue 128x128)"),  # in segmentation
])
def test_fail_stops_naming_the_file_and_writes_no_submission(setup, tmp_path, capsys, bad, overrides, message):
    config, images, sizes = setup
    sample = write_sample(tmp_path / "sample.csv", sizes, [GOOD, bad])  # the bad image comes after a good one
    status = run_cli(config, images, sample, tmp_path / "submission.csv", "on_bad_image=fail", *overrides)
    assert status == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "submission.csv").exists()
    assert not list(tmp_path.glob(".*.tmp"))


def test_refused_rgb_file_is_skipped_and_an_image_with_no_cells_is_no_failure(setup, tmp_path):
    config, images, sizes = setup
    sample = write_sample(tmp_path / "sample.csv", sizes, [RGB, BLANK])
    assert run_cli(config, images, sample, tmp_path / "skip.csv", "read.color_file=refuse") == 0
    assert read_submission(tmp_path / "skip.csv")["PredictionString"].tolist() == ["", ""]
    assert "skipping rgbfile:" in (tmp_path / "skip.log.txt").read_text()

    blank_only = write_sample(tmp_path / "blank.csv", sizes, [BLANK])  # no cells is an answer, not a bad image
    assert run_cli(config, images, blank_only, tmp_path / "fail.csv", "on_bad_image=fail") == 0
    assert read_submission(tmp_path / "fail.csv")["PredictionString"].tolist() == [""]


def test_the_configured_pixel_limit_is_checked_before_any_pixel_is_decoded(setup, tmp_path):
    """A 100x100 header over 8x8 data: a decoder would call it truncated; the limit must speak first."""
    config, _, _ = setup
    images = tmp_path / "images"
    images.mkdir()
    for channel in CHANNELS:
        png_claiming(images / f"over_{channel}.png", 100, 100)
    sample = write_sample(tmp_path / "sample.csv", {"over": (100, 100)}, ["over"])
    status = run_cli(config, images, sample, tmp_path / "submission.csv", "read.max_pixels=9999")
    assert status == 1  # its only image failed
    log = (tmp_path / "submission.log.txt").read_text()
    limit = "over_red.png: 100x100 = 10000 pixels exceeds the limit of 9999 (read.max_pixels in the config; data.read.max_pixels for CAM training)"
    assert limit in log
    assert "truncated" not in log and "3-channel" not in log


def test_with_keras_models_too_an_oversized_image_is_refused_before_any_decoder_sees_it(setup, tmp_path):
    """tf.data has no pixel limit: the image must be refused from its header before the Keras models read it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from hpacam.tf.config import ModelConfig
    from hpacam.tf.models import build_model

    config, images, sizes = setup
    model = tmp_path / "image_level.keras"
    build_model(ModelConfig(architecture="tiny", dropout=0.0), 32).save(model)  # untrained: only reading matters
    with_keras = tmp_path / "inference.yaml"
    with_keras.write_text(config.read_text() + f"image_models:\n  - model: {model}\n    color_mode: rgb\n")
    sample = write_sample(tmp_path / "sample.csv", sizes, [GOOD, BIG])
    assert run_cli(with_keras, images, sample, tmp_path / "submission.csv") == 0

    sub = read_submission(tmp_path / "submission.csv").set_index("ID", drop=False)
    assert_valid_cells(sub.loc[GOOD])
    assert sub.loc[BIG, "PredictionString"] == ""
    log = (tmp_path / "submission.log.txt").read_text()
    assert f"skipping {BIG}: {images / BIG}_red.png: 9000x9000 = 81000000 pixels exceeds the limit" in log
    assert "image-level models could not read" not in log


def test_intensity_extraction_reads_with_the_configured_options(setup, tmp_path):
    """The regressor's training stage honours read.color_file / read.max_pixels as inference does."""
    from hpacam.config import load_config
    from hpacam.regressor.extraction import ExtractConfig, extract
    from hpacam.images import ImageReadError

    config, images, _ = setup
    labels = tmp_path / "labels.csv"
    labels.write_text(f"ID,Label\n{RGB},0\n")
    base = [f"images={images}", f"labels={labels}", f"checkpoints=[{config.parent / 'cam' / 'last.pt'}]",
            f"out_dir={tmp_path / 'out'}", "tta.scales=[1.0]", "tta.flips=false",
            "segmentation.cache.enabled=false"]
    rows = extract(load_config(ExtractConfig, None, base))
    assert len(rows) > 0 and set(rows["image"]) == {RGB}
    with pytest.raises(ImageReadError, match="rgbfile_green.png: has 3 colour channels"):
        extract(load_config(ExtractConfig, None, [*base, "read.color_file=refuse"]))
    with pytest.raises(ImageReadError, match=r"exceeds the limit of 9999 \(read.max_pixels"):
        extract(load_config(ExtractConfig, None, [*base, "read.max_pixels=9999"]))


# ----------------------------------------------------------------------------- round 2 (issue 15)


def scored_ids(out: Path) -> set[str]:
    sub = read_submission(out)
    return set(sub.loc[sub["PredictionString"] != "", "ID"])


def test_an_unwritable_mask_cache_warns_once_and_every_image_is_still_scored(setup, tmp_path):
    """A cache folder under a plain file cannot be made (ENOTDIR, even for root): masks go unstored, images scored."""
    config, images, sizes = setup
    (tmp_path / "not_a_folder").write_text("")
    sample = write_sample(tmp_path / "sample.csv", sizes, [GOOD, WIDE])
    status = run_cli(config, images, sample, tmp_path / "submission.csv", "segmentation.cache.enabled=true",
                     f"segmentation.cache.dir={tmp_path / 'not_a_folder' / 'masks'}")
    assert status == 0
    assert scored_ids(tmp_path / "submission.csv") == {GOOD, WIDE}
    log = (tmp_path / "submission.log.txt").read_text()
    assert log.count("cannot be written") == 1 and "skipping" not in log


@pytest.mark.parametrize("where", ["under_a_file", "a_folder"])
def test_an_output_that_cannot_be_written_fails_before_any_work(setup, tmp_path, capsys, where):
    config, images, sizes = setup
    sample = write_sample(tmp_path / "sample.csv", sizes, [GOOD])
    (tmp_path / "file").write_text("")
    out = tmp_path / "file" / "submission.csv" if where == "under_a_file" else tmp_path / "folder.csv"
    if where == "a_folder":
        out.mkdir()
    assert run_cli(config, images, sample, out) == 1
    err = capsys.readouterr().err
    assert f"inference: error: {out}" in err and "inference:" in err.splitlines()[-1]
    assert "0/1" not in err  # refused before the first image
    assert not list(tmp_path.glob("*.log.txt"))


def small_keras_model(path: Path, channels: int, outputs: int) -> Path:
    import keras

    inputs = keras.Input((32, 32, channels))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    keras.Model(inputs, keras.layers.Dense(outputs, activation="sigmoid")(pooled)).save(path)
    return path


@pytest.mark.parametrize("channels, outputs, problem", [(4, 19, "takes input (None, 32, 32, 4)"),
                                                        (3, 10, "gives output (None, 10)")])
def test_a_keras_model_of_the_wrong_shape_is_fatal_and_named_not_an_unreadable_image(
        setup, tmp_path, capsys, channels, outputs, problem):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    config, images, sizes = setup
    model = small_keras_model(tmp_path / "wrong.keras", channels, outputs)
    with_keras = tmp_path / "inference.yaml"
    with_keras.write_text(config.read_text() + f"image_models:\n  - model: {model}\n    color_mode: rgb\n")
    sample = write_sample(tmp_path / "sample.csv", sizes, [GOOD, WIDE])
    assert run_cli(with_keras, images, sample, tmp_path / "submission.csv") == 1
    assert f"{model}: the model {problem}" in capsys.readouterr().err
    assert not (tmp_path / "submission.csv").exists()


@pytest.mark.parametrize("override, message", [
    ("blend.floor=nan", "blend: floor must be in [0, 1], got nan"),
    ("keras_batch_size=0", "keras_batch_size must be at least 1, got 0"),
    ("chunk_size=-1", "chunk_size must be at least 1, got -1"),
    ("chunk_size=0", "chunk_size must be at least 1, got 0"),
    ("tta.scales=[]", "tta: scales must be a non-empty list"),
    ("device=foo", "device='foo' is not a device"),
    ("read.max_pixels=0", "read: max_pixels must be at least 1"),
    ("blend.image_models_share=1.5", "blend: image_models_share must be in [0, 1], got 1.5"),
    ("segmentation.cache.dir=", "segmentation.cache.dir: empty path"),
])
def test_out_of_range_settings_are_refused_when_the_config_is_read(setup, tmp_path, capsys, override, message):
    config, images, sizes = setup
    sample = write_sample(tmp_path / "sample.csv", sizes, [GOOD])
    assert run_cli(config, images, sample, tmp_path / "submission.csv", override) == 2
    err = capsys.readouterr().err
    assert message in err and f"override {override!r}" in err
    assert not list(tmp_path.glob("submission*"))


def test_nan_from_a_model_stops_the_run_instead_of_emptying_the_predictions(setup, tmp_path, capsys):
    config, images, sizes = setup
    checkpoint = torch.load(config.parent / "cam" / "last.pt", weights_only=True)
    for name, tensor in checkpoint["model"].items():  # the classifier layer: NaN logits and NaN maps
        if tensor.is_floating_point() and tensor.ndim == 4 and tensor.shape[0] == NUM_CLASSES:
            tensor.fill_(float("nan"))
    torch.save(checkpoint, tmp_path / "nan.pt")
    sample = write_sample(tmp_path / "sample.csv", sizes, [GOOD, WIDE])
    status = run_cli(config, images, sample, tmp_path / "submission.csv", f"cam_models=[{{checkpoint: {tmp_path / 'nan.pt'}}}]")
    assert status == 1
    assert f"{GOOD}: the CAM models' image probabilities gave NaN or infinite values" in capsys.readouterr().err
    assert not (tmp_path / "submission.csv").exists()


@pytest.mark.parametrize("bad_id, problem", [("x" * 300, "longer than 200 bytes"),
                                             ("../secret/stolen", "holds a path separator")])
def test_an_unsafe_or_overlong_sample_id_is_one_bad_image_and_nothing_outside_the_folders_is_touched(
        setup, tmp_path, bad_id, problem):
    config, source, sizes = setup
    images, secret, pictures = tmp_path / "images", tmp_path / "secret", tmp_path / "pictures"
    images.mkdir(), secret.mkdir()
    copy_image(source, GOOD, images, GOOD)
    copy_image(source, GOOD, secret, "stolen")  # what ../secret/stolen would read
    sample = write_sample(tmp_path / "sample.csv", {**sizes, bad_id: (128, 128)}, [GOOD, bad_id])
    status = run_cli(config, images, sample, tmp_path / "submission.csv", "--pictures", str(pictures), "visualise=5")
    assert status == 0
    assert scored_ids(tmp_path / "submission.csv") == {GOOD}
    assert problem in (tmp_path / "submission.log.txt").read_text()
    assert sorted(p.name for p in secret.iterdir()) == sorted(f"stolen_{c}.png" for c in CHANNELS)  # nothing written
    assert [p.name for p in pictures.iterdir()] == [f"{GOOD}.png"]


def test_a_failed_rerun_removes_the_previous_outputs_and_logs_its_error(setup, tmp_path):
    config, images, sizes = setup
    out = tmp_path / "submission.csv"
    assert run_cli(config, images, write_sample(tmp_path / "good.csv", sizes, [GOOD]), out) == 0
    assert out.exists() and (tmp_path / "submission.image_probs.csv").exists()
    sample = write_sample(tmp_path / "bad.csv", sizes, [GOOD, ABSENT])
    assert run_cli(config, images, sample, out, "on_bad_image=fail") == 1
    assert not out.exists() and not list(tmp_path.glob("submission.image_*.csv"))
    assert "inference: error: " in (tmp_path / "submission.log.txt").read_text().splitlines()[-1]
    assert "absent_red.png: missing channel file" in (tmp_path / "submission.log.txt").read_text()


def test_a_second_run_into_outputs_that_another_run_holds_is_refused(setup, tmp_path, capsys):
    from hpacam.fileio import exclusive_lock

    config, images, sizes = setup
    out = tmp_path / "submission.csv"
    with exclusive_lock(tmp_path / ".submission.csv.lock", "the other run"):  # as a run in progress holds it
        assert run_cli(config, images, write_sample(tmp_path / "s.csv", sizes, [GOOD]), out) == 1
        assert "another run is writing these outputs now" in capsys.readouterr().err
        parts = [write_sample(tmp_path / "p.csv", sizes, [GOOD])]
        assert main_status("merge", "--sample", str(parts[0]), "--out", str(out), *map(str, parts)) == 1
    assert not out.exists()
    assert run_cli(config, images, write_sample(tmp_path / "s.csv", sizes, [GOOD]), out) == 0  # lock released


def test_merge_refuses_a_shard_with_a_malformed_prediction_string(setup, tmp_path, capsys):
    _, _, sizes = setup
    sample = write_sample(tmp_path / "sample.csv", sizes, [GOOD, WIDE])
    good = write_sample(tmp_path / "shard0.csv", sizes, [GOOD])
    bad = tmp_path / "shard1.csv"
    bad.write_text(f"ID,ImageWidth,ImageHeight,PredictionString\n{WIDE},128,80,0 0.5\n")
    status = main_status("merge", "--sample", str(sample), "--out", str(tmp_path / "merged.csv"), str(good), str(bad))
    assert status == 1
    assert f"{bad}: ID {WIDE} (line 2): 2 tokens, not a multiple of 3" in capsys.readouterr().err
    assert not (tmp_path / "merged.csv").exists()


def test_a_checkpoint_whose_weights_do_not_fit_its_architecture_is_one_line_naming_the_file(setup, tmp_path, capsys):
    config, images, sizes = setup
    checkpoint = torch.load(config.parent / "cam" / "last.pt", weights_only=True)
    checkpoint["model"].pop(next(iter(checkpoint["model"])))  # a missing key, as from another architecture
    torch.save(checkpoint, tmp_path / "partial.pt")
    sample = write_sample(tmp_path / "sample.csv", sizes, [GOOD])
    status = run_cli(config, images, sample, tmp_path / "submission.csv", f"cam_models=[{{checkpoint: {tmp_path / 'partial.pt'}}}]")
    assert status == 1
    err = capsys.readouterr().err
    assert f"inference: error: {tmp_path / 'partial.pt'}: its weights do not fit the architecture it names" in err
    assert "Missing key" in err and "Traceback" not in err


# ----------------------------------------------------------------------------- round 3 (issue 15)


def test_an_image_whose_channels_differ_in_size_is_one_bad_image_for_the_segmenter_too(setup, tmp_path):
    config, images, sizes = setup
    sample = write_sample(tmp_path / "sample.csv", sizes, [GOOD, UNEVEN])
    assert run_cli(config, images, sample, tmp_path / "submission.csv") == 0
    assert scored_ids(tmp_path / "submission.csv") == {GOOD}
    assert f"skipping {UNEVEN}: {images / UNEVEN}_*: channels of different sizes" in (
        tmp_path / "submission.log.txt").read_text()


@pytest.fixture
def hpa_backend_with_damaged_weights(tmp_path):
    """HPA's backend, real code, trusted weight files that are damaged: its models fail to load.

    hpacellseg is not installed here, so the package check of the constructor is passed by giving
    `label_cell` (never reached: the models fail to load first); everything that runs is real.
    """
    from hpacam.segmentation import register_backend
    from hpacam.segmentation.hpa import HpaBackend

    for name in ("nuclei.pth", "cell.pth"):
        (tmp_path / name).write_bytes(b"PK\x03\x04 damaged weights")
    register_backend("hpa-damaged-test", lambda cfg: HpaBackend(cfg.hpa, label_cell=lambda n, c: (n, c)))
    return ["segmentation.backend=hpa-damaged-test", f"segmentation.hpa.nuclei_model={tmp_path / 'nuclei.pth'}",
            f"segmentation.hpa.cell_model={tmp_path / 'cell.pth'}", "segmentation.hpa.trust_weights=true"]


def test_a_segmentation_backend_that_fails_is_fatal_at_the_first_image_not_a_skip(
        setup, tmp_path, capsys, hpa_backend_with_damaged_weights):
    config, images, sizes = setup
    sample = write_sample(tmp_path / "sample.csv", sizes, [GOOD, WIDE, TINY])
    assert run_cli(config, images, sample, tmp_path / "submission.csv", *hpa_backend_with_damaged_weights) == 1
    err = capsys.readouterr().err
    assert f"inference: error: {tmp_path / 'nuclei.pth'}: cannot load the hpa backend's nuclei model" in err
    assert "Traceback" not in err and len([line for line in err.splitlines() if "error" in line]) == 1
    log = (tmp_path / "submission.log.txt").read_text()
    assert "skipping" not in log and "Traceback" not in log
    assert not (tmp_path / "submission.csv").exists()


def test_a_backend_that_cannot_be_set_up_is_fatal_before_any_image(setup, tmp_path, capsys):
    config, images, sizes = setup
    sample = write_sample(tmp_path / "sample.csv", sizes, [ABSENT, GOOD])  # a bad image first: not reached
    status = run_cli(config, images, sample, tmp_path / "submission.csv", "segmentation.backend=hpa",
                     f"segmentation.hpa.nuclei_model={tmp_path / 'none.pth'}", f"segmentation.hpa.cell_model={tmp_path / 'no.pth'}")
    assert status == 1
    assert f"weight file(s) not found: segmentation.hpa.nuclei_model={tmp_path / 'none.pth'}" in capsys.readouterr().err
    assert "skipping" not in (tmp_path / "submission.log.txt").read_text()


def test_a_run_where_every_image_failed_exits_non_zero_with_a_message(setup, tmp_path, capsys):
    """An empty cells_dir leaves every image without cells to score: the run fails, it does not pass empty."""
    config, images, sizes = setup
    (tmp_path / "cells").mkdir()
    sample = write_sample(tmp_path / "sample.csv", sizes, [GOOD, WIDE])
    assert run_cli(config, images, sample, tmp_path / "submission.csv", f"cells_dir={tmp_path / 'cells'}") == 1
    err = capsys.readouterr().err
    assert "inference: error: every image failed (2 of 2, none scored); the first, good: " in err
    assert f"{tmp_path / 'cells' / 'good.png'}: no cell label image" in err
    assert not (tmp_path / "submission.csv").exists()

    assert run_cli(config, images, sample, tmp_path / "submission.csv", f"cells_dir={tmp_path / 'none'}") == 1
    assert f"cells_dir={tmp_path / 'none'}: not a folder" in capsys.readouterr().err  # found before any image


def extract_status(*argv: str) -> int:
    """train-gradboost-regressor/extract_intensities.py's main(argv) -> its exit status."""
    import runpy

    try:
        return runpy.run_path(str(REPO / "train-gradboost-regressor" / "extract_intensities.py"))["main"](list(argv))
    except SystemExit as exc:
        return int(exc.code)


@pytest.mark.parametrize("fault", ["uneven_image", "hpa_without_weights", "hpa_damaged_weights"])
def test_intensity_extraction_stops_on_a_segmentation_fault_with_one_line_naming_the_file(
        setup, tmp_path, capsys, fault, hpa_backend_with_damaged_weights):
    """The stage has no skip policy (its table trains the regressor): every bad image or backend fault is fatal."""
    config, images, _ = setup
    labels = tmp_path / "labels.csv"
    labels.write_text(f"ID,Label\n{GOOD},0\n{UNEVEN},1\n")
    overrides = {"uneven_image": [],
                 "hpa_without_weights": ["segmentation.backend=hpa", f"segmentation.hpa.nuclei_model={tmp_path / 'x.pth'}",
                                         f"segmentation.hpa.cell_model={tmp_path / 'y.pth'}"],
                 "hpa_damaged_weights": hpa_backend_with_damaged_weights}[fault]
    status = extract_status(f"images={images}", f"labels={labels}", f"checkpoints=[{config.parent / 'cam' / 'last.pt'}]",
                            f"out_dir={tmp_path / 'out'}", "tta.scales=[1.0]", "tta.flips=false", "select=all",
                            "segmentation.cache.enabled=false", *overrides)
    assert status == 1
    err = capsys.readouterr().err
    expected = {"uneven_image": f"{images / UNEVEN}_*: channels of different sizes (red 128x128, yellow 64x64",
                "hpa_without_weights": f"weight file(s) not found: segmentation.hpa.nuclei_model={tmp_path / 'x.pth'}",
                "hpa_damaged_weights": f"{tmp_path / 'nuclei.pth'}: cannot load the hpa backend's nuclei model"}[fault]
    assert f"extract_intensities: error: " in err and expected in err, err
    assert "Traceback" not in err and len([line for line in err.splitlines() if "error" in line]) == 1
    assert not (tmp_path / "out" / "intensities.csv").exists()


def test_with_a_keras_model_tiff_images_are_scored_as_the_torch_path_reads_them(setup, tmp_path):
    """The image-level models read images with the CAM models' reader: TIFF too, the same pixels."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from hpacam.images import read_image

    config, source, sizes = setup
    images = tmp_path / "images"
    images.mkdir()
    for image_id in (GOOD, WIDE):
        copy_image(source, image_id, images, image_id)
        for channel in CHANNELS:  # the same pixels as TIFF files (a format tf.data cannot decode)
            png = images / f"{image_id}_{channel}.png"
            assert cv2.imwrite(str(png.with_suffix(".tif")), cv2.imread(str(png), cv2.IMREAD_UNCHANGED))
            png.unlink()
    model = small_keras_model(tmp_path / "image_level.keras", 3, NUM_CLASSES)
    with_keras = tmp_path / "inference.yaml"
    with_keras.write_text(config.read_text() + f"image_models:\n  - model: {model}\n    color_mode: rgb\n")
    sample = write_sample(tmp_path / "sample.csv", sizes, [GOOD, WIDE])
    assert run_cli(with_keras, images, sample, tmp_path / "submission.csv") == 0

    assert scored_ids(tmp_path / "submission.csv") == {GOOD, WIDE}
    assert "skipping" not in (tmp_path / "submission.log.txt").read_text()
    sources = pd.read_csv(tmp_path / "submission.image_sources.csv")
    keras_rows = sources[sources["source"].str.startswith("image_model:")].set_index("ID")
    import keras

    expected = keras.models.load_model(model).predict(
        np.stack([read_image(images, i, "rgb", 32) for i in (GOOD, WIDE)]), verbose=0)
    np.testing.assert_allclose(keras_rows.loc[[GOOD, WIDE], [str(c) for c in range(NUM_CLASSES)]], expected, atol=1e-5)
