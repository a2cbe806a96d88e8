"""The patch grid: level-0 geometry from microns, bounds, and per-cell tissue/tumour fractions."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from helpkit.errors import HelpkitError
from helpkit.slide.annotation import AnnotationMask, read_annotation_mask
from helpkit.slide.geometry import PatchGeometry
from helpkit.slide.grid import GridSpec, cell_fractions, grid_for, patch_table
from helpkit.slide.tissue import TissueMask


def fake_reader(dimensions=(1000, 600), bounds=None, downsamples=(1.0, 2.0, 4.0), mpp=0.25) -> SimpleNamespace:
    return SimpleNamespace(
        dimensions=dimensions, bounds=bounds, level_count=len(downsamples),
        level_downsamples=downsamples, path=Path("fake.tiff"), base_mpp=mpp,
    )


def test_grid_covers_whole_patches_in_level0() -> None:
    grid = grid_for(fake_reader(), PatchGeometry(mpp=0.5, patch_size=64))
    assert (grid.patch_size0, grid.stride0, grid.origin) == (128, 128, (0, 0))
    assert grid.shape == (600 // 128, 1000 // 128)
    assert grid.cell_xy(2, 3) == (384, 256)


def test_grid_inside_bounds_with_stride() -> None:
    grid = grid_for(fake_reader(bounds=(100, 50, 500, 300)), PatchGeometry(mpp=1.0, patch_size=16, stride=8))
    assert (grid.patch_size0, grid.stride0, grid.origin) == (64, 32, (100, 50))
    assert grid.shape == ((300 - 64) // 32 + 1, (500 - 64) // 32 + 1)
    x, y = grid.cell_xy(grid.shape[0] - 1, grid.shape[1] - 1)
    assert x + 64 <= 600 and y + 64 <= 350


def test_grid_follows_the_slides_own_microns_per_pixel() -> None:
    """The same physical patch is 128 level-0 pixels at 0.25 um/px, 64 at 0.5 um/px, whatever the pyramid."""
    geometry = PatchGeometry(mpp=0.5, patch_size=64)
    assert grid_for(fake_reader(downsamples=(1.0,)), geometry).patch_size0 == 128
    coarse = grid_for(fake_reader(mpp=0.5, downsamples=(1.0, 4.0, 16.0)), geometry)
    assert (coarse.patch_size0, coarse.stride0, coarse.mpp) == (64, 64, 0.5)
    default = grid_for(fake_reader(dimensions=(4096, 4096), mpp=0.5, downsamples=(1.0, 2.0, 4.0)), PatchGeometry())
    assert default.patch_size0 == 256  # 64 px at 2 um/px: 128 um, 256 pixels of a 0.5 um/px scan


def test_geometry_rejects_bad_sizes() -> None:
    with pytest.raises(HelpkitError, match="must be positive"):
        PatchGeometry(patch_size=0)
    with pytest.raises(HelpkitError, match="must be positive"):
        PatchGeometry(mpp=0)
    assert PatchGeometry() == PatchGeometry(stride=64) == PatchGeometry.from_json(PatchGeometry().to_json())


def brute_fractions(mask: np.ndarray, ds: int, grid: GridSpec) -> np.ndarray:
    """The reference: a Python loop over cells, each averaging its mask pixels."""
    out = np.zeros(grid.shape)
    for r in range(grid.shape[0]):
        for c in range(grid.shape[1]):
            x, y = grid.cell_xy(r, c)
            out[r, c] = mask[y // ds : (y + grid.patch_size0) // ds, x // ds : (x + grid.patch_size0) // ds].mean()
    return out


@pytest.mark.parametrize(("stride", "origin"), [(16, (0, 0)), (8, (0, 0)), (24, (4, 8))])
def test_cell_fractions_match_per_cell_loop(stride: int, origin: tuple[int, int]) -> None:
    mask = np.random.default_rng(stride).random((60, 80)) > 0.6
    grid = GridSpec(mpp=0.5, patch_size=16, stride=stride, downsample=2.0, origin=origin,
                    shape=((240 - origin[1] - 32) // (2 * stride) + 1, (320 - origin[0] - 32) // (2 * stride) + 1))
    np.testing.assert_allclose(cell_fractions(mask, 4.0, grid), brute_fractions(mask, 4, grid), rtol=1e-6)


def test_mask_coarser_than_a_patch_gives_each_cell_its_pixel() -> None:
    mask = np.array([[True, False], [False, True]])
    grid = GridSpec(mpp=0.25, patch_size=16, stride=16, downsample=1.0, origin=(0, 0), shape=(4, 4))
    expected = np.kron(mask, np.ones((2, 2)))
    np.testing.assert_array_equal(cell_fractions(mask, 32.0, grid), expected)


def test_patch_table_keeps_tissue_cells_and_counts_tumour_as_tissue() -> None:
    grid = GridSpec(mpp=0.25, patch_size=8, stride=8, downsample=1.0, origin=(0, 0), shape=(4, 4))
    tissue = np.zeros((4, 4), bool)
    tissue[1, 1:3] = True
    tumour = np.zeros((4, 4), bool)
    tumour[1, 2] = tumour[3, 3] = True
    table = patch_table(grid, TissueMask(tissue, 8.0), AnnotationMask(tumour, (8.0, 8.0)))
    assert list(zip(table["row"], table["col"])) == [(1, 1), (1, 2), (3, 3)]
    assert list(table["x"]) == [8, 16, 24] and list(table["y"]) == [8, 8, 24]
    assert list(table["tissue_frac"]) == [1, 1, 1] and list(table["tumour_frac"]) == [0, 1, 1]
    unknown = patch_table(grid, TissueMask(tissue, 8.0))
    assert len(unknown) == 2 and unknown["tumour_frac"].isna().all()


def test_annotation_downsample_inferred_and_aspect_checked(tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "Slide001.png"
    Image.fromarray(np.pad(np.full((4, 5), 255, np.uint8), ((0, 60), (0, 59)))).save(path)
    mask = read_annotation_mask(path, (1024, 1024))
    assert mask.downsample == (16.0, 16.0) and mask.mask.sum() == 20
    assert read_annotation_mask(path, (1030, 1020)).downsample == pytest.approx((1030 / 64, 1020 / 64))
    with pytest.raises(HelpkitError, match="aspect ratios differ") as info:
        read_annotation_mask(path, (2048, 1024))
    assert info.value.path == path
    (tmp_path / "bad.png").write_text("no png")
    with pytest.raises(HelpkitError, match="cannot read annotation mask"):
        read_annotation_mask(tmp_path / "bad.png", (1024, 1024))
