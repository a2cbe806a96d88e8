"""The patch grid: where patches sit on a slide, and how much tissue and tumour each holds."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from helpkit.slide.annotation import AnnotationMask
from helpkit.slide.geometry import PatchGeometry
from helpkit.slide.reader import SlideReader
from helpkit.slide.tissue import TissueMask


@dataclass(frozen=True)
class GridSpec:
    """A regular grid of square patches read at ``mpp`` microns per pixel.

    ``patch_size`` and ``stride`` are pixels at ``mpp``; ``downsample`` is level-0 pixels per
    patch pixel (``mpp`` over the slide's level-0 microns per pixel); ``origin`` is the
    level-0 (x, y) of cell (0, 0); ``shape`` is (rows, cols).
    """

    mpp: float
    patch_size: int
    stride: int
    downsample: float
    origin: tuple[int, int]
    shape: tuple[int, int]

    @property
    def stride0(self) -> int:
        """Stride in level-0 pixels."""
        return int(round(self.stride * self.downsample))

    @property
    def patch_size0(self) -> int:
        """Patch side in level-0 pixels."""
        return int(round(self.patch_size * self.downsample))

    def cell_xy(self, row: int, col: int) -> tuple[int, int]:
        """Level-0 (x, y) top-left of cell (row, col): what ``read_region_mpp`` takes."""
        return self.origin[0] + col * self.stride0, self.origin[1] + row * self.stride0

    def edges(self, downsample: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Each cell's [start, stop) pixel range in a mask at ``downsample`` (x, y): rows then cols.

        Ranges are rounded to the nearest mask pixel; a cell smaller than a mask pixel
        gets the one pixel holding its centre, so coarse masks still give every cell a value.
        """
        (rows, cols), (dsx, dsy) = self.shape, downsample
        top = (self.origin[1] + np.arange(rows) * self.stride0) / dsy
        left = (self.origin[0] + np.arange(cols) * self.stride0) / dsx
        r0, r1 = _pixel_range(top, self.patch_size0 / dsy)
        c0, c1 = _pixel_range(left, self.patch_size0 / dsx)
        return r0, r1, c0, c1


def _pixel_range(start: np.ndarray, length: float) -> tuple[np.ndarray, np.ndarray]:
    """Integer [begin, end) pixel ranges for spans [start, start + length), at least one pixel."""
    begin, end = np.rint(start).astype(np.int64), np.rint(start + length).astype(np.int64)
    empty = end <= begin
    begin = np.where(empty, np.floor(start + length / 2).astype(np.int64), begin)
    return begin, np.where(empty, begin + 1, end)


def grid_for(reader: SlideReader, geometry: PatchGeometry = PatchGeometry()) -> GridSpec:
    """The grid of whole patches inside the slide's scanned bounds (the whole slide if none),
    sized in level-0 pixels by the slide's own microns per pixel."""
    x, y, width, height = reader.bounds or (0, 0, *reader.dimensions)
    spec = GridSpec(geometry.mpp, geometry.patch_size, geometry.stride, geometry.mpp / reader.base_mpp, (x, y), (0, 0))
    rows = max(0, (height - spec.patch_size0) // spec.stride0 + 1)
    cols = max(0, (width - spec.patch_size0) // spec.stride0 + 1)
    return GridSpec(spec.mpp, spec.patch_size, spec.stride, spec.downsample, (x, y), (rows, cols))


def cell_fractions(mask: np.ndarray, downsample: float | tuple[float, float], grid: GridSpec) -> np.ndarray:
    """(rows, cols) float32: the share of each grid cell that is True in ``mask``.

    A summed-area table evaluated at the cells' corners rather than a reshape-and-mean
    block reduction: it handles any stride (overlapping patches too), cells that do not
    line up with mask pixels, and masks finer or coarser than a patch, all in O(mask + cells).
    """
    ds = (float(downsample), float(downsample)) if np.isscalar(downsample) else tuple(downsample)
    height, width = mask.shape
    sat = np.zeros((height + 1, width + 1), dtype=np.int64 if mask.size >= 2**31 else np.int32)
    np.cumsum(mask, axis=0, dtype=sat.dtype, out=sat[1:, 1:])
    np.cumsum(sat[1:, 1:], axis=1, out=sat[1:, 1:])
    r0, r1, c0, c1 = (np.clip(e, 0, n) for e, n in zip(grid.edges(ds), (height, height, width, width)))
    total = sat[r1][:, c1] - sat[r0][:, c1] - sat[r1][:, c0] + sat[r0][:, c0]
    area = np.outer(r1 - r0, c1 - c0)
    return np.divide(total, area, out=np.zeros(area.shape, np.float32), where=area > 0).astype(np.float32)


def patch_table(
    grid: GridSpec, tissue: TissueMask, tumour: AnnotationMask | None = None
) -> pd.DataFrame:
    """One row per grid cell that touches tissue or tumour, in row-major order.

    Columns: row, col, x, y (level-0 top-left), tissue_frac, tumour_frac. An annotated
    tumour is tissue too, so tissue_frac is at least tumour_frac; tumour_frac is NaN when
    there is no annotation (unknown), 0 for a cell outside every annotated region.
    """
    tissue_frac = cell_fractions(tissue.mask, tissue.downsample, grid)
    if tumour is None:
        tumour_frac = np.full(grid.shape, np.nan, dtype=np.float32)
    else:
        tumour_frac = cell_fractions(tumour.mask, tumour.downsample, grid)
        tissue_frac = np.maximum(tissue_frac, tumour_frac)
    rows, cols = np.nonzero(tissue_frac > 0)
    return pd.DataFrame(
        {
            "row": rows.astype(np.int32),
            "col": cols.astype(np.int32),
            "x": (grid.origin[0] + cols.astype(np.int64) * grid.stride0),
            "y": (grid.origin[1] + rows.astype(np.int64) * grid.stride0),
            "tissue_frac": tissue_frac[rows, cols],
            "tumour_frac": tumour_frac[rows, cols],
        }
    )
