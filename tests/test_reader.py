"""SlideReader over OpenSlide: geometry, RGB regions, and bad files as HelpkitErrors."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile

from helpkit.errors import HelpkitError
from helpkit.slide import reader as reader_module
from helpkit.slide.reader import SlideReader, rgba_to_rgb

MPP = 0.5


def write_pyramid(path: Path, rgb: np.ndarray, levels: int = 3, tile: int = 128) -> Path:
    """A generic tiled TIFF as OpenSlide reads it: one tiled JPEG page per level, halving
    (sizes rounded down, as scanners do)."""
    height, width = rgb.shape[:2]
    with tifffile.TiffWriter(path) as tif:
        for level in range(levels):
            step = 2**level
            tif.write(
                rgb[: height // step * step : step, : width // step * step : step], tile=(tile, tile), compression="jpeg", photometric="rgb",
                resolution=(1e4 / (MPP * step),) * 2, resolutionunit="CENTIMETER",
                subfiletype=0 if level == 0 else 1,
            )
    return path


def smooth_image(height: int = 512, width: int = 768) -> np.ndarray:
    """Smooth colour ramps: JPEG keeps them within a few grey levels."""
    yy, xx = np.mgrid[0:height, 0:width]
    return np.stack([xx * 255 // width, yy * 255 // height, np.full_like(xx, 180)], axis=2).astype(np.uint8)


@pytest.fixture
def pyramid(tmp_path: Path) -> Path:
    return write_pyramid(tmp_path / "Slide001.tiff", smooth_image())


def test_geometry_and_mpp(pyramid: Path) -> None:
    with SlideReader(pyramid) as reader:
        assert reader.slide_id == "Slide001"
        assert reader.dimensions == (768, 512)
        assert reader.level_count == 3
        assert reader.level_dimensions == ((768, 512), (384, 256), (192, 128))
        assert reader.level_downsamples == (1.0, 2.0, 4.0)
        assert reader.mpp == pytest.approx((MPP, MPP))
        assert reader.bounds is None
        assert reader.best_level_for_downsample(5.0) == 2
        assert reader.properties["openslide.vendor"] == "generic-tiff"


def test_read_region_matches_openslide_and_image(pyramid: Path) -> None:
    with SlideReader(pyramid) as reader:
        patch = reader.read_region((100, 60), 1, (40, 30))
    assert patch.shape == (30, 40, 3) and patch.dtype == np.uint8
    direct = np.asarray(openslide.OpenSlide(pyramid).read_region((100, 60), 1, (40, 30)))[..., :3]
    np.testing.assert_array_equal(patch, direct)
    expected = smooth_image()[60:120:2, 100:180:2]
    assert np.abs(patch.astype(int) - expected).max() < 12


def test_outside_the_slide_is_white(pyramid: Path) -> None:
    with SlideReader(pyramid) as reader:
        patch = reader.read_region((700, 480), 0, (100, 50))
    assert (patch[:, 68:] == 255).all() and (patch[32:] == 255).all()
    assert (patch[:32, :68] != 255).any()


def test_read_level_is_whole_level(pyramid: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with SlideReader(pyramid) as reader:
        assert reader.read_level(2).shape == (128, 192, 3)
        monkeypatch.setattr(reader_module, "MAX_LEVEL_PIXELS", 1000)
        with pytest.raises(HelpkitError, match="too large"):
            reader.read_level(2)
        with pytest.raises(HelpkitError, match="level 3 out of range"):
            reader.read_region((0, 0), 3, (4, 4))


def test_rgba_composited_over_white() -> None:
    rgba = np.array([[[10, 20, 30, 0], [10, 20, 30, 255], [0, 0, 0, 128]]], dtype=np.uint8)
    rgb = rgba_to_rgb(rgba)
    np.testing.assert_array_equal(rgb[0, 0], [255, 255, 255])
    np.testing.assert_array_equal(rgb[0, 1], [10, 20, 30])
    np.testing.assert_array_equal(rgb[0, 2], [127, 127, 127])


def test_text_file_named_svs_names_the_file(tmp_path: Path) -> None:
    fake = tmp_path / "Slide009.svs"
    fake.write_text("not a slide\n")
    with pytest.raises(HelpkitError) as info:
        SlideReader(fake)
    assert info.value.path == fake and "Slide009.svs" in str(info.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(HelpkitError, match="not found"):
        SlideReader(tmp_path / "nope.tiff")


def test_truncated_tiff_names_the_file(pyramid: Path) -> None:
    data = pyramid.read_bytes()
    pyramid.write_bytes(data[: len(data) // 2])
    with pytest.raises(HelpkitError) as info:
        with SlideReader(pyramid) as reader:
            for level in range(reader.level_count):
                reader.read_level(level)
    assert info.value.path == pyramid


def test_corrupt_tile_names_slide_and_region_then_reader_recovers(pyramid: Path) -> None:
    with tifffile.TiffFile(pyramid) as tif:
        offset, count = tif.pages[0].dataoffsets[0], tif.pages[0].databytecounts[0]
    with open(pyramid, "r+b") as f:  # zero the first level-0 tile: no JPEG marker left
        f.seek(offset)
        f.write(b"\0" * count)
    with SlideReader(pyramid) as reader:
        with pytest.raises(HelpkitError) as info:
            reader.read_region((0, 0), 0, (64, 64))
        assert info.value.path == pyramid and "x=0 y=0 level=0 size=64x64" in str(info.value)
        assert reader.read_region((300, 300), 0, (64, 64)).shape == (64, 64, 3)


def test_pickle_reopens_by_path(pyramid: Path) -> None:
    with SlideReader(pyramid) as reader:
        copy = pickle.loads(pickle.dumps(reader))
        np.testing.assert_array_equal(copy.read_level(2), reader.read_level(2))
        copy.close()


# --- reading at a physical resolution, whatever the pyramid ------------------------------------

def pool(rgb: np.ndarray, k: int) -> np.ndarray:
    """Mean of each k x k block, rounded: what an ideal scanner's coarser level holds."""
    h, w = rgb.shape[0] // k * k, rgb.shape[1] // k * k
    blocks = rgb[:h, :w].reshape(h // k, k, w // k, k, 3).astype(float)
    return np.rint(blocks.mean(axis=(1, 3))).astype(np.uint8)


def write_levels(path: Path, levels: list[np.ndarray], mpp: float | None) -> Path:
    """A lossless tiled TIFF with exactly these levels; level-0 ``mpp`` in the resolution tags
    (None: no resolution unit, so OpenSlide reports no mpp)."""
    with tifffile.TiffWriter(path) as tif:
        for i, rgb in enumerate(levels):
            extra = {} if mpp is None else {
                "resolution": (1e4 / (mpp * levels[0].shape[1] / rgb.shape[1]),) * 2, "resolutionunit": "CENTIMETER"}
            tif.write(rgb, tile=(64, 64), photometric="rgb", subfiletype=0 if i == 0 else 1, **extra)
    return path


def texture(size: int = 2048) -> np.ndarray:
    """Stripes of a few tens of level-0 pixels: a patch read at the wrong scale looks nothing alike."""
    yy, xx = np.mgrid[0:size, 0:size].astype(float)
    return np.stack([127 + 120 * np.sin(xx / 9), 127 + 120 * np.sin(yy / 13), 127 + 120 * np.sin((xx + yy) / 21)],
                    axis=2).astype(np.uint8)


def test_pyramids_and_scanners_are_read_at_the_same_physical_scale(tmp_path: Path) -> None:
    base = texture()  # 0.25 um/px
    slides = {  # name: (path, level-0 um/px)
        "2x": (write_levels(tmp_path / "p2.tiff", [base, pool(base, 2), pool(base, 4), pool(base, 8)], 0.25), 0.25),
        "4x": (write_levels(tmp_path / "p4.tiff", [base, pool(base, 4), pool(base, 16)], 0.25), 0.25),
        "single": (write_levels(tmp_path / "flat.tiff", [base], 0.25), 0.25),
        "0.5um": (write_levels(tmp_path / "half.tiff", [pool(base, 2), pool(base, 4)], 0.5), 0.5),
    }
    x0, y0 = 512, 768  # the same physical place: level-0 pixels of a 0.25 um/px scan
    patches = {}
    for name, (path, mpp) in slides.items():
        with SlideReader(path) as reader:
            assert reader.base_mpp == pytest.approx(mpp, rel=1e-3)
            scale = 0.25 / mpp
            patches[name] = reader.read_region_mpp((round(x0 * scale), round(y0 * scale)), 0.5, (64, 64)).astype(int)
            if name == "2x":
                assert reader.level_for_mpp(0.5) == (1, 1.0)  # a level that matches is read as it is
                wrong = reader.read_region_mpp((x0, y0), 1.0, (64, 64)).astype(int)
    for name, patch in patches.items():
        assert patch.shape == (64, 64, 3)
        assert np.abs(patch - patches["2x"]).max() <= 1, name
    assert np.abs(wrong - patches["2x"]).mean() > 20  # another scale would not pass the check above


def test_slide_without_mpp_uses_the_fallback_and_says_so_once(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from helpkit.slide.geometry import FALLBACK_MPP

    base = texture(512)
    path = write_levels(tmp_path / "Slide077.tiff", [base], None)
    with caplog.at_level("WARNING", logger="helpkit.slide"):
        for _ in range(2):
            with SlideReader(path) as reader:
                assert reader.mpp is None and reader.base_mpp == FALLBACK_MPP
                for x in range(0, 256, 64):
                    patch = reader.read_region_mpp((x, 0), 0.5, (32, 32))
    said = [r.getMessage() for r in caplog.records if "Slide077" in r.getMessage()]
    assert len(said) == 1 and "FALLBACK_MPP" in said[0] and f"{FALLBACK_MPP:g} um/px" in said[0]
    assert np.abs(patch.astype(int) - pool(base, 2)[:32, 96:128]).max() <= 1
