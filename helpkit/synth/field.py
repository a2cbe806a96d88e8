"""Deterministic fields of level-0 coordinates: hashing, value noise and plan sampling.

Every pixel of every pyramid level is a pure function of its level-0 position and the slide
seed, so tiles can be rendered in any order, at any level, without holding a level in
memory, and neighbouring tiles join without seams.
"""

from __future__ import annotations

import numpy as np

_PRIMES = (
    np.uint64(0x9E3779B97F4A7C15),
    np.uint64(0xC2B2AE3D27D4EB4F),
    np.uint64(0x165667B19E3779F9),
    np.uint64(0xD6E8FEB86659FD93),
)


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a cheap, well-mixed 64-bit hash step."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def hash_u64(seed: int, *coords: np.ndarray | int) -> np.ndarray:
    """64-bit hashes of integer coordinates (broadcast together) and ``seed``.

    Hand-written instead of numpy Generators because one value per lattice point, for any
    window of an unbounded lattice, must not depend on which window asked for it.
    """
    with np.errstate(over="ignore"):
        h = _mix(np.uint64(seed & 0xFFFFFFFFFFFFFFFF) + _PRIMES[0])
        for k, c in enumerate(coords):
            c64 = np.asarray(c, dtype=np.int64).astype(np.uint64)
            h = _mix(h ^ (c64 * _PRIMES[(k + 1) % len(_PRIMES)]))
    return h


def hash_uniform(seed: int, *coords: np.ndarray | int) -> np.ndarray:
    """Uniform [0, 1) float64 values hashed from integer coordinates and ``seed``."""
    return (hash_u64(seed, *coords) >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def hash_uniform16(seed: int, *coords: np.ndarray | int, count: int) -> np.ndarray:
    """``count`` uniform [0, 1) float32 values (16-bit resolution) per coordinate point.

    Four values per 64-bit hash: nuclei need many cheap numbers each, not fine ones.
    """
    h = hash_u64(seed, *coords)[..., None]
    words = []
    with np.errstate(over="ignore"):
        for k in range(-(-count // 4)):
            hk = h if k == 0 else _mix(h ^ (np.uint64(k) * _PRIMES[3]))
            words.append(hk >> (np.arange(4, dtype=np.uint64) * np.uint64(16)))
    bits = np.concatenate(words, axis=-1)[..., :count] & np.uint64(0xFFFF)
    return bits.astype(np.float32) * np.float32(1.0 / 65536)


def _taps(u: np.ndarray, base: int, n: int, smooth: bool) -> tuple[np.ndarray, np.ndarray]:
    """Left node index (relative to ``base``) and weight of the right node for positions ``u``."""
    k = np.minimum(np.floor(u).astype(np.int64) - base, n - 2)
    t = (u - base - k).astype(np.float32)
    if smooth:
        t = t * t * (3.0 - 2.0 * t)
    return k, t


def _separable(values: np.ndarray, uy: np.ndarray, by: int, ux: np.ndarray, bx: int, smooth: bool) -> np.ndarray:
    """Interpolate ``values`` (nodes from row ``by``, column ``bx``) on the grid ``uy`` x ``ux``.

    Two passes of two-tap interpolation with fancy indexing: cheaper than dense weight
    matrices and free of BLAS threading overhead on small tiles.
    """
    ny, nx = values.shape
    if ny == 1 or nx == 1:
        values = np.pad(values, ((0, ny == 1), (0, nx == 1)), mode="edge")
        ny, nx = values.shape
    ky, ty = _taps(uy, by, ny, smooth)
    kx, tx = _taps(ux, bx, nx, smooth)
    t = ty[:, None]
    rows = values[ky] * (1 - t) + values[ky + 1] * t
    return rows[:, kx] * (1 - tx) + rows[:, kx + 1] * tx


def value_noise(seed: int, xs: np.ndarray, ys: np.ndarray, spacing: float) -> np.ndarray:
    """Smooth value noise in [0, 1] on the grid ``ys`` x ``xs`` (level-0 coordinates).

    Lattice nodes sit every ``spacing`` level-0 pixels; only the nodes under the grid are
    hashed, and interpolation is separable.
    """
    ux = np.asarray(xs, dtype=np.float64) / spacing
    uy = np.asarray(ys, dtype=np.float64) / spacing
    bx, by = int(np.floor(ux.min())), int(np.floor(uy.min()))
    nx, ny = int(np.floor(ux.max())) - bx + 2, int(np.floor(uy.max())) - by + 2
    lattice = hash_uniform(
        seed, np.arange(by, by + ny)[:, None], np.arange(bx, bx + nx)[None, :]
    ).astype(np.float32)
    return _separable(lattice, uy, by, ux, bx, smooth=True)


def value_noise_points(seed: int, xs: np.ndarray, ys: np.ndarray, spacing: float) -> np.ndarray:
    """``value_noise`` at scattered points (``xs[k]``, ``ys[k]``): the same interpolant."""
    ux = np.asarray(xs, dtype=np.float64) / spacing
    uy = np.asarray(ys, dtype=np.float64) / spacing
    ix, iy = np.floor(ux).astype(np.int64), np.floor(uy).astype(np.int64)
    tx, ty = (ux - ix).astype(np.float32), (uy - iy).astype(np.float32)
    tx, ty = tx * tx * (3.0 - 2.0 * tx), ty * ty * (3.0 - 2.0 * ty)

    def node(di: int, dj: int) -> np.ndarray:
        return hash_uniform(seed, iy + di, ix + dj).astype(np.float32)

    top = node(0, 0) * (1 - tx) + node(0, 1) * tx
    bottom = node(1, 0) * (1 - tx) + node(1, 1) * tx
    return top * (1 - ty) + bottom * ty


class Plan2D:
    """A low-resolution array sampled bilinearly at level-0 coordinates.

    Node (i, j) sits at the centre of plan cell (i, j), that is at level-0
    ((j + 0.5) * cell, (i + 0.5) * cell); outside the nodes the edge value holds.
    """

    def __init__(self, values: np.ndarray, cell: float) -> None:
        self.values = np.ascontiguousarray(values, dtype=np.float32)
        self.cell = float(cell)

    def _u(self, coords: np.ndarray, n: int) -> np.ndarray:
        return np.clip(np.asarray(coords, dtype=np.float64) / self.cell - 0.5, 0.0, n - 1.0)

    def grid(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """Values on the grid ``ys`` x ``xs``, separably, touching only the needed window."""
        ny, nx = self.values.shape
        ux, uy = self._u(xs, nx), self._u(ys, ny)
        bx, by = int(np.floor(ux.min())), int(np.floor(uy.min()))
        ex, ey = min(int(np.floor(ux.max())) + 2, nx), min(int(np.floor(uy.max())) + 2, ny)
        window = self.values[by:ey, bx:ex]
        return _separable(window, uy, by, ux, bx, smooth=False)

    def points(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """Values at scattered points (``xs[k]``, ``ys[k]``), the same interpolant as ``grid``."""
        ny, nx = self.values.shape
        ux, uy = self._u(xs, nx), self._u(ys, ny)
        kx = np.minimum(np.floor(ux).astype(np.int64), max(nx - 2, 0))
        ky = np.minimum(np.floor(uy).astype(np.int64), max(ny - 2, 0))
        tx, ty = ux - kx, uy - ky
        kx1, ky1 = np.minimum(kx + 1, nx - 1), np.minimum(ky + 1, ny - 1)
        v = self.values
        top = v[ky, kx] * (1 - tx) + v[ky, kx1] * tx
        bottom = v[ky1, kx] * (1 - tx) + v[ky1, kx1] * tx
        return (top * (1 - ty) + bottom * ty).astype(np.float32)

    def window_max(self, x0: float, y0: float, x1: float, y1: float) -> float:
        """An upper bound of the interpolant over the level-0 box [x0, x1) x [y0, y1):
        the largest node that any point of the box interpolates from."""
        ny, nx = self.values.shape

        def span(lo: float, hi: float, n: int) -> slice:
            first = int(np.floor(lo / self.cell - 0.5))
            last = int(np.floor(hi / self.cell - 0.5)) + 1
            return slice(min(max(first, 0), n - 1), min(max(last, 0), n - 1) + 1)

        return float(self.values[span(y0, y1, ny), span(x0, x1, nx)].max())
