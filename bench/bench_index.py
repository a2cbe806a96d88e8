"""Bench: index one large synthetic slide (tissue mask, patch grid, tissue/tumour fractions).

Prints the time to index a slide of at least 50,000 x 50,000 pixels (target: under 2 s) and,
measured in the same run on the same thumbnail, the ratio against a straightforward
per-pixel Python loop (the reference team's way) doing the same tissue-fraction work.

    .venv/bin/python bench/bench_index.py [--size 50000] [--cache DIR] [--repeat 3]

The slide is made with helpkit.synth.make_slide once and cached (default: a folder in the
system temp directory), since writing it takes minutes.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from skimage.filters import threshold_otsu

from helpkit.slide.annotation import read_annotation_mask
from helpkit.slide.grid import cell_fractions, grid_for
from helpkit.slide.index import index_slide
from helpkit.slide.reader import SlideReader
from helpkit.slide.tissue import saturation, tissue_from_rgb, tissue_level
from helpkit.synth import make_slide


def best_time(fn: Callable[[], object], repeat: int) -> float:
    """Fastest of ``repeat`` wall-clock runs, in seconds."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def cached_slide(cache: Path, size: int, seed: int) -> tuple[Path, Path]:
    """The bench slide and its tumour mask, written on first use."""
    slide, mask = cache / f"bench_{size}_{seed}.tiff", cache / f"bench_{size}_{seed}.png"
    if not (slide.exists() and mask.exists()):
        print(f"writing a {size} x {size} synthetic slide to {slide} (once; minutes)...", flush=True)
        start = time.perf_counter()
        make_slide(slide, size, seed, positive=True, mask_path=mask)
        print(f"  written in {time.perf_counter() - start:.0f} s", flush=True)
    return slide, mask


def loop_cell_tissue(thumb: np.ndarray, threshold: float, black: int, cell: float, shape: tuple[int, int]) -> np.ndarray:
    """The baseline: visit every thumbnail pixel in Python, threshold it, count it into its cell."""
    rows, cols = shape
    counts = [[0] * cols for _ in range(rows)]
    totals = [[0] * cols for _ in range(rows)]
    for y, line in enumerate(thumb.tolist()):
        r = int(y / cell)
        if r >= rows:
            break
        for x, (red, green, blue) in enumerate(line):
            c = int(x / cell)
            if c >= cols:
                break
            hi, lo = max(red, green, blue), min(red, green, blue)
            totals[r][c] += 1
            if hi >= black and (hi - lo) / hi > threshold:
                counts[r][c] += 1
    return np.array(counts) / np.maximum(np.array(totals), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=50_000, help="slide side in level-0 pixels")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3, help="runs per timing; the fastest counts")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "helpkit-bench")
    args = parser.parse_args()

    slide, mask = cached_slide(args.cache, args.size, args.seed)
    full = best_time(lambda: index_slide(slide, mask, 1), args.repeat)
    result = index_slide(slide, mask, 1)

    with SlideReader(slide) as reader:
        level = tissue_level(reader)
        ds = reader.level_downsamples[level]
        thumb = reader.read_level(level)
        grid = grid_for(reader)
        read_thumb = best_time(lambda: reader.read_level(level), args.repeat)
        read_mask = best_time(lambda: read_annotation_mask(mask, reader.dimensions), args.repeat)
    print(f"slide {args.size} x {args.size}: thumbnail {thumb.shape[1]} x {thumb.shape[0]} (downsample {ds:g}), "
          f"grid {grid.shape[0]} x {grid.shape[1]} cells of {grid.patch_size0} level-0 pixels")
    print(f"patches: {result.n_tissue} tissue, {result.n_tumour} tumour, {result.n_normal} normal, "
          f"{result.n_ambiguous} ambiguous; {len(result.patches)} sampled")
    print(f"index_slide (open, tissue mask, grid, tissue + tumour fractions, labels, sampling): {full:.3f} s "
          f"[target < 2 s: {'met' if full < 2 else 'NOT met'}]")
    print(f"  of which reading the thumbnail {read_thumb:.3f} s, reading the tumour mask PNG {read_mask:.3f} s")

    # Same work both ways on the same thumbnail: tissue per pixel, then each cell's tissue share.
    values = saturation(thumb)[thumb.max(axis=2) >= 50]
    threshold = float(np.clip(threshold_otsu(values), 0.04, 0.2))
    cell = grid.stride0 / ds
    vectorised = best_time(lambda: cell_fractions(tissue_from_rgb(thumb), ds, grid), args.repeat)
    start = time.perf_counter()
    looped = loop_cell_tissue(thumb, threshold, 50, cell, grid.shape)
    loop = time.perf_counter() - start
    raw = cell_fractions(tissue_from_rgb(thumb, min_object_pixels=0, max_hole_pixels=0), ds, grid)
    print(f"tissue mask + cell fractions on the thumbnail: vectorised {vectorised:.3f} s, "
          f"per-pixel Python loop {loop:.2f} s, ratio {loop / vectorised:.0f}x "
          f"(cell fractions agree within {np.abs(raw - looped).mean():.4f} on average)")


if __name__ == "__main__":
    main()
