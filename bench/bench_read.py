"""Bench: how fast the heatmap engine reads patches when a pyramid level matches the patches'
microns per pixel (runs of cells read as one region) and when none does (every cell read and
area-averaged on its own, as training reads it).

One synthetic slide (0.25 um/px, a 2x pyramid: level 1 is the default 0.5 um/px) and the same
pixels re-saved as a single-level TIFF; a trivial predictor, so only reading is timed. Best of
``--repeat`` runs each, interleaved.

Against OpenSlide's own rate on the same pyramid slide, one thread, no helpkit in between:
``openslide.OpenSlide.read_region`` of every tissue cell's patch at the matching level, in
grid order (patches/s), and of whole 256 x 256 tiles on the tile grid of that level, as
patch-equivalents/s (pixels read / patch pixels): what one core of OpenSlide delivers, so the
engine's ratio to it says what its threads and strip reads add.

    .venv/bin/python bench/bench_read.py [--size 12288] [--work DIR] [--repeat 3]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile

from helpkit.heatmap.engine import run_heatmap
from helpkit.heatmap.make import tissue_grid
from helpkit.slide import PatchGeometry, SlideReader, grid_for, tissue_mask
from helpkit.synth import make_slide


def single_level_copy(slide: Path, out: Path) -> Path:
    """The level-0 pixels of ``slide`` as a one-level tiled JPEG TIFF with the same mpp."""
    if not out.exists():
        with SlideReader(slide) as reader:
            rgb, mpp = reader.read_level(0), reader.base_mpp
        with tifffile.TiffWriter(out, bigtiff=True) as tif:
            tif.write(rgb, tile=(256, 256), photometric="rgb", compression="jpeg",
                      resolution=(1e4 / mpp,) * 2, resolutionunit="CENTIMETER")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=12288)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "helpkit-bench-read")
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    pyramid = args.work / f"pyramid_{args.size}.tiff"
    if not pyramid.exists():
        make_slide(pyramid, args.size, seed=7, positive=True)
    flat = single_level_copy(pyramid, args.work / f"flat_{args.size}.tiff")

    def predict(batch: np.ndarray) -> np.ndarray:
        return batch[:, ::8, ::8, 0].mean(axis=(1, 2)) / 255

    setups = {}
    for name, path in (("level matches (strips)", pyramid), ("single level (per cell, resized)", flat)):
        reader = SlideReader(path)
        grid = grid_for(reader, PatchGeometry())
        setups[name] = (reader, grid, tissue_grid(grid, tissue_mask(reader)))
    best = dict.fromkeys(setups, float("inf"))
    for _ in range(args.repeat):
        for name, (reader, grid, tissue) in setups.items():
            start = time.perf_counter()
            run_heatmap(reader, predict, grid, tissue)
            best[name] = min(best[name], time.perf_counter() - start)
    for name, (reader, _, tissue) in setups.items():
        print(f"{name:34s} {int(tissue.sum()):6d} cells  {tissue.sum() / best[name]:7.0f} patches/s")
        reader.close()
    names = list(setups)
    print(f"strips / per-cell resized = {best[names[1]] / best[names[0]]:.1f}x")
    reader, grid, tissue = setups[names[0]]
    engine_rate = tissue.sum() / best[names[0]]
    per_patch, per_tile = openslide_rates(pyramid, grid, tissue, args.repeat)
    print(f"OpenSlide alone, 1 thread, read_region per patch      {per_patch:7.0f} patches/s")
    print(f"OpenSlide alone, 1 thread, 256x256 tiles              {per_tile:7.0f} patch-equivalents/s")
    print(f"engine (strips, threads) / OpenSlide per patch = {engine_rate / per_patch:.1f}x; "
          f"/ OpenSlide tiles = {engine_rate / per_tile:.2f}")


def openslide_rates(path: Path, grid, tissue: np.ndarray, repeat: int) -> tuple[float, float]:
    """OpenSlide's single-thread rates on ``path`` at ``grid``'s level (which must match its mpp):
    (patches/s reading each tissue cell's patch, patch-equivalents/s reading whole 256-pixel tiles)."""
    import openslide

    slide = openslide.OpenSlide(str(path))
    try:
        level = slide.get_best_level_for_downsample(grid.downsample + 1e-6)
        assert abs(slide.level_downsamples[level] - grid.downsample) < 1e-6, "no level at the patches' mpp"
        p = grid.patch_size
        cells = [grid.cell_xy(int(r), int(c)) for r, c in np.argwhere(tissue)]
        width, height = slide.level_dimensions[level]
        scale = int(round(slide.level_downsamples[level]))
        tiles = [(x * scale, y * scale) for y in range(0, height - 255, 256) for x in range(0, width - 255, 256)]
        best_patch = best_tile = float("inf")
        for _ in range(repeat):
            start = time.perf_counter()
            for xy in cells:
                slide.read_region(xy, level, (p, p))
            best_patch = min(best_patch, time.perf_counter() - start)
            start = time.perf_counter()
            for xy in tiles:
                slide.read_region(xy, level, (256, 256))
            best_tile = min(best_tile, time.perf_counter() - start)
    finally:
        slide.close()
    return len(cells) / best_patch, len(tiles) * (256 * 256) / (p * p) / best_tile


if __name__ == "__main__":
    main()
