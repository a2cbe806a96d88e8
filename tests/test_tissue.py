"""Tissue masks: black margins, white background and pen ink out, tissue in, specks and pinholes
cleaned; the glass white estimate and the fallbacks taken when a criterion's mask is implausible."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_reader import write_pyramid  # tests/ is on sys.path (pytest's default import mode)

from helpkit.slide.reader import SlideReader
from helpkit.slide.tissue import (
    background_white,
    find_tissue,
    saturation,
    tissue_from_rgb,
    tissue_level,
    tissue_mask,
)

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
    mask, method = find_tissue(rgb)
    assert mask.all() and method == "od-floor"  # all tissue is implausible: flagged, kept


def test_blank_thumbnail_is_flagged_as_a_fallback() -> None:
    mask, method = find_tissue(np.full((50, 50, 3), 250, np.uint8))
    assert not mask.any() and method == "od-floor"


def _slide(white: tuple[int, int, int], tissue: tuple[int, int, int], seed: int = 0) -> np.ndarray:
    """120x120: a black margin on top, noisy glass, a tissue square with a pale rim."""
    rng = np.random.default_rng(seed)
    rgb = np.empty((120, 120, 3), np.float64)
    rgb[:] = white
    rgb[30:90, 30:90] = (np.array(white) + tissue) / 2  # pale rim
    rgb[35:85, 35:85] = tissue
    rgb = rgb + rng.normal(0, 1.5, rgb.shape)
    rgb[:10] = 5
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


@pytest.mark.parametrize(
    ("white", "tissue"),
    [
        ((242, 242, 242), (200, 150, 185)),  # ordinary H&E
        ((205, 205, 205), (188, 172, 182)),  # dim glass, faded stain
        ((252, 252, 252), (235, 228, 233)),  # bright glass, very faint stain
        ((242, 234, 208), (196, 150, 162)),  # yellow white balance: glass is coloured
        ((245, 245, 245), (205, 205, 210)),  # almost grey tissue (saturation alone misses it)
    ],
)
def test_optical_density_finds_faint_dim_and_grey_tissue(white: tuple, tissue: tuple) -> None:
    mask, method = find_tissue(_slide(white, tissue), min_object_pixels=16, max_hole_pixels=16)
    assert method == "od"
    assert mask[30:90, 30:90].all(), "tissue and its pale rim"
    assert mask.sum() == 60 * 60, "nothing else: no glass, no margin"


def test_background_white_is_the_glass_per_channel() -> None:
    yellow = _slide((242, 234, 208), (196, 150, 162))
    np.testing.assert_allclose(background_white(yellow), (242, 234, 208), atol=4)
    np.testing.assert_allclose(background_white(_slide((205, 205, 205), PINK)), 205, atol=4)
    mostly_tissue = _slide((240, 240, 240), PINK)
    mostly_tissue[10:118, 2:118] = PINK  # glass left on 1-2% of the scanned area
    np.testing.assert_allclose(background_white(mostly_tissue), 240, atol=4)


def test_background_white_is_none_without_glass() -> None:
    all_tissue = np.empty((40, 40, 3), np.uint8)
    all_tissue[:] = PINK
    assert background_white(all_tissue) is None, "too coloured for glass"
    assert background_white(np.full((40, 40, 3), 90, np.uint8)) is None, "too dark for glass"
    assert background_white(np.zeros((40, 40, 3), np.uint8)) is None, "all margin"


def test_uneven_illumination_falls_back_to_saturation() -> None:
    """A bright strip and dim grey glass elsewhere: against the strip's white the dim glass is
    dense, so the OD mask covers almost everything; saturation still tells pink from grey."""
    rgb = np.full((100, 100, 3), 200, np.uint8)
    rgb[:, :2] = 250
    rgb[30:70, 30:70] = PINK
    mask, method = find_tissue(rgb, min_object_pixels=0, max_hole_pixels=0)
    assert method == "saturation"
    assert mask[30:70, 30:70].all() and mask.sum() == 40 * 40


def test_tiny_tissue_is_kept_by_the_od_floor() -> None:
    """Tissue on 0.04% of the glass is implausibly little for both criteria; the fixed OD floor
    still keeps it, and the flag says a fallback made the mask."""
    rgb = np.full((200, 200, 3), 242, np.uint8)
    rgb[100:104, 100:104] = (190, 150, 180)
    mask, method = find_tissue(rgb, min_object_pixels=0, max_hole_pixels=0)
    assert method == "od-floor" and mask.sum() == 16 and mask[100:104, 100:104].all()


def test_pen_ink_on_glass_is_not_tissue_but_tissue_under_it_is() -> None:
    """Green, blue and black marker strokes across glass and tissue (ink multiplies the light
    through it): the ink on glass is left out, the tissue under it kept; H&E stays tissue."""
    rgb = _slide((242, 242, 242), (200, 150, 185)).astype(np.float64)
    strokes = {(18, 26): (0.35, 0.75, 0.45), (58, 66): (0.3, 0.4, 0.8), (94, 102): (0.25, 0.26, 0.28)}
    for (top, bottom), transmission in strokes.items():  # green, blue, black
        rgb[top:bottom, 10:110] *= transmission
    mask, method = find_tissue(rgb.astype(np.uint8), min_object_pixels=16, max_hole_pixels=0)
    assert method == "od"
    glass = np.ones(mask.shape, bool)
    glass[30:90, 30:90] = False
    assert not (mask & glass).any(), "ink on glass, glass, margin"
    assert mask[30:90, 30:90].all(), "tissue, also under the ink"


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
    assert mask.method == "od" and not mask.fallback


def test_a_fallback_mask_is_logged_naming_the_slide(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rgb = np.full((1024, 1024, 3), 245, np.uint8)
    rgb[500:510, 500:510] = PINK  # a speck: the OD mask covers almost nothing
    path = write_pyramid(tmp_path / "speck.tiff", rgb, levels=1, tile=64)
    with SlideReader(path) as reader, caplog.at_level("WARNING", logger="helpkit.slide"):
        mask = tissue_mask(reader, 8.0)
    assert mask.fallback
    assert any("speck.tiff" in r.message and "fallback" in r.message for r in caplog.records)
    caplog.clear()
    ok = write_pyramid(tmp_path / "ok.tiff", np.where(np.arange(1024)[:, None, None] < 512, PINK, 245).astype(np.uint8),
                       levels=1, tile=64)
    with SlideReader(ok) as reader, caplog.at_level("WARNING", logger="helpkit.slide"):
        assert not tissue_mask(reader, 8.0).fallback
    assert not caplog.records
