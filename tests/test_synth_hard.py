"""The generator's hard-case options make what they claim, and leave the default images unchanged."""

import hashlib

import numpy as np
import pytest

from hpacam.synth import render_image
from hpacam.synth.hard import CASES, HardCases, hard_case

SIZE = 384
# sha256 of render_image(3, 256)'s channels, cells and nuclei, made before the options existed
DEFAULT_IMAGE_SHA256 = "7ef9cd3fec2fb2682245df71829692af365ba7d80ca62d6c34db8ab768c11aec"


def image_digest(image) -> str:
    digest = hashlib.sha256()
    for name in sorted(image.channels):
        digest.update(image.channels[name].tobytes())
    digest.update(image.cells.tobytes())
    digest.update(image.nuclei.tobytes())
    return digest.hexdigest()


def nucleus_means(image) -> np.ndarray:
    """Mean blue above the image's background, per nucleus."""
    blue = image.channels["blue"].astype(np.float64)
    blue -= np.percentile(blue[image.cells == 0], 50) if (image.cells == 0).any() else blue.min()
    ids = np.unique(image.nuclei)[1:]
    sums = np.bincount(image.nuclei.ravel(), weights=blue.ravel())
    return sums[ids] / np.bincount(image.nuclei.ravel())[ids]


def touching_share(nuclei: np.ndarray) -> float:
    """Share of nuclei that share an edge with another nucleus."""
    touching = set()
    for a, b in ((nuclei[:, 1:], nuclei[:, :-1]), (nuclei[1:], nuclei[:-1])):
        pairs = (a > 0) & (b > 0) & (a != b)
        touching |= set(a[pairs].tolist()) | set(b[pairs].tolist())
    return len(touching) / max(len(np.unique(nuclei)) - 1, 1)


def test_default_images_are_unchanged_by_the_options():
    assert image_digest(render_image(3, 256)) == DEFAULT_IMAGE_SHA256
    assert image_digest(render_image(3, 256, hard=HardCases())) == DEFAULT_IMAGE_SHA256


def test_brightness_spread_spreads_nuclei_tenfold():
    plain = nucleus_means(render_image(5, SIZE))
    spread = nucleus_means(render_image(5, SIZE, hard=hard_case("spread")))
    assert plain.max() / plain.min() < 4
    assert spread.max() / spread.min() >= 7


def test_clumps_touch():
    assert touching_share(render_image(6, SIZE).nuclei) < 0.5
    clumped = render_image(6, SIZE, hard=hard_case("clumps"))
    assert clumped.n_cells >= 6 and touching_share(clumped.nuclei) >= 0.8


def test_focus_blur_spreads_blue_outside_the_nuclei():
    def outside_share(image):
        blue = image.channels["blue"].astype(np.float64) - np.percentile(image.channels["blue"], 5)
        return np.clip(blue, 0, None)[image.nuclei == 0].sum() / np.clip(blue, 0, None).sum()

    assert outside_share(render_image(7, SIZE, hard=hard_case("blur"))) > outside_share(render_image(7, SIZE)) + 0.05


def test_texture_roughens_the_chromatin():
    def roughness(image):
        blue = image.channels["blue"].astype(np.float64)
        ids = np.unique(image.nuclei)[1:]
        return np.median([blue[image.nuclei == i].std() / blue[image.nuclei == i].mean() for i in ids])

    assert roughness(render_image(8, SIZE, hard=hard_case("texture"))) > 1.5 * roughness(render_image(8, SIZE))


def test_dense_and_sparse_fields_hold_the_asked_cell_counts():
    dense = render_image(9, 512, hard=hard_case("dense"))
    assert dense.n_cells >= 60 and len(np.unique(dense.nuclei)) - 1 == dense.n_cells
    assert render_image(9, SIZE, hard=hard_case("sparse")).n_cells == 3


def test_bad_options_are_named():
    with pytest.raises(ValueError, match="brightness_spread"):
        HardCases(brightness_spread=0.5)
    with pytest.raises(ValueError, match="focus_blur"):
        HardCases(focus_blur=2.0)
    with pytest.raises(ValueError, match="unknown hard case 'nope'.*spread"):
        hard_case("nope")
    with pytest.raises(TypeError, match="HardCases"):
        render_image(0, 256, hard="spread")
    assert set(CASES) >= {"default", "spread", "clumps", "texture", "blur", "dense", "sparse"}
