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
PARENCHYMA = NucleusKind("parenchyma", 16.0, 5.2, 0.15, (1.0, 1.4), 0.0, 1.3, 0.15)
LYMPHOCYTE = NucleusKind("lymphocyte", 10.0, 3.3, 0.1, (1.0, 1.15), 0.0, 1.7, 0.0)
TUMOUR = NucleusKind("tumour", 24.0, 8.5, 0.35, (1.0, 1.8), 0.22, 1.0, 0.7)
KINDS = (STROMA, PARENCHYMA, LYMPHOCYTE, TUMOUR)

_TEXTURE = np.random.default_rng(20170).random((8, 128, 128)).astype(np.float32)
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
    reach = _stamp_half(kind, 1.0)
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


def _fibre_angle(seed: int) -> float:
    """Direction (radians) across the collagen stripes of a slide; fibres run at +pi/2."""
    return 2 * np.pi * float(hash_uniform16(seed, 17, count=1)[0])


def _stamp_half(kind: NucleusKind, d: float) -> int:
    """Largest stamp half-side of ``kind`` at downsample ``d`` (pixels)."""
    a_max = kind.radius * np.exp(kind.size_spread) * np.sqrt(kind.aspect[1]) / d
    return int(np.ceil(a_max * (1 + 2 * kind.irregular))) + 1


def stamp_border(d: float) -> int:
    """Spare pixels around a tile for stamps of nuclei centred up to a half-side outside it:
    twice the largest half-side, plus slack for rounding."""
    return 2 * max(_stamp_half(kind, d) for kind in KINDS) + 4


def _stamp(kind: NucleusKind, nuc: np.ndarray, x0: float, y0: float, d: float, h_map: np.ndarray,
           border: int, along: float | None = None) -> None:
    """Draw nuclei ``nuc`` (rows from ``_candidates``) into the haematoxylin map in place.

    ``h_map`` covers the tile plus ``border`` pixels on each side (``stamp_border``), so
    stamps need no clipping. ``along`` orients the nuclei
    (within +-0.4 rad) instead of at random.
    """
    rows, cols = h_map.shape
    x0, y0 = x0 - border * d, y0 - border * d
    hsh = nuc[:, :8].astype(np.float32)
    cx, cy = (nuc[:, 8] - x0) / d, (nuc[:, 9] - y0) / d
    r = kind.radius * np.exp(kind.size_spread * (2 * hsh[:, 3] - 1)) / np.float32(d)
    aspect = kind.aspect[0] + (kind.aspect[1] - kind.aspect[0]) * hsh[:, 4]
    a, b = r * np.sqrt(aspect), r / np.sqrt(aspect)
    # each outline's reach: the long semi-axis grown by its wobble (|cos| <= 1), +1 for the
    # antialiased edge; nuclei that cannot touch the tile are skipped
    half = np.ceil(a * (1 + kind.irregular * (hsh[:, 6] + hsh[:, 7]))).astype(np.int32) + 1
    touches = ((cx + half >= border) & (cx - half < cols - border)
               & (cy + half >= border) & (cy - half < rows - border))
    angle = np.float32(np.pi) * hsh[:, 5] if along is None else np.float32(along) + 0.8 * (hsh[:, 5] - 0.5)
    # a few box sizes, each fitted to its nuclei, instead of one box fitted to the largest
    box = np.minimum(-(-half // 4) * 4, np.maximum(half, _stamp_half(kind, d)))
    for side in np.unique(box[touches]):
        sel = touches & (box == side)
        _draw(kind, h_map, cx[sel], cy[sel], a[sel], b[sel], angle[sel], hsh[sel], int(side))


def _draw(kind: NucleusKind, h_map: np.ndarray, cx: np.ndarray, cy: np.ndarray, a: np.ndarray,
          b: np.ndarray, angle: np.ndarray, hsh: np.ndarray, half: int) -> None:
    """Stamp nuclei centred at pixel (cx, cy) with semi-axes (a, b) in boxes of +-``half``:
    a few array operations over (nuclei, box, box); overlaps keep the darker value."""
    cols = h_map.shape[1]
    off = np.arange(-half, half + 1, dtype=np.int32)
    px0, py0 = np.floor(cx).astype(np.int32), np.floor(cy).astype(np.int32)
    fx, fy = (px0 + 0.5 - cx).astype(np.float32), (py0 + 0.5 - cy).astype(np.float32)
    offf = off.astype(np.float32)  # float32 throughout: half the memory traffic of float64
    dx = fx[:, None, None] + offf[None, None, :]
    dy = fy[:, None, None] + offf[None, :, None]
    c, s = (np.cos(angle) / a)[:, None, None], (np.sin(angle) / a)[:, None, None]
    c2, s2 = (np.cos(angle) / b)[:, None, None], (np.sin(angle) / b)[:, None, None]
    u, v = dx * c + dy * s, dy * c2 - dx * s2
    rn = np.sqrt(u * u + v * v)
    if kind.irregular:
        phi = np.arctan2(v, u)
        w6, w7 = hsh[:, 6, None, None], hsh[:, 7, None, None]
        rn /= 1 + kind.irregular * (np.cos(2 * phi + 6.283 * w6) * w6 + np.cos(3 * phi + 6.283 * w7) * w7)
    edge = np.minimum(a, b)[:, None, None]
    cov = np.clip((1 - rn) * edge + 0.5, 0, 1)
    grain = _TEXTURE[(hsh[:, 6] * len(_TEXTURE)).astype(np.int32), : 2 * half + 1, : 2 * half + 1]
    body = kind.stain * (0.8 + 0.4 * hsh[:, 7])[:, None, None]
    if kind.vesicular:
        rim = np.minimum(rn, 1) ** 4
        nucleolus = np.exp(((u - 0.25) ** 2 + (v + 0.1) ** 2) * np.float32(-33.0))
        body = body * (1 - kind.vesicular * (0.7 - 0.7 * rim - 0.8 * nucleolus)) * (0.6 + 0.8 * grain)
    else:
        body = body * (0.85 + 0.3 * grain)
    flat = (py0 * cols + px0)[:, None, None] + (off[:, None] * cols + off[None, :])[None]
    np.maximum.at(h_map.ravel(), flat.ravel(), (cov * body).astype(np.float32).ravel())


def _expected_stain(p: dict[str, np.ndarray]) -> np.ndarray:
    """Mean haematoxylin of nuclei per pixel, for levels where nuclei are sub-pixel."""
    total = np.zeros_like(next(iter(p.values())), dtype=np.float32)
    for kind in KINDS:
        area = 0.85 * np.pi * kind.radius**2 * np.cosh(2 * kind.size_spread) / kind.spacing**2
        mean = kind.stain * (1 - 0.75 * kind.vesicular)
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
        # wavy collagen: stripes across one direction per slide, bent by smooth noise. The
        # direction is constant so the stripe frequency stays ~1/wavelength everywhere (a
        # spatially varying angle times a large coordinate would alias into moire).
        angle = _fibre_angle(seed)
        bend = 260.0 * value_noise(seed + 12, xs, ys, 380.0) + 30.0 * value_noise(seed + 13, xs, ys, 70.0)
        along = xs[None, :] * np.float32(np.cos(angle)) + ys[:, None] * np.float32(np.sin(angle))
        patches = value_noise(seed + 14, xs, ys, 45.0) ** 2
        stripes = np.sin((along + bend) * np.float32(2 * np.pi / wavelength))
        stroma_e = stroma_e * (1 + fade * 0.4 * patches * stripes)
    # uneven staining, shared by normal tissue and tumour: eosin and background
    # haematoxylin drift independently over a few hundred microns
    drift = value_noise(seed + 15, xs, ys, 500.0)
    cyto_e = 0.32 * (0.8 + 0.4 * slow)
    normal_w = np.clip(cellular + lymph, 0, 1)
    e = np.where(tumour, 0.40 * (0.8 + 0.4 * slow), stroma_e * (1 - normal_w) + cyto_e * normal_w)
    h = 0.02 + 0.1 * drift

    if d <= STAMP_MAX_DOWNSAMPLE:
        border = stamp_border(d)
        h_nuc = np.zeros((n + 2 * border, n + 2 * border), np.float32)
        x1, y1 = ox + n * d, oy + n * d
        for kind in KINDS:
            along = _fibre_angle(seed) + np.pi / 2 if kind is STROMA else None
            _stamp(kind, _candidates(plan, kind, ox, oy, x1, y1), ox, oy, d, h_nuc, border, along)
        h_nuc = h_nuc[border:-border, border:-border]
        cover = np.minimum(h_nuc * 2.5, 1.0)  # where a nucleus is, cytoplasm is not
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
