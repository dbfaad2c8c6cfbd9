"""Reading the HPA layout: bit depths, colour modes, resizing and clear errors."""

import logging

import cv2
import numpy as np
import pytest

from hpacam.images import (ImageReadError, ReadOptions, channel_path, image_shape, list_image_ids,
                           read_channel_file, read_image, resize_image)

CHANNELS = ("red", "green", "blue", "yellow")


def write_image(folder, image_id, planes, ext="png"):
    for name, plane in zip(CHANNELS, planes):
        assert cv2.imwrite(str(folder / f"{image_id}_{name}.{ext}"), plane)


def ramp(h, w, dtype, top):
    return (np.linspace(0, top, h * w).reshape(h, w)).astype(dtype)


def test_rgby_order_and_16_bit_scaling(tmp_path):
    planes = [np.full((6, 8), v, np.uint16) for v in (1000, 20000, 40000, 65535)]
    write_image(tmp_path, "a", planes)
    img = read_image(tmp_path, "a", "rgby")
    assert img.shape == (6, 8, 4) and img.dtype == np.float32
    np.testing.assert_allclose(img[0, 0], np.array([1000, 20000, 40000, 65535]) / 65535, rtol=1e-6)


def test_8_bit_values_in_16_bit_files_scale_by_255(tmp_path):
    planes = [np.full((4, 4), v, np.uint16) for v in (10, 100, 200, 255)]
    write_image(tmp_path, "b", planes)
    img = read_image(tmp_path, "b")
    np.testing.assert_allclose(img[0, 0], np.array([10, 100, 200, 255]) / 255, rtol=1e-6)


def test_real_16_bit_image_with_a_dim_channel_is_not_brightened(tmp_path):
    planes = [np.full((4, 4), v, np.uint16) for v in (30000, 200, 30000, 30000)]
    write_image(tmp_path, "c", planes)
    assert read_image(tmp_path, "c")[0, 0, 1] == pytest.approx(200 / 65535)


def test_an_8_bit_file_beside_16_bit_ones_is_divided_by_255(tmp_path):
    """Per file: the 8-bit red file keeps its brightness; the 16-bit files share their own divisor."""
    planes = [np.full((4, 4), 200, np.uint8)] + [np.full((4, 4), v, np.uint16) for v in (30000, 200, 40000)]
    write_image(tmp_path, "m", planes)
    np.testing.assert_allclose(read_image(tmp_path, "m")[0, 0], [200 / 255, 30000 / 65535, 200 / 65535, 40000 / 65535],
                               rtol=1e-6)
    planes = [np.full((4, 4), 200, np.uint8)] + [np.full((4, 4), v, np.uint16) for v in (10, 100, 255)]
    write_image(tmp_path, "n", planes)  # 8-bit values in the 16-bit files: all by 255
    np.testing.assert_allclose(read_image(tmp_path, "n")[0, 0], np.array([200, 10, 100, 255]) / 255, rtol=1e-6)


def test_uint8_and_jpg(tmp_path):
    planes = [np.full((5, 7), v, np.uint8) for v in (0, 64, 128, 255)]
    write_image(tmp_path, "d", planes, ext="jpg")
    img = read_image(tmp_path, "d")
    np.testing.assert_allclose(img[2, 3], np.array([0, 64, 128, 255]) / 255, atol=2 / 255)


@pytest.mark.parametrize("mode, expected", [
    ("rgb", [1, 2, 3]), ("ggg", [2, 2, 2]), ("g", [2]), ("rgby", [1, 2, 3, 4]),
])
def test_colour_modes(tmp_path, mode, expected):
    write_image(tmp_path, "e", [np.full((4, 4), v, np.uint8) for v in (1, 2, 3, 4)])
    img = read_image(tmp_path, "e", mode)
    np.testing.assert_allclose(img[0, 0] * 255, expected, atol=1e-4)


def test_resize_keeps_channels_and_non_square_shape(tmp_path):
    write_image(tmp_path, "f", [ramp(60, 90, np.uint16, 60000) for _ in range(4)])
    assert read_image(tmp_path, "f", size=32).shape == (32, 32, 4)
    assert read_image(tmp_path, "f", "g", size=(20, 30)).shape == (20, 30, 1)
    assert image_shape(tmp_path, "f") == (60, 90)
    assert resize_image(np.zeros((8, 8), np.float32), (4, 6)).shape == (4, 6)


def test_tif_is_found(tmp_path):
    write_image(tmp_path, "g", [np.full((4, 4), 7, np.uint16) for _ in range(4)], ext="tif")
    assert channel_path(tmp_path, "g", "yellow").suffix == ".tif"
    assert read_image(tmp_path, "g").shape == (4, 4, 4)


def test_missing_channel_names_the_file(tmp_path):
    write_image(tmp_path, "h", [np.zeros((4, 4), np.uint8)] * 4)
    (tmp_path / "h_yellow.png").unlink()
    with pytest.raises(ImageReadError, match=r"h_yellow.*missing channel"):
        read_image(tmp_path, "h")
    assert read_image(tmp_path, "h", "rgb").shape == (4, 4, 3)


def test_truncated_and_zero_byte_files(tmp_path):
    write_image(tmp_path, "i", [ramp(64, 64, np.uint16, 60000)] * 4)
    data = (tmp_path / "i_green.png").read_bytes()
    (tmp_path / "i_green.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageReadError, match=r"i_green\.png: unreadable or truncated"):
        read_image(tmp_path, "i")
    (tmp_path / "i_green.png").write_bytes(b"")
    with pytest.raises(ImageReadError, match=r"i_green\.png: zero-byte"):
        read_image(tmp_path, "i")
    (tmp_path / "i_green.png").write_bytes(b"not an image at all" * 10)
    with pytest.raises(ImageReadError, match=r"i_green\.png: unreadable image header"):
        read_image(tmp_path, "i")


def test_channels_of_different_sizes(tmp_path):
    planes = [np.zeros((4, 4), np.uint8)] * 3 + [np.zeros((4, 5), np.uint8)]
    write_image(tmp_path, "j", planes)
    with pytest.raises(ImageReadError, match=r"different sizes.*yellow 4x5"):
        read_image(tmp_path, "j")


def test_rgb_file_for_a_channel_is_converted_or_refused(tmp_path, caplog):
    write_image(tmp_path, "k", [np.zeros((4, 4), np.uint8)] * 4)
    colour = np.zeros((4, 4, 3), np.uint8)
    colour[..., 1] = 90  # signal in one colour plane, as public-HPA JPEGs have it
    cv2.imwrite(str(tmp_path / "k_green.png"), colour)
    with caplog.at_level(logging.WARNING):
        assert read_image(tmp_path, "k", "g")[0, 0, 0] == pytest.approx(90 / 255)
    assert "k_green.png" in caplog.text
    with pytest.raises(ImageReadError, match="colour channels"):
        read_image(tmp_path, "k", "g", options=ReadOptions(color_file="refuse"))


def test_pixel_limit_checked_before_decoding(tmp_path):
    write_image(tmp_path, "l", [np.zeros((40, 50), np.uint8)] * 4)
    with pytest.raises(ImageReadError, match=r"l_red\.png: 50x40 = 2000 pixels exceeds"):
        read_image(tmp_path, "l", options=ReadOptions(max_pixels=1999))


def test_read_channel_file_missing(tmp_path):
    with pytest.raises(ImageReadError, match="file not found"):
        read_channel_file(tmp_path / "x_red.png")


def test_list_image_ids(tmp_path):
    write_image(tmp_path, "id-1", [np.zeros((2, 2), np.uint8)] * 4)
    write_image(tmp_path, "id_2", [np.zeros((2, 2), np.uint8)] * 4)
    (tmp_path / "notes.txt").write_text("x")
    assert list_image_ids(tmp_path) == ["id-1", "id_2"]


@pytest.mark.parametrize("kind, message", [("folder", "is a folder, not an image file"),
                                           ("loop", "is a symlink that loops or points nowhere, not an image file"),
                                           ("dangling", "is a symlink that loops or points nowhere, not an image file")])
def test_a_channel_that_is_a_folder_or_a_broken_symlink_is_named_as_such_not_as_missing(tmp_path, kind, message):
    write_image(tmp_path, "a", [np.zeros((4, 4), np.uint8)] * 4)
    path = tmp_path / "a_blue.png"
    path.unlink()
    if kind == "folder":
        path.mkdir()
    elif kind == "loop":
        path.symlink_to(path)
    else:
        path.symlink_to(tmp_path / "nowhere.png")
    with pytest.raises(ImageReadError) as caught:
        read_image(tmp_path, "a", "rgby")
    assert str(caught.value) == f"{path}: {message}" and "missing" not in str(caught.value)
