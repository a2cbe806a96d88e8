"""Procedural H&E tissue: stroma, nuclei of several kinds, and tumour, rendered per tile.

Nuclei are placed on jittered lattices in level-0 coordinates (one candidate per lattice
cell, kept with a probability given by the slide plan), so a nucleus looks the same in every
tile and level that shows it. Down to downsample ``STAMP_MAX_DOWNSAMPLE`` nuclei are drawn
one by one (vectorised stamps); coarser levels, where a nucleus is under a pixel, use its
expected stain amount instead.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from helpkit.synth.field import hash_uniform16, value_noise
from helpkit.synth.plan import SlidePlan
from helpkit.synth.stain import Look

STAMP_MAX_DOWNSAMPLE = 4


@dataclass(frozen=True)
class NucleusKind:
    """A population of nuclei; lengths in level-0 pixels."""

    name: str
    spacing: float
    """Lattice spacing: at most one nucleus per spacing x spacing cell."""
    radius: float
    size_spread: float
    """Radii vary by exp(+-size_spread)."""
    aspect: tuple[float, float]
    irregular: float
    """Amplitude of the outline's wobble (pleomorphism)."""
    stain: float
    """Haematoxylin amount of the nucleus body."""
    vesicular: float
    """0 solid dark chromatin, 1 pale centre with dark rim and a nucleolus."""


STROMA = NucleusKind("stroma", 34.0, 4.2, 0.15, (2.2, 3.6), 0.0, 1.35, 0.0)
PARENCHYMA = NucleusKind("parenchyma", 16.0, 5.2, 0.15, (1.0, 1.4), 0.05, 1.3, 0.15)
LYMPHOCYTE = NucleusKind("lymphocyte", 10.0, 3.3, 0.1, (1.0, 1.15), 0.0, 1.7, 0.0)
TUMOUR = NucleusKind("tumour", 20.0, 8.5, 0.35, (1.0, 1.8), 0.22, 1.0, 0.7)
KINDS = (STROMA, PARENCHYMA, LYMPHOCYTE, TUMOUR)

_TEXTURE = np.random.default_rng(20170).random((8, 64, 64)).astype(np.float32)
"""Fixed chromatin grain, indexed by a nucleus's hash and pixel offset (tile-independent)."""


def presence(
    tissue: np.ndarray, lymph: np.ndarray, cellular: np.ndarray, tumour: np.ndarray
) -> dict[str, np.ndarray]:
    """Probability that a lattice candidate of each kind holds a nucleus, from plan fields
    (tissue and tumour as booleans, lymph and cellular as 0..1 weights)."""
    normal = tissue & ~tumour
    return {
        "stroma": normal * 0.45 * (1 - cellular) * (1 - lymph),
        "parenchyma": normal * 0.8 * cellular * (1 - lymph),
        "lymphocyte": normal * 0.95 * lymph + tumour * 0.05,
        "tumour": tumour * 0.95,
    }


def _fields(plan: SlidePlan, xs: np.ndarray, ys: np.ndarray, grid: bool) -> tuple[np.ndarray, ...]:
    """Plan fields (tissue, lymph, cellular, tumour) on a grid or at points."""
    sample = (lambda f: f.grid(xs, ys)) if grid else (lambda f: f.points(xs, ys))
    tissue = sample(plan.tissue) > 0
    tumour = sample(plan.tumour) > 0 if plan.tumour is not None else np.zeros_like(tissue)
    return tissue, sample(plan.lymph), sample(plan.cellular), tumour


def _candidates(
    plan: SlidePlan, kind: NucleusKind, x0: float, y0: float, x1: float, y1: float
) -> np.ndarray:
    """Nuclei of ``kind`` whose stamps can touch the level-0 box; rows of 8 hashed numbers
    plus centre (x, y): (n, 10)."""
    reach = kind.radius * np.exp(kind.size_spread) * np.sqrt(kind.aspect[1]) * (1 + 2 * kind.irregular)
    g = kind.spacing
    i = np.arange(int(np.floor((y0 - reach) / g)), int(np.floor((y1 + reach) / g)) + 1)
    j = np.arange(int(np.floor((x0 - reach) / g)), int(np.floor((x1 + reach) / g)) + 1)
    jj, ii = np.meshgrid(j, i)
    ii, jj = ii.ravel(), jj.ravel()
    h = hash_uniform16(plan.seed, KINDS.index(kind), ii, jj, count=8)
    cx = (jj + 0.1 + 0.8 * h[:, 0]) * g
    cy = (ii + 0.1 + 0.8 * h[:, 1]) * g
    keep = h[:, 2] < presence(*_fields(plan, cx, cy, grid=False))[kind.name]
    return np.column_stack([h[keep], cx[keep], cy[keep]])


def _stamp(
    kind: NucleusKind,
    nuc: np.ndarray,
    x0: float,
    y0: float,
    d: float,
    shape: tuple[int, int],
    h_map: np.ndarray,
    cover: np.ndarray,
) -> None:
    """Draw nuclei ``nuc`` (rows from ``_candidates``) into ``h_map`` and ``cover`` in place."""
    if not len(nuc):
        return
    rows, cols = shape
    hsh, cx, cy = nuc[:, :8], (nuc[:, 8] - x0) / d, (nuc[:, 9] - y0) / d
    r = kind.radius * np.exp(kind.size_spread * (2 * hsh[:, 3] - 1)) / d
    aspect = kind.aspect[0] + (kind.aspect[1] - kind.aspect[0]) * hsh[:, 4]
    a, b = r * np.sqrt(aspect), r / np.sqrt(aspect)
    angle = np.pi * hsh[:, 5]
    half = int(np.ceil(a.max() * (1 + 2 * kind.irregular))) + 1
    off = np.arange(-half, half + 1, dtype=np.float32)
    px0, py0 = np.floor(cx).astype(np.int64), np.floor(cy).astype(np.int64)
    dx = (px0[:, None, None] + off[None, None, :] + 0.5 - cx[:, None, None]).astype(np.float32)
    dy = (py0[:, None, None] + off[None, :, None] + 0.5 - cy[:, None, None]).astype(np.float32)
    c, s = np.cos(angle)[:, None, None], np.sin(angle)[:, None, None]
    u, v = (dx * c + dy * s) / a[:, None, None], (-dx * s + dy * c) / b[:, None, None]
    rn = np.sqrt(u * u + v * v)
    if kind.irregular:
        phi = np.arctan2(v, u)
        p1, p2 = (2 * np.pi * hsh[:, 6])[:, None, None], (2 * np.pi * hsh[:, 7])[:, None, None]
        rn = rn / (1 + kind.irregular * (np.cos(2 * phi + p1) * hsh[:, 6, None, None]
                                         + np.cos(3 * phi + p2) * hsh[:, 7, None, None]))
    edge = np.minimum(b, a)[:, None, None]
    cov = np.clip((1 - rn) * edge + 0.5, 0, 1)
    grain = _TEXTURE[(hsh[:, 6] * 8).astype(np.int64)[:, None, None],
                     (off[None, :, None] + half).astype(np.int64) % 64,
                     (off[None, None, :] + half).astype(np.int64) % 64]
    body = kind.stain * (0.8 + 0.4 * hsh[:, 7])[:, None, None]
    if kind.vesicular:
        rim = np.clip(rn, 0, 1) ** 4
        nucleolus = np.exp(-((u - 0.25) ** 2 + (v + 0.1) ** 2) / 0.03)
        body = body * (1 - kind.vesicular * (0.7 - 0.7 * rim - 0.8 * nucleolus))
        body = body * (0.6 + 0.8 * grain)
    else:
        body = body * (0.85 + 0.3 * grain)
    val = cov * body
    py = py0[:, None, None] + off[None, :, None].astype(np.int64)
    px = px0[:, None, None] + off[None, None, :].astype(np.int64)
    inside = (cov > 0) & (py >= 0) & (py < rows) & (px >= 0) & (px < cols)
    flat = (py * cols + px)[inside]
    np.maximum.at(h_map.ravel(), flat, val[inside])
    np.maximum.at(cover.ravel(), flat, cov[inside])


def _expected_stain(p: dict[str, np.ndarray]) -> np.ndarray:
    """Mean haematoxylin of nuclei per pixel, for levels where nuclei are sub-pixel."""
    total = np.zeros_like(next(iter(p.values())), dtype=np.float32)
    for kind in KINDS:
        area = 0.85 * np.pi * kind.radius**2 * np.cosh(2 * kind.size_spread) / kind.spacing**2
        mean = kind.stain * (1 - 0.6 * kind.vesicular)
        total += (1 - np.exp(-p[kind.name] * area)) * mean
    return total


def render_tile(
    plan: SlidePlan, look: Look, level_downsample: float, x0: float, y0: float, size: int
) -> np.ndarray:
    """RGB uint8 (size, size, 3) of the tile whose top-left is level-0 (x0, y0)."""
    d = float(level_downsample)
    pad = int(np.ceil(3 * look.blur0 / d)) if look.blur0 / d > 0.25 else 0
    n = size + 2 * pad
    ox, oy = x0 - pad * d, y0 - pad * d
    xs = (ox + (np.arange(n) + 0.5) * d).astype(np.float32)
    ys = (oy + (np.arange(n) + 0.5) * d).astype(np.float32)
    tissue, lymph, cellular, tumour = _fields(plan, xs, ys, grid=True)

    seed = plan.seed
    slow = value_noise(seed + 11, xs, ys, 300.0)
    stroma_e = 0.5 * (0.85 + 0.3 * slow)
    wavelength = 18.0
    fade = float(np.clip((wavelength / d - 2.0) / 2.0, 0.0, 1.0))
    if fade > 0:
        # wavy collagen: stripes along a slowly turning direction, broken up by patchy noise
        theta = np.float32(2 * np.pi) * value_noise(seed + 12, xs, ys, 700.0)
        warp = value_noise(seed + 13, xs, ys, 90.0)
        patches = value_noise(seed + 14, xs, ys, 45.0) ** 2
        phase = (xs[None, :] * np.cos(theta) + ys[:, None] * np.sin(theta)) * np.float32(
            2 * np.pi / wavelength
        ) + 14.0 * warp
        stroma_e = stroma_e * (1 + fade * 0.4 * patches * np.sin(phase))
    cyto_e = 0.32 * (0.9 + 0.2 * slow)
    normal_w = np.clip(cellular + lymph, 0, 1)
    e = np.where(tumour, 0.30 * (0.9 + 0.2 * slow), stroma_e * (1 - normal_w) + cyto_e * normal_w)
    h = np.where(tumour, np.float32(0.14), 0.06 + 0.03 * slow)

    if d <= STAMP_MAX_DOWNSAMPLE:
        h_nuc = np.zeros((n, n), np.float32)
        cover = np.zeros((n, n), np.float32)
        x1, y1 = ox + n * d, oy + n * d
        for kind in KINDS:
            nuc = _candidates(plan, kind, ox, oy, x1, y1)
            _stamp(kind, nuc, ox, oy, d, (n, n), h_nuc, cover)
        h = h * (1 - cover) + h_nuc
        e = e * (1 - 0.6 * cover)
    else:
        h = h + _expected_stain(presence(tissue, lymph, cellular, tumour))
        e = e * (1 - 0.3 * np.clip(h, 0, 1))

    h = np.where(tissue, h, 0).astype(np.float32)
    e = np.where(tissue, e, 0).astype(np.float32)
    rgb = look.to_rgb(h, e, d)[pad : pad + size, pad : pad + size]
    rgb[plan.in_margin(xs[pad : pad + size][None, :], ys[pad : pad + size][:, None])] = 0
    return rgb
