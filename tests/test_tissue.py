"""Tissue masks: black margins and white background out, tissue in, specks and pinholes cleaned."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_reader import write_pyramid  # tests/ is on sys.path (pytest's default import mode)

from helpkit.slide.reader import SlideReader
from helpkit.slide.tissue import saturation, tissue_from_rgb, tissue_level, tissue_mask

PINK, PURPLE, WHITE = (232, 160, 205), (140, 70, 160), (245, 244, 246)


@pytest.fixture
def thumbnail() -> np.ndarray:
    """200x300: black margin on the left (JPEG-noisy), white background, two tissue pieces."""
    rng = np.random.default_rng(0)
    rgb = np.empty((200, 300, 3), dtype=np.uint8)
    rgb[:] = WHITE
    rgb[:, :30] = (12, 0, 6)  # near-black with a high saturation: still not tissue
    rgb[40:160, 60:180] = PINK
    rgb[80:100, 100:120] = PURPLE
    rgb[50:52, 70:72] = WHITE  # a pinhole inside tissue: filled
    rgb[100:140, 130:170] = WHITE  # a large hole (fat): kept
    rgb[60:140, 220:280] = PINK
    rgb[10:12, 250:252] = PINK  # a speck on the glass: removed
    noise = rng.integers(-4, 5, size=rgb.shape)
    return np.clip(rgb.astype(int) + noise, 0, 255).astype(np.uint8)


def test_margin_and_background_excluded_tissue_kept(thumbnail: np.ndarray) -> None:
    mask = tissue_from_rgb(thumbnail, min_object_pixels=16, max_hole_pixels=16)
    assert not mask[:, :30].any(), "black margin"
    assert not mask[:30].any() and not mask[170:].any(), "white background"
    assert mask[45:155, 65:125].all(), "pink and purple tissue, pinhole filled"
    assert mask[65:135, 225:275].all(), "second piece"
    assert not mask[105:135, 135:165].any(), "large hole kept open"
    assert not mask[10:12, 250:252].any(), "speck removed"


def test_without_cleaning_the_speck_and_pinhole_remain(thumbnail: np.ndarray) -> None:
    mask = tissue_from_rgb(thumbnail, min_object_pixels=0, max_hole_pixels=0)
    assert mask[10:12, 250:252].all() and not mask[50:52, 70:72].any()


def test_blank_and_black_thumbnails_have_no_tissue() -> None:
    white = np.full((50, 50, 3), 250, np.uint8)
    assert not tissue_from_rgb(white).any()
    assert not tissue_from_rgb(np.zeros((50, 50, 3), np.uint8)).any()


def test_all_tissue_thumbnail_stays_tissue() -> None:
    rgb = np.empty((60, 60, 3), np.uint8)
    rgb[:] = PINK
    rgb[::3] = PURPLE  # two tissue colours: Otsu must not split them into tissue and not
    assert tissue_from_rgb(rgb).all()


def test_saturation() -> None:
    rgb = np.array([[[0, 0, 0], [200, 100, 50], [90, 90, 90]]], np.uint8)
    np.testing.assert_allclose(saturation(rgb)[0], [0.0, 0.75, 0.0])


def test_tissue_level_counts_rounded_downsamples_as_exact(tmp_path: Path) -> None:
    # 1030 px halves to 515, 257, 128, 64: the last level's downsample is 16.09, not 16.
    path = write_pyramid(tmp_path / "odd.tiff", np.full((1030, 1030, 3), 200, np.uint8), levels=5, tile=64)
    with SlideReader(path) as reader:  # level 0 is 0.5 um/px: 8 um/px is downsample 16
        assert reader.level_downsamples[4] == pytest.approx(1030 / 64)
        assert tissue_level(reader, 8.0) == 4 and tissue_level(reader, 7.5) == 3


def test_single_level_slide_gets_a_mask_at_the_asked_resolution(tmp_path: Path) -> None:
    rgb = np.full((1024, 1024, 3), 245, np.uint8)
    rgb[256:768, 256:768] = PINK
    path = write_pyramid(tmp_path / "flat.tiff", rgb, levels=1, tile=64)
    with SlideReader(path) as reader:
        mask = tissue_mask(reader, 8.0)  # 16 level-0 pixels of 0.5 um per mask pixel
    assert mask.downsample == 16 and mask.mask.shape == (64, 64)
    assert mask.mask[20:44, 20:44].all() and not mask.mask[:12].any()
