"""Sliding-window inference over every tissue cell of a slide's grid, the model never idle.

Patches are read by a pool of threads (OpenSlide is thread-safe and releases the GIL, so one
reader per slide serves them all) into fixed-size uint8 batches; up to ``workers + prefetch``
batches are in flight while the model predicts the current one, so memory is bounded by that
many batches whatever the slide size. Cells of a batch that lie side by side in a grid row
are read as one region and cut into patches: one OpenSlide call per run of cells instead of
one per patch. That holds when a pyramid level matches the patches' microns per pixel;
otherwise every cell is read (and resized) on its own by ``read_region_mpp``, the very call
training reads patches with, so a cell gets the same pixels in both. A region that fails is
read again cell by cell, so a read error costs only the cells it touches: they are marked
missing, their errors recorded, the slide goes on.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from helpkit.errors import HelpkitError

PredictFn = Callable[[np.ndarray], np.ndarray]
"""uint8 (batch, patch, patch, 3) -> tumour probability per patch ((batch,) or (batch, 1))."""

BATCH_SIZE = 256
AUTO_BATCH_SIZES = (64, 128, 256, 512, 1024)
"""Batch sizes ``batch_size=0`` chooses among, by measuring the predict function on each."""
MAX_RUN = 32
"""Most cells read in one region: long enough to amortise a call, short enough to stay small."""
MAX_ERRORS = 100
"""Read errors kept verbatim per slide; the rest are counted in one final entry."""


def default_workers() -> int:
    """Reader threads: they mostly wait inside OpenSlide (GIL released), so a few more than cores."""
    return min(8, (os.cpu_count() or 2) + 2)


class PatchReader(Protocol):
    """What the engine needs of a slide reader (helpkit.slide.SlideReader has it)."""

    def read_region_mpp(self, location: tuple[int, int], mpp: float, size: tuple[int, int]) -> np.ndarray: ...

    def level_for_mpp(self, mpp: float) -> tuple[int, float]: ...


class Grid(Protocol):
    """What the engine needs of a grid (helpkit.slide.GridSpec has it)."""

    mpp: float
    patch_size: int
    stride: int
    shape: tuple[int, int]

    def cell_xy(self, row: int, col: int) -> tuple[int, int]: ...


@dataclass
class EngineResult:
    """Per-cell output on the grid: probabilities (NaN off tissue or missing), read failures."""

    prob: np.ndarray
    missing: np.ndarray
    errors: list[str]


@dataclass
class _Batch:
    cells: np.ndarray
    patches: np.ndarray
    ok: np.ndarray
    errors: list[str]


def _runs(cells: np.ndarray) -> list[tuple[int, int]]:
    """Split row-major ``cells`` into (start, stop) runs of adjacent cells of one grid row."""
    runs = []
    start = 0
    for i in range(1, len(cells) + 1):
        if (
            i == len(cells)
            or i - start == MAX_RUN
            or cells[i, 0] != cells[i - 1, 0]
            or cells[i, 1] != cells[i - 1, 1] + 1
        ):
            runs.append((start, i))
            start = i
    return runs


def _read_batch(reader: PatchReader, grid: Grid, cells: np.ndarray, batch_size: int) -> _Batch:
    """Read ``cells`` into a fresh (batch_size, p, p, 3) array; padding rows stay zero."""
    p, stride, mpp = grid.patch_size, grid.stride, grid.mpp
    strips = reader.level_for_mpp(mpp)[1] == 1.0  # a level matches: runs of cells read as one region
    patches = np.zeros((batch_size, p, p, 3), dtype=np.uint8)
    ok = np.zeros(batch_size, dtype=bool)
    errors: list[str] = []

    def read_one(i: int) -> None:
        row, col = int(cells[i, 0]), int(cells[i, 1])
        xy = grid.cell_xy(row, col)
        try:
            patch = reader.read_region_mpp(xy, mpp, (p, p))
        except Exception as err:  # noqa: BLE001  (any reader failure marks the cell missing)
            errors.append(f"cell ({row}, {col}) at level-0 {tuple(xy)}: {type(err).__name__}: {err}")
            return
        patches[i] = patch
        ok[i] = True

    for start, stop in _runs(cells):
        n = stop - start
        if n == 1 or not strips:
            for i in range(start, stop):
                read_one(i)
            continue
        x, y = grid.cell_xy(int(cells[start, 0]), int(cells[start, 1]))
        try:
            region = reader.read_region_mpp((x, y), mpp, ((n - 1) * stride + p, p))
        except Exception:  # noqa: BLE001  (retry cell by cell to isolate the bad ones)
            for i in range(start, stop):
                read_one(i)
            continue
        # Cells of the run sit ``stride`` level pixels apart; cutting them from one region
        # matches per-cell reads up to sub-pixel rounding of non-integer downsamples.
        for j in range(n):
            patches[start + j] = region[:, j * stride : j * stride + p]
        ok[start:stop] = True
    return _Batch(cells=cells, patches=patches, ok=ok, errors=errors)


_measured: dict[object, int] = {}


def measured_batch_size(predict: PredictFn, patch_size: int, sizes: tuple[int, ...] = AUTO_BATCH_SIZES) -> int:
    """The batch size of ``sizes`` at which ``predict`` runs most patches per second, measured
    on random patches (about two seconds) once per ``predict.batch_key`` (a predictor's identity:
    its models) and patch size, and remembered for the process."""
    from helpkit.models.compute import best_batch_size

    key = (getattr(predict, "batch_key", id(predict)), patch_size, sizes)
    if key not in _measured:
        _measured[key] = best_batch_size(predict, patch_size, sizes, budget_s=2.0)[0]
    return _measured[key]


def _probabilities(predict: PredictFn, patches: np.ndarray) -> np.ndarray:
    """Run ``predict`` and check it gave one probability per patch."""
    out = np.asarray(predict(patches), dtype=np.float32).reshape(-1)
    if out.shape[0] != patches.shape[0]:
        raise HelpkitError(f"model gave {out.shape[0]} outputs for {patches.shape[0]} patches (expected 1 each)")
    return out


def run_heatmap(
    reader: PatchReader,
    predict: PredictFn,
    grid: Grid,
    tissue: np.ndarray,
    *,
    batch_size: int = BATCH_SIZE,
    workers: int | None = None,
    prefetch: int = 2,
    on_batch: Callable[[int], None] | None = None,
) -> EngineResult:
    """Predict every cell where ``tissue`` (bool, grid shape) is set; return the grid result.

    ``predict`` always gets full ``batch_size`` batches (the last one zero-padded) so a
    compiled model never retraces; ``batch_size=0`` picks it by measurement
    (``measured_batch_size``). ``on_batch(n)`` is called after each batch of ``n`` cells.
    """
    if tissue.shape != tuple(grid.shape):
        raise HelpkitError(f"tissue grid {tissue.shape} does not match the grid {tuple(grid.shape)}")
    if batch_size == 0 and tissue.any():
        batch_size = measured_batch_size(predict, grid.patch_size)
    batch_size = batch_size or BATCH_SIZE
    workers = workers or default_workers()
    cells = np.argwhere(tissue)
    prob = np.full(tissue.shape, np.nan, dtype=np.float32)
    missing = np.zeros(tissue.shape, dtype=bool)
    errors: list[str] = []
    n_errors = 0
    chunks = iter(cells[i : i + batch_size] for i in range(0, len(cells), batch_size))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="heatmap-read") as pool:
        in_flight: deque = deque()

        def submit_next() -> None:
            chunk = next(chunks, None)
            if chunk is not None:
                in_flight.append(pool.submit(_read_batch, reader, grid, chunk, batch_size))

        for _ in range(workers + prefetch):
            submit_next()
        while in_flight:
            batch: _Batch = in_flight.popleft().result()
            submit_next()
            n = len(batch.cells)
            out = _probabilities(predict, batch.patches)[:n]
            rows, cols = batch.cells[:, 0], batch.cells[:, 1]
            ok = batch.ok[:n]
            prob[rows[ok], cols[ok]] = out[ok]
            missing[rows[~ok], cols[~ok]] = True
            n_errors += len(batch.errors)
            errors.extend(batch.errors[: max(0, MAX_ERRORS - len(errors))])
            if on_batch is not None:
                on_batch(n)
    if n_errors > len(errors):
        errors.append(f"... and {n_errors - len(errors)} more read errors")
    return EngineResult(prob=prob, missing=missing, errors=errors)
