"""Bench: how fast the heatmap engine reads patches when a pyramid level matches the patches'
microns per pixel (runs of cells read as one region) and when none does (every cell read and
area-averaged on its own, as training reads it).

One synthetic slide (0.25 um/px, a 2x pyramid: level 1 is the default 0.5 um/px) and the same
pixels re-saved as a single-level TIFF; a trivial predictor, so only reading is timed. Best of
``--repeat`` runs each, interleaved.

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
from helpkit.heatmap.run import tissue_grid
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


if __name__ == "__main__":
    main()
