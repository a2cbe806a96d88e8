"""Procedural H&E lymph node and metastasis, rendered per tile at physical scale.

Nuclei sit on jittered lattices in microns (one candidate per lattice cell, kept with a
probability given by the local tissue composition), so a nucleus looks the same in every
tile and level that shows it, and the same seed gives the same tissue at any mpp. While a
level's pixel is at most ``STAMP_MAX_UM`` microns, nuclei are drawn one by one (vectorised
stamps); coarser levels use their expected stain.

Tumour and normal are balanced in stain per area (dense small dark lymphocytes against
crowded large vesicular tumour nuclei with more cytoplasm) and both vary in density by
region, so first-order colour statistics barely tell them apart: structure does.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from helpkit.synth.field import hash_uniform16, value_noise, value_noise_points
from helpkit.synth.plan import SlidePlan
from helpkit.synth.stain import Look

STAMP_MAX_UM = 4.0
"""Nuclei are stamped while a level's pixel is at most this many microns (a lymphocyte
nucleus then still spans ~2 pixels); coarser levels get the expected stain."""


@dataclass(frozen=True)
class NucleusKind:
    """A population of nuclei; lengths in microns."""

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


STROMA = NucleusKind("stroma", 16.0, 3.0, 0.15, (3.0, 5.0), 0.0, 1.3, 0.0)
LYMPHOCYTE = NucleusKind("lymphocyte", 7.6, 3.4, 0.08, (1.0, 1.15), 0.0, 1.4, 0.0)
HISTIOCYTE = NucleusKind("histiocyte", 20.0, 5.2, 0.12, (1.2, 1.9), 0.08, 1.0, 0.5)
CENTROBLAST = NucleusKind("centroblast", 10.5, 4.6, 0.12, (1.0, 1.3), 0.06, 1.15, 0.45)
TUMOUR = NucleusKind("tumour", 14.0, 6.2, 0.25, (1.0, 1.6), 0.2, 1.4, 0.3)
KINDS = (STROMA, LYMPHOCYTE, HISTIOCYTE, CENTROBLAST, TUMOUR)
_INDEX = {kind.name: k for k, kind in enumerate(KINDS)}
"""Each kind's lattice hash key (by name: a slide's tumour kind is a variant of TUMOUR)."""

_TEXTURE = np.random.default_rng(20170).random((8, 128, 128)).astype(np.float32)
"""Fixed chromatin grain, indexed by a nucleus's hash and pixel offset (tile-independent)."""

_NOISE = {"density": (21, 220.0), "tumour": (22, 260.0), "nest": (23, 45.0), "cords": (24, 70.0),
          "fibrosis": (25, 200.0), "cells": (26, 7.0)}
"""Per-pixel composition noise: seed offset and spacing in microns."""


def _phenotype(seed: int) -> tuple[float, float, float, float, float]:
    """A slide's phenotype: tumour cytoplasm eosin, tumour nuclear haematoxylin gain, the
    share of tumour-infiltrating lymphocytes, the node's lymphoid cellularity and its
    lymphocytes' haematoxylin gain. Tumours and nodes differ between patients, so no one
    colour marks tumour."""
    u = hash_uniform16(seed, 19, count=5).astype(float)
    return 0.07 + 0.14 * u[0], 0.85 + 0.3 * u[1], 0.01 + 0.07 * u[2], 0.55 + 0.3 * u[3], 0.85 + 0.3 * u[4]


def slide_kinds(seed: int) -> tuple[NucleusKind, ...]:
    """``KINDS`` with the slide's haematoxylin gains for lymphocytes and tumour."""
    _, tumour_gain, _, _, lymph_gain = _phenotype(seed)
    return tuple(replace(k, stain=k.stain * lymph_gain) if k is LYMPHOCYTE
                 else replace(k, stain=k.stain * tumour_gain) if k is TUMOUR else k for k in KINDS)


def _composition(plan: SlidePlan, xs: np.ndarray, ys: np.ndarray, grid: bool) -> dict[str, np.ndarray]:
    """Tissue composition at level-0 points (or on the grid ``ys`` x ``xs``): booleans tissue
    and tumour, 0..1 weights of lymphoid tissue, sinus, stroma, histiocytes, germinal centre
    and tumour septa, and the local lymphoid and tumour cell densities."""
    um = 1.0 / plan.mpp
    sample = (lambda f: f.grid(xs, ys)) if grid else (lambda f: f.points(xs, ys))  # noqa: E731

    def noise(key: str, where: np.ndarray) -> np.ndarray:
        """Composition noise, computed only where it can matter (points) or if anywhere (grid)."""
        offset, spacing = _NOISE[key]
        if grid:
            return value_noise(plan.seed + offset, xs, ys, spacing * um) if where.any() else np.zeros(where.shape)
        out = np.zeros(len(xs), np.float32)
        out[where] = value_noise_points(plan.seed + offset, xs[where], ys[where], spacing * um)
        return out

    tissue = sample(plan.tissue) > 0
    tumour = sample(plan.tumour) > 0 if plan.tumour is not None else np.zeros_like(tissue)
    stroma = sample(plan.stroma)
    histio, germinal = sample(plan.histio), sample(plan.germinal)
    sinus = sample(plan.sinus)
    sinus = sinus * np.clip((noise("cords", sinus > 0) - 0.35) * 4.0, 0, 1) * (1 - stroma)
    normal = (1 - stroma - sinus) * (1 - histio) * (1 - germinal)
    cyto, _, tils, cellularity, _ = _phenotype(plan.seed)
    density = np.clip(cellularity + 0.45 * noise("density", tissue & ~tumour), 0, 1)
    dense = np.maximum(density, 0.95 * sample(plan.lymph))
    # desmoplastic septa between nests, scant in some regions and wide in others
    septa = tumour * np.clip((0.15 + 0.35 * noise("fibrosis", tumour) - noise("nest", tumour)) * 8.0, 0, 1)
    return {
        "tissue": tissue,
        "tumour": tumour,
        "lymph": normal * dense,
        "sinus": sinus * (1 - histio) * (1 - germinal),
        "stroma": stroma * (1 - histio) * (1 - germinal),
        "histio": histio * (1 - germinal),
        "germinal": germinal,
        "septa": septa,
        "tumour_density": 0.45 + 0.55 * noise("tumour", tumour),
        "cell_grain": noise("cells", tumour) if grid else 0.5,
        "tumour_cyto": cyto,
        "tils": tils,
    }


def presence(c: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Probability that a lattice candidate of each kind holds a nucleus, from the composition."""
    normal = c["tissue"] & ~c["tumour"]
    t = c["tumour"] * (1 - c["septa"])
    return {
        "stroma": normal * (0.6 * c["stroma"] + 0.05 * c["sinus"]) + 0.55 * c["septa"],
        "lymphocyte": normal * (0.97 * c["lymph"] + 0.25 * c["sinus"] + 0.1 * c["stroma"] + 0.12 * c["histio"]
                                + 0.3 * c["germinal"]) + 0.3 * c["septa"] + c["tils"] * t,
        "histiocyte": normal * (0.3 * c["sinus"] + 0.92 * c["histio"] + 0.1 * c["germinal"]),
        "centroblast": normal * 0.85 * c["germinal"],
        "tumour": t * 0.95 * c["tumour_density"],
    }


def _eosin(c: dict[str, np.ndarray]) -> np.ndarray:
    """Eosin of cytoplasm and matrix per region, before nuclei displace it."""
    normal = c["tissue"] & ~c["tumour"]
    tumour = c["tumour"] * (1 - c["septa"])
    return (
        normal * (0.2 * c["lymph"] + 0.11 * c["sinus"] + 0.5 * c["stroma"] + 0.38 * c["histio"]
                  + 0.26 * c["germinal"] + 0.15 * np.clip(1 - c["lymph"] - c["sinus"] - c["stroma"]
                                                          - c["histio"] - c["germinal"], 0, 1))
        # cytoplasm of cells in a sheet: uneven from cell to cell
        + tumour * c["tumour_cyto"] * (0.7 + 0.6 * c["tumour_density"]) * (0.4 + 1.2 * c["cell_grain"])
        + 0.5 * c["septa"]
    ).astype(np.float32)


def _candidates(
    plan: SlidePlan, kind: NucleusKind, x0: float, y0: float, x1: float, y1: float
) -> np.ndarray:
    """Nuclei of ``kind`` whose stamps can touch the level-0 box; rows of 8 hashed numbers
    plus level-0 centre (x, y): (n, 10)."""
    if kind.name == TUMOUR.name and plan.tumour is None:
        return np.zeros((0, 10), np.float32)
    mpp, g = plan.mpp, kind.spacing
    reach = _reach_um(kind)
    i = np.arange(int(np.floor((y0 * mpp - reach) / g)), int(np.floor((y1 * mpp + reach) / g)) + 1)
    j = np.arange(int(np.floor((x0 * mpp - reach) / g)), int(np.floor((x1 * mpp + reach) / g)) + 1)
    jj, ii = np.meshgrid(j, i)
    ii, jj = ii.ravel(), jj.ravel()
    h = hash_uniform16(plan.seed, _INDEX[kind.name], ii, jj, count=8)
    cx = ((jj + 0.1 + 0.8 * h[:, 0]) * g / mpp).astype(np.float32)
    cy = ((ii + 0.1 + 0.8 * h[:, 1]) * g / mpp).astype(np.float32)
    maybe = np.flatnonzero(plan.tissue.points(cx, cy) > 0)  # presence is 0 off tissue
    p = presence(_composition(plan, cx[maybe], cy[maybe], grid=False))[kind.name]
    keep = maybe[h[maybe, 2] < p]
    return np.column_stack([h[keep], cx[keep], cy[keep]])


def _possible(plan: SlidePlan, kind: NucleusKind, box: tuple[float, float, float, float]) -> bool:
    """False when no nucleus of ``kind`` can lie in the level-0 box (a cheap skip)."""
    if kind.name == TUMOUR.name:
        return plan.tumour is not None and plan.tumour.touches(box)
    if kind is CENTROBLAST:
        return plan.germinal.window_max(*box) > 0
    if kind is HISTIOCYTE:
        return max(f.window_max(*box) for f in (plan.sinus, plan.histio, plan.germinal)) > 0
    return True


def _fibre_angle(seed: int) -> float:
    """Direction (radians) across the collagen stripes of a slide; fibres run at +pi/2."""
    return 2 * np.pi * float(hash_uniform16(seed, 17, count=1)[0])


def _reach_um(kind: NucleusKind) -> float:
    """Largest distance, microns, from a nucleus's centre to its outline."""
    return kind.radius * np.exp(kind.size_spread) * np.sqrt(kind.aspect[1]) * (1 + 2 * kind.irregular)


def _stamp_half(kind: NucleusKind, um_px: float) -> int:
    """Largest stamp half-side of ``kind`` at ``um_px`` microns per pixel (pixels)."""
    return int(np.ceil(_reach_um(kind) / um_px)) + 1


def stamp_border(um_px: float) -> int:
    """Spare pixels around a tile for stamps of nuclei centred up to a half-side outside it:
    twice the largest half-side, plus slack for rounding."""
    return 2 * max(_stamp_half(kind, um_px) for kind in KINDS) + 4


def _stamp(kind: NucleusKind, nuc: np.ndarray, x0: float, y0: float, d: float, h_map: np.ndarray,
           border: int, along: float | None = None, mpp: float = 1.0) -> None:
    """Draw nuclei ``nuc`` (rows from ``_candidates``) into the haematoxylin map in place.

    ``d`` is the level downsample (centres are level-0 pixels), ``mpp`` the level-0 microns
    per pixel (sizes are microns). ``h_map`` covers the tile plus ``border`` pixels on each
    side (``stamp_border(mpp * d)``), so stamps need no clipping. ``along`` orients the
    nuclei (within +-0.4 rad) instead of at random.
    """
    um_px = mpp * d
    rows, cols = h_map.shape
    x0, y0 = x0 - border * d, y0 - border * d
    hsh = nuc[:, :8].astype(np.float32)
    cx, cy = (nuc[:, 8] - x0) / d, (nuc[:, 9] - y0) / d
    r = kind.radius * np.exp(kind.size_spread * (2 * hsh[:, 3] - 1)) / np.float32(um_px)
    aspect = kind.aspect[0] + (kind.aspect[1] - kind.aspect[0]) * hsh[:, 4]
    a, b = r * np.sqrt(aspect), r / np.sqrt(aspect)
    # each outline's reach: the long semi-axis grown by its wobble (|cos| <= 1), +1 for the
    # antialiased edge; nuclei that cannot touch the tile are skipped
    half = np.ceil(a * (1 + kind.irregular * (hsh[:, 6] + hsh[:, 7]))).astype(np.int32) + 1
    touches = ((cx + half >= border) & (cx - half < cols - border)
               & (cy + half >= border) & (cy - half < rows - border))
    angle = np.float32(np.pi) * hsh[:, 5] if along is None else np.float32(along) + 0.8 * (hsh[:, 5] - 0.5)
    # a few box sizes, each fitted to its nuclei, instead of one box fitted to the largest
    box = np.minimum(-(-half // 4) * 4, np.maximum(half, _stamp_half(kind, um_px)))
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
    size = min(2 * half + 1, _TEXTURE.shape[1])
    grain = np.ones((len(cx), 2 * half + 1, 2 * half + 1), np.float32) * 0.5
    grain[:, :size, :size] = _TEXTURE[(hsh[:, 6] * len(_TEXTURE)).astype(np.int32), :size, :size]
    body = kind.stain * (0.8 + 0.4 * hsh[:, 7])[:, None, None]
    if kind.vesicular:
        rim = np.minimum(rn, 1) ** 4
        nucleolus = np.exp(((u - 0.25) ** 2 + (v + 0.1) ** 2) * np.float32(-33.0))
        body = body * (1 - kind.vesicular * (0.7 - 0.7 * rim - 0.8 * nucleolus)) * (0.6 + 0.8 * grain)
    else:
        body = body * (0.85 + 0.3 * grain)
    flat = (py0 * cols + px0)[:, None, None] + (off[:, None] * cols + off[None, :])[None]
    np.maximum.at(h_map.ravel(), flat.ravel(), (cov * body).astype(np.float32).ravel())


def _coverage(kind: NucleusKind, p: np.ndarray) -> np.ndarray:
    """Expected share of area covered by nuclei of ``kind`` at candidate probability ``p``."""
    area = np.pi * kind.radius**2 * np.cosh(2 * kind.size_spread) / kind.spacing**2
    return 1 - np.exp(-p * area)


def _expected(p: dict[str, np.ndarray], kinds: tuple[NucleusKind, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Mean nuclear haematoxylin and nuclear cover per pixel, for levels where nuclei are
    sub-pixel (the stamped levels' averages)."""
    h = np.zeros_like(next(iter(p.values())), dtype=np.float32)
    cover = np.zeros_like(h)
    for kind in kinds:
        share = _coverage(kind, p[kind.name])
        h += share * kind.stain * (1 - 0.45 * kind.vesicular)
        cover += share
    return h, np.minimum(cover, 1)


def render_tile(
    plan: SlidePlan, look: Look, level_downsample: float, x0: float, y0: float, size: int
) -> np.ndarray:
    """RGB uint8 (size, size, 3) of the tile whose top-left is level-0 (x0, y0)."""
    d = float(level_downsample)
    um, um_px = 1.0 / plan.mpp, plan.mpp * d
    art = plan.artefacts if plan.artefacts is not None and not plan.artefacts.empty else None
    pad = int(np.ceil(3 * look.blur0 / d)) if look.blur0 / d > 0.25 else 0
    if art is not None:  # fold copies and focus blur read this far
        pad += art.pad_px(d, (x0, y0, x0 + size * d, y0 + size * d))
    n = size + 2 * pad
    ox, oy = x0 - pad * d, y0 - pad * d
    xs = (ox + (np.arange(n) + 0.5) * d).astype(np.float32)
    ys = (oy + (np.arange(n) + 0.5) * d).astype(np.float32)
    c = _composition(plan, xs, ys, grid=True)
    kinds = slide_kinds(plan.seed)

    seed = plan.seed
    # uneven eosin over tens and hundreds of microns, shared by normal tissue and tumour
    slow = value_noise(seed + 11, xs, ys, 80.0 * um)
    e = _eosin(c) * (0.85 + 0.3 * slow) * (0.6 + 0.8 * value_noise(seed + 16, xs, ys, 200.0 * um))
    wavelength = 6.0  # microns between collagen stripes
    fade = float(np.clip((wavelength / um_px - 2.0) / 2.0, 0.0, 1.0))
    if fade > 0:
        # wavy collagen: stripes across one direction per slide, bent by smooth noise. The
        # direction is constant so the stripe frequency stays ~1/wavelength everywhere (a
        # spatially varying angle times a large coordinate would alias into moire).
        angle = _fibre_angle(seed)
        bend = um * (65.0 * value_noise(seed + 12, xs, ys, 95.0 * um) + 8.0 * value_noise(seed + 13, xs, ys, 18.0 * um))
        along = xs[None, :] * np.float32(np.cos(angle)) + ys[:, None] * np.float32(np.sin(angle))
        patches = value_noise(seed + 14, xs, ys, 12.0 * um) ** 2
        stripes = np.sin((along + bend) * np.float32(2 * np.pi / (wavelength * um)))
        fibrous = np.clip(c["stroma"] + c["septa"], 0, 1)
        e = e * (1 + fade * 0.5 * fibrous * patches * stripes)
    # uneven staining, shared by normal tissue and tumour: background haematoxylin drifts
    # independently of eosin over a few hundred microns
    h = 0.03 + 0.08 * value_noise(seed + 15, xs, ys, 150.0 * um)

    if um_px <= STAMP_MAX_UM:
        border = stamp_border(um_px)
        h_nuc = np.zeros((n + 2 * border, n + 2 * border), np.float32)
        x1, y1 = ox + n * d, oy + n * d
        for kind in kinds:
            reach = _reach_um(kind) * um
            if not _possible(plan, kind, (ox - reach, oy - reach, x1 + reach, y1 + reach)):
                continue
            along = _fibre_angle(seed) + np.pi / 2 if kind is STROMA else None
            _stamp(kind, _candidates(plan, kind, ox, oy, x1, y1), ox, oy, d, h_nuc, border, along, plan.mpp)
        h_nuc = h_nuc[border:-border, border:-border]
        cover = np.minimum(h_nuc * 2.5, 1.0)  # where a nucleus is, cytoplasm is not
        h = h * (1 - cover) + h_nuc
        e = e * (1 - 0.6 * cover)
    else:
        h_nuc, cover = _expected(presence(c), kinds)
        h = h * (1 - cover) + h_nuc
        e = e * (1 - 0.6 * cover)

    h = np.where(c["tissue"], h, 0).astype(np.float32)
    e = np.where(c["tissue"], e, 0).astype(np.float32)
    if art is not None:
        h, e = art.stain(xs, ys, h, e)
    rgb = look.to_rgb(h, e, d)
    if art is not None:
        rgb = art.optics(rgb, xs, ys, d)
    rgb = rgb[pad : pad + size, pad : pad + size]
    rgb[plan.in_margin(xs[pad : pad + size][None, :], ys[pad : pad + size][:, None])] = 0
    return rgb
