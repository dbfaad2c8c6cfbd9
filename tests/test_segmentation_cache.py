"""The mask cache: hits, misses, invalidation by content, setting and code version, corrupt entries."""

import logging

import cv2
import numpy as np
import pytest

from hpacam.segmentation import MaskCache, SegmentationConfig, Segmenter, segment_image
from hpacam.segmentation import cache as cache_module
from hpacam.segmentation.classic import ClassicBackend
from hpacam.segmentation.settings import BorderSettings, ClassicSettings
from test_segmentation_helpers import CountingBackend, draw_cells

CELLS = [(100, 95, 70, 24), (100, 225, 70, 24)]


def write_image(folder, image_id, channels):
    for name, plane in channels.items():
        assert cv2.imwrite(str(folder / f"{image_id}_{name}.png"), plane)


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    channels, _ = draw_cells((200, 320), CELLS)
    write_image(folder, "a", channels)
    return folder


def make_segmenter(root, settings=ClassicSettings(), border=BorderSettings()):
    backend = CountingBackend(ClassicBackend(settings))
    cfg = SegmentationConfig(classic=settings, border=border)
    return Segmenter(cfg, backend=backend, cache=MaskCache(root)), backend


def same(first, second):
    return (np.array_equal(first.cells, second.cells) and np.array_equal(first.nuclei, second.nuclei)
            and all(np.array_equal(a, b) for a, b in zip(first.border.as_arrays().values(),
                                                         second.border.as_arrays().values())))


def test_second_request_is_a_hit_in_this_and_a_new_run(images, tmp_path):
    segmenter, backend = make_segmenter(tmp_path / "masks")
    first = segmenter.segment_file(images, "a")
    second = segmenter.segment_file(images, "a")
    assert backend.calls == 1 and same(first, second)
    rerun, rerun_backend = make_segmenter(tmp_path / "masks")
    third = rerun.segment_file(images, "a")
    assert rerun_backend.calls == 0 and same(first, third)
    assert third.cells.dtype == np.int32 and third.n_cells == 2


def test_entry_layout_settings_folder_and_no_temp_files(images, tmp_path):
    segmenter, _ = make_segmenter(tmp_path / "masks")
    segmenter.segment_file(images, "a")
    key = segmenter.file_key(images, "a")
    path = MaskCache(tmp_path / "masks").path(key)
    assert path.is_file() and path.parent.parent.name.startswith("classic-")
    assert (path.parent.parent / "settings.json").is_file()
    leftovers = [p for p in (tmp_path / "masks").rglob("*") if p.name.endswith(".tmp")]
    assert not leftovers


def test_changed_image_is_a_miss_and_gives_the_new_result(images, tmp_path):
    segmenter, backend = make_segmenter(tmp_path / "masks")
    before = segmenter.segment_file(images, "a")
    channels, _ = draw_cells((200, 320), CELLS[:1])  # the second cell is gone
    write_image(images, "a", channels)
    after = segmenter.segment_file(images, "a")
    assert backend.calls == 2 and before.n_cells == 2 and after.n_cells == 1


def test_unused_channel_does_not_invalidate(images, tmp_path):
    segmenter, backend = make_segmenter(tmp_path / "masks")
    segmenter.segment_file(images, "a")
    green = cv2.imread(str(images / "a_green.png"), cv2.IMREAD_UNCHANGED)
    assert cv2.imwrite(str(images / "a_green.png"), green // 2)
    segmenter.segment_file(images, "a")
    assert backend.calls == 1  # the classic backend reads red, yellow and blue only


@pytest.mark.parametrize("change", [
    {"settings": ClassicSettings(cell_cut=0.3)},
    {"settings": ClassicSettings(work_size=256)},
    {"border": BorderSettings(min_contact_ratio=0.1)},
])
def test_changed_setting_is_a_miss(images, tmp_path, change):
    segmenter, _ = make_segmenter(tmp_path / "masks")
    segmenter.segment_file(images, "a")
    changed, backend = make_segmenter(tmp_path / "masks", **change)
    assert changed.settings_key != segmenter.settings_key
    changed.segment_file(images, "a")
    assert backend.calls == 1


def test_new_code_version_is_a_miss(images, tmp_path, monkeypatch):
    segmenter, _ = make_segmenter(tmp_path / "masks")
    segmenter.segment_file(images, "a")
    monkeypatch.setattr(cache_module, "CODE_VERSION", "seg-test-next")
    newer, backend = make_segmenter(tmp_path / "masks")
    newer.segment_file(images, "a")
    assert backend.calls == 1


def corrupt_garbage(path):
    path.write_bytes(b"not a zip file at all")


def corrupt_truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def corrupt_flip_bytes(path):
    """Flip 16 bytes in the middle of the stored cells array (not in a zip header field that
    zipfile never reads, such as a local header's date or CRC copy: the entry would be intact)."""
    import zipfile

    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("cells.npy")
    data = bytearray(path.read_bytes())
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    middle = start + info.compress_size // 2
    data[middle:middle + 16] = bytes(b ^ 0xFF for b in data[middle:middle + 16])
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("corrupt", [corrupt_garbage, corrupt_truncate, corrupt_flip_bytes])
def test_corrupt_entry_is_recomputed_not_trusted(images, tmp_path, corrupt, caplog):
    segmenter, backend = make_segmenter(tmp_path / "masks")
    good = segmenter.segment_file(images, "a")
    path = segmenter.cache.path(segmenter.file_key(images, "a"))
    corrupt(path)
    with caplog.at_level(logging.WARNING):
        again = segmenter.segment_file(images, "a")
    assert backend.calls == 2 and same(good, again)
    assert "corrupt mask cache entry" in caplog.text
    segmenter.segment_file(images, "a")  # the entry was rewritten
    assert backend.calls == 2


def test_entry_of_another_image_is_not_trusted(images, tmp_path):
    segmenter, backend = make_segmenter(tmp_path / "masks")
    channels, _ = draw_cells((200, 320), CELLS[:1])
    write_image(images, "b", channels)
    segmenter.segment_file(images, "a")
    segmenter.segment_file(images, "b")
    path_a = segmenter.cache.path(segmenter.file_key(images, "a"))
    path_b = segmenter.cache.path(segmenter.file_key(images, "b"))
    path_a.write_bytes(path_b.read_bytes())  # a valid entry, but keyed for b
    assert segmenter.segment_file(images, "a").n_cells == 2
    assert backend.calls == 3


def test_arrays_in_memory_are_cached_by_content(tmp_path):
    segmenter, backend = make_segmenter(tmp_path / "masks")
    channels, _ = draw_cells((200, 320), CELLS)
    first = segmenter.segment_arrays(channels)
    assert same(first, segmenter.segment_arrays({k: v.copy() for k, v in channels.items()}))
    assert backend.calls == 1
    changed = {**channels, "blue": channels["blue"].copy()}
    changed["blue"][0, 0] += 1
    segmenter.segment_arrays(changed)
    assert backend.calls == 2


def test_disabled_cache_writes_nothing(images, tmp_path):
    cfg = SegmentationConfig()
    cfg.cache.enabled = False
    cfg.cache.dir = tmp_path / "masks"
    backend = CountingBackend(ClassicBackend())
    segmenter = Segmenter(cfg, backend=backend)
    segmenter.segment_file(images, "a")
    segmenter.segment_file(images, "a")
    assert backend.calls == 2 and not (tmp_path / "masks").exists()


def test_segment_image_uses_the_configured_cache_folder(images, tmp_path):
    cfg = SegmentationConfig()
    cfg.cache.dir = tmp_path / "masks"
    result = segment_image(images, "a", cfg)
    assert result.n_cells == 2 and list((tmp_path / "masks").rglob("*.npz"))


def test_missing_channel_file_names_the_file(images, tmp_path):
    (images / "a_yellow.png").unlink()
    segmenter, _ = make_segmenter(tmp_path / "masks")
    with pytest.raises(Exception, match="a_yellow"):
        segmenter.segment_file(images, "a")
