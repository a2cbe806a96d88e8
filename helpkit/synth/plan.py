"""The layout of one synthetic slide: tissue, lymph-node architecture, mimics and tumour.

Every length is drawn in microns and converted with the slide's ``mpp`` (level-0 um/px),
so the same seed at two resolutions gives the same tissue in microns. Tissue and
architecture are low-resolution arrays (``Plan2D``) sampled bilinearly at level-0
coordinates; tumour deposits are analytic (``Deposits``), so isolated tumour cells stay
exact on any slide size. The renderer and the masks read the same fields, so the tumour
mask marks exactly the tumour that is drawn.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image
from scipy import ndimage

from helpkit.errors import HelpkitError
from helpkit.io import atomic_path
from helpkit.synth.field import Plan2D, value_noise, value_noise_points

if TYPE_CHECKING:
    from helpkit.synth.artefacts import ArtefactRates, Artefacts

PLAN_NODES = 512
"""Plan arrays have at most this many nodes a side (the cell grows with the slide)."""

MIN_CELL_UM = 8.0
"""Smallest plan cell, microns: finer than any architecture the plan carries."""

TUMOUR_INSET = 0.08
"""Tumour stays where the tissue field exceeds this, so it never touches the tissue edge."""

DEPOSIT_CLASSES = ("itc", "micro", "macro")

DEPOSIT_UM = {"itc": (30.0, 170.0), "micro": (300.0, 1750.0), "macro": (2300.0, 1e9)}
"""Accepted longest box side of a slide's largest deposit per class, microns: kept off
CAMELYON's limits (0.2 mm, 2 mm) so mask quantisation cannot move a deposit across one."""

SEMI_AXIS_UM = {"itc": (15.0, 60.0), "micro": (190.0, 700.0), "macro": (1250.0, 2000.0)}
"""Range of a deposit ellipse's long semi-axis per class, microns (before its wobble)."""

WOBBLE = {"itc": 0.25, "micro": 0.25, "macro": 0.15}
"""Relative outline wobble of a deposit (its radius varies by up to this fraction)."""

USABLE = 0.74
"""Share of a slide side that a deposit may span: the side less its edges, the widest
non-scanned margin and a band where the tissue edge would cut tumour."""

EDGE_PAD = 0.03
"""Deposits keep this share of the slide side from the tissue bounds (see USABLE)."""

GAP_UM = 120.0
"""Smallest gap between deposits' boxes, so two deposits never join into one region."""


def _reach(kind: str, a: float) -> float:
    """Half-side of the square a deposit of long semi-axis ``a`` may fill, with its wobble."""
    return a * (1 + WOBBLE[kind]) * 1.05


def min_size(deposit: str, mpp: float) -> int:
    """Smallest slide side (level-0 px at ``mpp``) that holds a deposit of class ``deposit``."""
    return int(np.ceil(2 * _reach(deposit, SEMI_AXIS_UM[deposit][0]) / USABLE / mpp))


@dataclass(frozen=True)
class Deposit:
    """One tumour deposit: a wobbly ellipse in level-0 pixels."""

    cx: float
    cy: float
    a: float
    b: float
    angle: float
    wobble: float
    seed: int

    def reach(self) -> float:
        """Half-side of a box around the centre that holds the whole deposit."""
        return self.a * (1 + self.wobble) + 1.0

    def box(self) -> tuple[float, float, float, float]:
        r = self.reach()
        return self.cx - r, self.cy - r, self.cx + r, self.cy + r

    def value(self, xs: np.ndarray, ys: np.ndarray, grid: bool) -> np.ndarray:
        """> 0 inside the deposit, on the grid ``ys`` x ``xs`` or at points (``xs[k]``, ``ys[k]``)."""
        if grid:
            gx, gy = xs[None, :], ys[:, None]
            noise = value_noise(self.seed, xs, ys, 0.6 * self.b)
        else:
            gx, gy = xs, ys
            noise = value_noise_points(self.seed, xs, ys, 0.6 * self.b)
        c, s = np.cos(self.angle), np.sin(self.angle)
        dx, dy = gx - self.cx, gy - self.cy
        d = np.sqrt(((dx * c + dy * s) / self.a) ** 2 + ((-dx * s + dy * c) / self.b) ** 2)
        return (1.0 - d * (1.0 + self.wobble * (2.0 * noise - 1.0))).astype(np.float32)


def _overlap(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> bool:
    return a[0] <= b[2] and b[0] <= a[2] and a[1] <= b[3] and b[1] <= a[3]


@dataclass
class Deposits:
    """Tumour as a field: > 0 inside a deposit and inside tissue (capped like the old plan)."""

    items: list[Deposit]
    tissue: Plan2D

    def _cap(self, values: np.ndarray, tissue: np.ndarray) -> np.ndarray:
        return np.minimum(values, 4.0 * (tissue - TUMOUR_INSET))

    def grid(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """Values on the grid ``ys`` x ``xs`` (ascending level-0 coordinates)."""
        out = np.full((len(ys), len(xs)), -1.0, np.float32)
        for dep in self.items:
            x0, y0, x1, y1 = dep.box()
            j0, j1 = np.searchsorted(xs, [x0, x1])
            i0, i1 = np.searchsorted(ys, [y0, y1])
            if j0 >= j1 or i0 >= i1:
                continue
            sx, sy = xs[j0:j1], ys[i0:i1]
            v = self._cap(dep.value(sx, sy, grid=True), self.tissue.grid(sx, sy))
            np.maximum(out[i0:i1, j0:j1], v, out=out[i0:i1, j0:j1])
        return out

    def touches(self, box: tuple[float, float, float, float]) -> bool:
        """Whether any deposit's box meets the level-0 box (x0, y0, x1, y1)."""
        return any(_overlap(dep.box(), box) for dep in self.items)

    def points(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """Values at scattered points (``xs[k]``, ``ys[k]``)."""
        out = np.full(len(xs), -1.0, np.float32)
        for dep in self.items:
            x0, y0, x1, y1 = dep.box()
            sel = np.flatnonzero((xs >= x0) & (xs <= x1) & (ys >= y0) & (ys <= y1))
            if len(sel):
                v = self._cap(dep.value(xs[sel], ys[sel], grid=False), self.tissue.points(xs[sel], ys[sel]))
                out[sel] = np.maximum(out[sel], v)
        return out


@dataclass
class SlidePlan:
    """Level-0 layout of one slide; every field is positive where its feature is present."""

    width: int
    height: int
    seed: int
    tissue: Plan2D
    """> 0 inside tissue."""
    tumour: Deposits | None
    """> 0 inside tumour (only where tissue > TUMOUR_INSET); None for negative slides."""
    lymph: Plan2D
    """0..1 weight of lymphoid follicles (densest lymphocytes)."""
    sinus: Plan2D
    """0..1 weight of medulla with sinuses (loose, pale, histiocytes)."""
    stroma: Plan2D
    """0..1 weight of capsule and trabeculae (collagen, spindle nuclei)."""
    histio: Plan2D
    """0..1 weight of histiocyte clusters (a tumour mimic; zero without mimics)."""
    germinal: Plan2D
    """0..1 weight of germinal centres with large pale nuclei (a tumour mimic)."""
    margin: tuple[int, int]
    """(left, top) widths of the black non-scanned band, level-0 pixels."""
    mpp: float = 0.5
    """Level-0 microns per pixel."""
    deposit: str | None = None
    """Planned class of the largest deposit: 'itc', 'micro', 'macro'; None when negative."""
    mimics: bool = False
    artefacts: Artefacts | None = field(default=None, repr=False)
    """Drawn artefacts (``helpkit.synth.artefacts``), None when none were asked for."""

    def in_margin(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """True where level-0 points (broadcast) lie in the non-scanned margin."""
        return (np.asarray(xs) < self.margin[0]) | (np.asarray(ys) < self.margin[1])

    def _mask(self, downsample: int, cell: object) -> np.ndarray:
        """A boolean mask at ``downsample`` of level 0, ``cell(xs, ys)`` per strip of rows."""
        h, w = -(-self.height // downsample), -(-self.width // downsample)
        mask = np.zeros((h, w), dtype=bool)
        xs = ((np.arange(w) + 0.5) * downsample).astype(np.float32)
        strip = max(1, 4_000_000 // max(w, 1))
        for r in range(0, h, strip):
            ys = ((np.arange(r, min(r + strip, h)) + 0.5) * downsample).astype(np.float32)
            mask[r : r + len(ys)] = cell(xs, ys)
        return mask

    def tumour_mask(self, downsample: int) -> np.ndarray:
        """Boolean tumour mask at ``downsample`` of level 0 (pixel centres sampled)."""
        if self.tumour is None:
            h, w = -(-self.height // downsample), -(-self.width // downsample)
            return np.zeros((h, w), dtype=bool)
        return self._mask(downsample, lambda xs, ys: self.tumour.grid(xs, ys) > 0)

    def tissue_mask(self, downsample: int) -> np.ndarray:
        """Boolean truth tissue at ``downsample``: the tissue field, less ice-crystal holes and
        the non-scanned margin (what a tissue detector should find)."""

        def cell(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
            tissue = (self.tissue.grid(xs, ys) > 0) & ~self.in_margin(xs[None, :], ys[:, None])
            if self.artefacts is not None and not self.artefacts.empty:
                tissue &= ~self.artefacts.holes(xs, ys)
            return tissue

        return self._mask(downsample, cell)


def _ellipse_distance(
    gx: np.ndarray, gy: np.ndarray, cx: float, cy: float, rx: float, ry: float, angle: float
) -> np.ndarray:
    """Normalised elliptical distance: 1 on the ellipse's outline."""
    c, s = np.cos(angle), np.sin(angle)
    dx, dy = gx - cx, gy - cy
    return np.sqrt(((dx * c + dy * s) / rx) ** 2 + ((-dx * s + dy * c) / ry) ** 2)


def make_plan(
    width: int,
    height: int,
    seed: int,
    positive: bool,
    *,
    mpp: float = 0.5,
    deposit: str | None = None,
    mimics: bool = False,
    artefacts: ArtefactRates | None = None,
) -> SlidePlan:
    """Draw a slide layout: tissue pieces with lymph-node architecture, a margin, tumour
    deposits whose largest is of class ``deposit`` if positive (None: macro or micro at
    random, macro only where it fits), tumour mimics if ``mimics``, and ``artefacts``.

    Raises HelpkitError for an unknown class, a deposit on a negative slide, or a slide too
    small at ``mpp`` for its deposit's class (the message names the smallest side).
    """
    if deposit is not None and deposit not in DEPOSIT_CLASSES:
        raise HelpkitError(f"unknown deposit class {deposit!r}: choose one of {', '.join(DEPOSIT_CLASSES)}")
    if deposit is not None and not positive:
        raise HelpkitError(f"a negative slide has no deposit, got deposit={deposit!r}")
    if mpp <= 0:
        raise HelpkitError(f"mpp must be > 0, got {mpp}")
    fits = [k for k in DEPOSIT_CLASSES if min(width, height) >= min_size(k, mpp)]
    if deposit is not None and deposit not in fits:
        raise HelpkitError(
            f"a {deposit} deposit needs a slide of at least {min_size(deposit, mpp)} px a side at "
            f"{mpp} um/px; got {width}x{height}"
        )
    rng = np.random.default_rng([seed, 0x5EED])
    if positive and deposit is None:
        smaller = [k for k in fits if k != "macro"]
        deposit = "macro" if "macro" in fits and rng.random() < 0.5 else smaller[-1]
    um = 1.0 / mpp  # level-0 pixels per micron
    side = max(width, height)
    cell_um = max(MIN_CELL_UM, float(2 ** int(np.ceil(np.log2(side * mpp / PLAN_NODES)))))
    cell = cell_um * um
    ny, nx = int(np.ceil(height / cell)), int(np.ceil(width / cell))
    xs, ys = (np.arange(nx) + 0.5) * cell, (np.arange(ny) + 0.5) * cell
    gx, gy = np.meshgrid(xs, ys)

    # the non-scanned band of an MRXS slide: along the left edge, the top edge, or both
    sides = ("left", "top", "both")[int(rng.integers(3))]
    margin = (
        int(rng.uniform(0.03, 0.08) * width) if sides != "top" else 0,
        int(rng.uniform(0.03, 0.08) * height) if sides != "left" else 0,
    )
    scanned = (gx >= margin[0]) & (gy >= margin[1])
    bounds = (margin[0] + 0.06 * width, margin[1] + 0.06 * height, 0.94 * width, 0.94 * height)
    left, top, right, bottom = bounds

    blob = np.full(gx.shape, -1.0)
    for _ in range(int(rng.integers(1, 4))):
        cx, cy = rng.uniform(left + 0.15 * width, right - 0.15 * width), rng.uniform(
            top + 0.15 * height, bottom - 0.15 * height
        )
        rx, ry = rng.uniform(0.14, 0.32) * width, rng.uniform(0.14, 0.32) * height
        d = _ellipse_distance(gx, gy, cx, cy, rx, ry, rng.uniform(0, np.pi))
        blob = np.maximum(blob, 1.0 - d)
    noise_seed = int(rng.integers(2**31))
    rough = (
        0.5 * (value_noise(noise_seed, xs, ys, side / 5) - 0.5)
        + 0.25 * (value_noise(noise_seed + 1, xs, ys, side / 18) - 0.5)
        + 0.1 * (value_noise(noise_seed + 2, xs, ys, side / 60) - 0.5)
    )
    holes = np.clip(value_noise(noise_seed + 3, xs, ys, side / 25) - 0.72, 0, None) * 2.0
    edge = np.minimum.reduce([gx - left, right - gx, gy - top, bottom - gy]) / (0.05 * side)
    # a soft penalty towards the slide's edges bends outlines inwards; the hard cap after it
    # keeps tissue off the edges and out of the non-scanned margin
    raw = blob + rough - holes - 2.0 * np.clip(1.0 - edge / 3.0, 0, 1) ** 2
    cap = np.clip(edge, -1, 1)

    items: list[Deposit] = []
    if positive:
        items = _deposits(rng, deposit, bounds, raw, gx, gy, um, noise_seed + 5)
        for dep in items:  # tissue always surrounds a deposit
            d = _ellipse_distance(gx, gy, dep.cx, dep.cy, 1.6 * dep.a + 2 * cell, 1.6 * dep.b + 2 * cell, dep.angle)
            raw = np.maximum(raw, 1.5 * (1.0 - d) + rough)
    tissue = np.where(scanned, np.minimum(raw, cap), -1.0).astype(np.float32)
    tissue_plan = Plan2D(tissue, cell)

    arch = _architecture(rng, gx, gy, xs, ys, tissue, um, noise_seed + 6, mimics)
    tumour = Deposits(items, tissue_plan) if positive else None
    plan = SlidePlan(
        width=width,
        height=height,
        seed=seed,
        tissue=tissue_plan,
        tumour=tumour,
        **{k: Plan2D(v, cell) for k, v in arch.items()},
        margin=margin,
        mpp=float(mpp),
        deposit=deposit if positive else None,
        mimics=mimics,
    )
    if artefacts is not None and artefacts.any():
        from helpkit.synth.artefacts import draw_artefacts

        plan.artefacts = draw_artefacts(seed, artefacts, width, height, mpp, tissue_plan)
    return plan


def _architecture(
    rng: np.random.Generator,
    gx: np.ndarray,
    gy: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    tissue: np.ndarray,
    um: float,
    noise_seed: int,
    mimics: bool,
) -> dict[str, np.ndarray]:
    """Lymph-node architecture on the plan grid: follicles, medulla with sinuses, capsule and
    trabeculae, and (with ``mimics``) histiocyte clusters and germinal centres."""
    inside = tissue > 0
    area_mm2 = inside.sum() * ((xs[1] - xs[0] if len(xs) > 1 else 1.0) / um) ** 2 / 1e6
    nodes = np.argwhere(tissue > 0.15)

    def discs(count: int, r_um: tuple[float, float]) -> tuple[np.ndarray, list[tuple[float, float, float]]]:
        out, centres = np.zeros_like(tissue), []
        for _ in range(count if len(nodes) else 0):
            i, j = nodes[rng.integers(len(nodes))]
            r = rng.uniform(*r_um) * um
            d = _ellipse_distance(gx, gy, xs[j], ys[i], r, r * rng.uniform(0.7, 1.0), rng.uniform(0, np.pi))
            out = np.maximum(out, np.clip((1.0 - d) * 4.0, 0, 1))
            centres.append((xs[j], ys[i], r))
        return out, centres

    lymph, follicles = discs(int(rng.poisson(1 + 2.0 * area_mm2)), (120.0, 320.0))
    medulla = np.clip((value_noise(noise_seed, xs, ys, 500 * um) - 0.45) * 4.0, 0, 1)
    cell_um = (xs[1] - xs[0] if len(xs) > 1 else 1.0) / um
    depth_um = ndimage.distance_transform_edt(inside) * cell_um
    capsule = np.clip(1.5 - depth_um / 20.0, 0, 1) * inside
    ridge = 1.0 - np.abs(value_noise(noise_seed + 1, xs, ys, 700 * um) - 0.5) * 2
    trabeculae = np.clip((ridge - 0.93) * 12.0, 0, 1)
    stroma = np.clip(capsule + trabeculae, 0, 1)
    histio = np.zeros_like(tissue)
    germinal = np.zeros_like(tissue)
    if mimics:
        histio, _ = discs(int(rng.integers(2, 5) + rng.poisson(1.5 * area_mm2)), (60.0, 220.0))
        for cx, cy, r in follicles[: max(1, len(follicles) * 2 // 3)]:
            d = _ellipse_distance(gx, gy, cx, cy, 0.65 * r, 0.55 * r, rng.uniform(0, np.pi))
            germinal = np.maximum(germinal, np.clip((1.0 - d) * 3.0, 0, 1))
        if not follicles:
            germinal, _ = discs(int(rng.integers(1, 4)), (90.0, 200.0))
    return {
        "lymph": lymph.astype(np.float32),
        "sinus": (medulla * (1 - lymph)).astype(np.float32),
        "stroma": stroma.astype(np.float32),
        "histio": histio.astype(np.float32),
        "germinal": germinal.astype(np.float32),
    }


def _deposits(
    rng: np.random.Generator,
    deposit: str,
    bounds: tuple[float, float, float, float],
    raw: np.ndarray,
    gx: np.ndarray,
    gy: np.ndarray,
    um: float,
    noise_seed: int,
) -> list[Deposit]:
    """Deposits whose largest is of class ``deposit``: macro slides may add micro deposits and
    ITCs, micro slides ITCs, ITC slides a few clusters of a few to a few dozen cells."""
    pad = EDGE_PAD * max(gx.max(), gy.max())
    left, top, right, bottom = bounds[0] + pad, bounds[1] + pad, bounds[2] - pad, bounds[3] - pad
    extra = {"macro": ["micro", "micro", "itc", "itc"], "micro": ["itc", "itc", "itc"], "itc": ["itc"] * 4}
    sizes = [deposit] + [k for k in extra[deposit] if rng.random() < 0.45]
    deep = np.column_stack([gx[raw > 0.35], gy[raw > 0.35]])
    room = min(right - left, bottom - top) / 2
    placed: list[Deposit] = []
    for k, kind in enumerate(sizes):
        lo, hi = SEMI_AXIS_UM[kind]
        hi = min(hi * um, room / _reach(kind, 1.0))
        for _ in range(200):
            a = float(np.exp(rng.uniform(np.log(lo * um), np.log(max(hi, lo * um)))))
            r = _reach(kind, a)
            if kind == "macro":  # along the slide's longer side, so its box is long
                long_axis = 0.0 if right - left >= bottom - top else np.pi / 2
                b, angle = a * rng.uniform(0.55, 0.8), long_axis + rng.uniform(-0.15, 0.15)
            else:
                b, angle = a * rng.uniform(0.6, 1.0), rng.uniform(0, np.pi)
            inner = deep[(deep[:, 0] >= left + r) & (deep[:, 0] <= right - r)
                         & (deep[:, 1] >= top + r) & (deep[:, 1] <= bottom - r)]
            if kind != "macro" and len(inner):
                cx, cy = inner[rng.integers(len(inner))]
            else:
                cx, cy = rng.uniform(left + r, right - r), rng.uniform(top + r, bottom - r)
            dep = Deposit(float(cx), float(cy), float(a), float(b), float(angle), WOBBLE[kind], noise_seed + k)
            gap = GAP_UM * um
            if all(_apart(dep, other, gap) for other in placed) and _in_class(dep, kind, um):
                placed.append(dep)
                break
        else:
            if k == 0:
                raise HelpkitError(f"could not place a {kind} deposit on this slide")
    return placed


def _apart(a: Deposit, b: Deposit, gap: float) -> bool:
    """True when the boxes of two deposits are at least ``gap`` apart."""
    ax0, ay0, ax1, ay1 = a.box()
    bx0, by0, bx1, by1 = b.box()
    return ax0 > bx1 + gap or bx0 > ax1 + gap or ay0 > by1 + gap or by0 > ay1 + gap


def _longest_um(deposits: list[Deposit], tissue: Plan2D | None, um: float) -> float:
    """Longest box side, microns, of the connected tumour pieces drawn by ``deposits`` (each
    measured on its own fine grid; boxes are kept apart, so pieces never join)."""
    longest = 0.0
    for dep in deposits:
        x0, y0, x1, y1 = dep.box()
        step = max(dep.b / 40, 0.5)
        sx, sy = np.arange(x0, x1, step), np.arange(y0, y1, step)
        v = dep.value(sx, sy, grid=True)
        if tissue is not None:
            v = np.minimum(v, 4.0 * (tissue.grid(sx, sy) - TUMOUR_INSET))
        labels, _ = ndimage.label(v > 0, structure=np.ones((3, 3), bool))
        for box in ndimage.find_objects(labels):
            if box is not None:
                longest = max(longest, max(s.stop - s.start for s in box) * step / um)
    return longest


def _in_class(dep: Deposit, kind: str, um: float) -> bool:
    """Whether one deposit alone (tissue aside) measures inside its class's accepted range."""
    lo, hi = DEPOSIT_UM[kind]
    return lo <= _longest_um([dep], None, um) <= hi


def tumour_regions(mask: np.ndarray, downsample: int) -> list[dict[str, int]]:
    """Connected tumour regions of ``mask`` as level-0 boxes and areas."""
    labels, _ = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    counts = np.bincount(labels.ravel())
    regions = []
    for k, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        rows, cols = box
        regions.append(
            {
                "x": cols.start * downsample,
                "y": rows.start * downsample,
                "w": (cols.stop - cols.start) * downsample,
                "h": (rows.stop - rows.start) * downsample,
                "area": int(counts[k]) * downsample * downsample,
            }
        )
    return regions


def write_mask(path: str | Path, mask: np.ndarray) -> None:
    """Write a tumour mask as an 8-bit PNG, 255 for tumour, atomically."""
    with atomic_path(path) as tmp:
        Image.fromarray(mask.astype(np.uint8) * 255, mode="L").save(tmp, optimize=False)
