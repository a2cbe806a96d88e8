"""Frozen-section and slide-preparation artefacts: ice-crystal holes, folds, crush, focus, pen.

Drawn once per slide (Poisson counts, geometry near the tissue) and applied per tile: every
pixel is a function of its level-0 position and the slide seed, so tiles agree in any order
and at any level. Sizes are in microns, converted with the slide's level-0 ``mpp``.

How a renderer uses it for a tile at downsample ``d`` covering the level-0 box ``box``:

1. pad the tile grid by ``art.pad_px(d, box)`` more level pixels (fold copies and focus blur
   read that far; without the pad, results near the tile's border depend on the tile);
2. ``h, e = art.stain(xs, ys, h, e)`` on the stain amounts (0 outside tissue), before colour;
3. ``rgb = art.optics(look.to_rgb(h, e, d), xs, ys, d)``, then crop the pad;
4. the truth tissue is ``tissue & ~art.holes(xs, ys)``.

Steps 2 and 3 return their inputs unchanged (same objects) where a tile meets no artefact,
after a bounding-box test, and ``art.empty`` lets a renderer skip them altogether. A tile
that meets an artefact costs tens of milliseconds more at 512 px (up to about 0.3 s under
a wide focus band with pen strokes, most of it the blur).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
from scipy import ndimage

from helpkit.errors import HelpkitError
from helpkit.synth.field import Plan2D, hash_uniform

Box = tuple[float, float, float, float]
"""A level-0 box (x0, y0, x1, y1)."""

HOLE_RADIUS_UM = (5.0, 30.0)
HOLE_SPACING_UM = 32.0
"""Ice-crystal holes sit on a jittered lattice of this spacing inside their cluster."""
HOLE_CLUSTER_UM = (80.0, 350.0)
"""Cluster radius."""
FOLD_UM = {"length": (400.0, 3000.0), "width": (40.0, 250.0), "shift": (5.0, 25.0)}
CRUSH_UM = {"length": (300.0, 1500.0), "width": (40.0, 200.0), "streak": (40.0, 3.0)}
"""Crush streaks: noise spacing along and across the band."""
FOCUS_UM = {"length": (400.0, 2500.0), "width": (200.0, 900.0), "sigma": (2.0, 6.0)}
PEN_UM = {"length": (1000.0, 6000.0), "width": (150.0, 600.0), "streak": (150.0, 20.0)}
INKS = {
    "green": (1.25, 0.30, 0.95),
    "blue": (1.15, 0.70, 0.20),
    "black": (1.60, 1.55, 1.45),
}
"""Marker inks as RGB optical densities (absorbed light): green passes G, blue passes B."""
INK_SHARE = (0.4, 0.35, 0.25)
_BUDGET = 1 << 21
"""Most hole-stamp elements handled at once (bounds memory on big grids)."""


@dataclass(frozen=True)
class ArtefactRates:
    """Expected number of each artefact per slide (Poisson means); 0 draws none."""

    holes: float = 0.0
    """Clusters of ice-crystal holes (white, round or angular, 10-60 um across) in tissue."""
    folds: float = 0.0
    """Bands where tissue lies doubled: a shifted copy adds about twice the stain."""
    crush: float = 0.0
    """Bands of smeared, streaky dark haematoxylin (crushed nuclei)."""
    focus: float = 0.0
    """Out-of-focus bands: extra blur of 2-6 um sigma, fading in over their edges."""
    pen: float = 0.0
    """Marker strokes (green, blue, black) across the tissue's edge."""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if not (math.isfinite(value) and value >= 0):
                raise HelpkitError(f"artefact rate {f.name}={value!r}: must be a finite number >= 0")

    def scaled(self, k: float) -> ArtefactRates:
        """Every rate times ``k`` (>= 0)."""
        return ArtefactRates(**{f.name: getattr(self, f.name) * k for f in fields(self)})

    def any(self) -> bool:
        """Whether any artefact can be drawn."""
        return any(getattr(self, f.name) > 0 for f in fields(self))


def _smooth(t: np.ndarray) -> np.ndarray:
    return t * t * (3 - 2 * t)


def _noise1(seed: int, t: np.ndarray) -> np.ndarray:
    """Smooth 1-D value noise in [0, 1] at ``t`` (lattice units), any shape."""
    floor = np.floor(t)
    base = int(floor.min())
    nodes = hash_uniform(seed, np.arange(base, int(floor.max()) + 2)).astype(np.float32)
    k = floor.astype(np.int64) - base
    f = _smooth((t - floor).astype(np.float32))
    return nodes[k] * (1 - f) + nodes[k + 1] * f


def _streaks(seed: int, u: np.ndarray, v: np.ndarray, along: float, across: float, step: float) -> np.ndarray:
    """Streaks in [0, 1] along a band: 1-D noise across it (spacing ``across`` level-0 px)
    whose lines wander sideways over ``along``; its mean, 0.5, where the across spacing is
    under a pixel of ``step`` level-0 px (the streaks would alias)."""
    if across < step:
        return np.full(u.shape, 0.5, np.float32)
    return _noise1(seed, v / np.float32(across) + 2 * _noise1(seed + 1, u / np.float32(along)))


def _step(xs: np.ndarray, ys: np.ndarray) -> float:
    """The grid's pixel spacing in level-0 px."""
    for c in (xs, ys):
        if len(c) > 1:
            return float(c[1] - c[0])
    return 1.0


@dataclass(frozen=True)
class Band:
    """A soft-edged, gently bent strip along a segment (level-0 px): the shape of folds,
    crush, focus bands and pen strokes."""

    cx: float
    cy: float
    angle: float
    half_length: float
    half_width: float
    soft: float
    """Edge ramp, a fraction of the half width."""
    taper: float
    """Ramp at the two ends, level-0 px."""
    bend: float
    """Largest sideways bend of the centre line, level-0 px."""
    seed: int

    def _reach(self) -> tuple[float, float]:
        """Bounds on |along| and |across| (from the segment) outside which the weight is 0."""
        return self.half_length, 1.2 * self.half_width + self.bend

    def box(self) -> Box:
        """Level-0 bounding box."""
        a, b = self._reach()
        c, s = abs(math.cos(self.angle)), abs(math.sin(self.angle))
        rx, ry = a * c + b * s, a * s + b * c
        return (self.cx - rx, self.cy - ry, self.cx + rx, self.cy + ry)

    def touches(self, box: Box) -> bool:
        """Whether the band can be non-zero in ``box`` (separating axes of two rectangles)."""
        x0, y0, x1, y1 = box
        bx0, by0, bx1, by1 = self.box()
        if x1 < bx0 or x0 > bx1 or y1 < by0 or y0 > by1:
            return False
        c, s = math.cos(self.angle), math.sin(self.angle)
        corners = [(x - self.cx, y - self.cy) for x in (x0, x1) for y in (y0, y1)]
        us = [dx * c + dy * s for dx, dy in corners]
        vs = [dy * c - dx * s for dx, dy in corners]
        a, b = self._reach()
        return not (min(us) > a or max(us) < -a or min(vs) > b or max(vs) < -b)

    def frame(self, xs: np.ndarray, ys: np.ndarray) -> tuple[slice, slice, np.ndarray, np.ndarray, np.ndarray] | None:
        """On the part of the grid the band can reach: (rows, cols, along, across, weight),
        the coordinates in level-0 px from the band's centre line, the weight in [0, 1];
        None where the band misses the grid."""
        if not len(xs) or not len(ys) or not self.touches((xs[0], ys[0], xs[-1], ys[-1])):
            return None
        bx0, by0, bx1, by1 = self.box()
        cols = slice(int(np.searchsorted(xs, bx0)), int(np.searchsorted(xs, bx1, side="right")))
        rows = slice(int(np.searchsorted(ys, by0)), int(np.searchsorted(ys, by1, side="right")))
        if cols.start >= cols.stop or rows.start >= rows.stop:
            return None
        dx = (xs[cols].astype(np.float64) - self.cx).astype(np.float32)[None, :]
        dy = (ys[rows].astype(np.float64) - self.cy).astype(np.float32)[:, None]
        c, s = np.float32(math.cos(self.angle)), np.float32(math.sin(self.angle))
        u = dx * c + dy * s
        v = dy * c - dx * s
        v = v - np.float32(self.bend) * (2 * _noise1(self.seed, u / np.float32(self.half_length / 1.5)) - 1)
        width = np.float32(self.half_width) * (0.85 + 0.3 * _noise1(self.seed + 1, u / np.float32(2 * self.half_width)))
        across = _smooth(np.clip((1 - np.abs(v) / width) / np.float32(self.soft), 0, 1))
        along = _smooth(np.clip((self.half_length - np.abs(u)) / np.float32(self.taper), 0, 1))
        return rows, cols, u, v, across * along


@dataclass(frozen=True)
class Fold:
    """Tissue folded over onto itself: inside the band a copy shifted by (dx, dy) level-0 px
    adds its stain, times ``gain``."""

    band: Band
    dx: float
    dy: float
    gain: float


@dataclass(frozen=True)
class Crush:
    """Crushed nuclei: inside the band the haematoxylin becomes streaks of about ``strength``."""

    band: Band
    strength: float
    along: float
    across: float
    """Streak noise spacings, level-0 px."""


@dataclass(frozen=True)
class Focus:
    """Out of focus: inside the band the image blends towards a blur of ``sigma`` level-0 px."""

    band: Band
    sigma: float

    def radius(self, d: float) -> int:
        """Blur reach in level px at downsample ``d`` (0 where the blur is under a pixel)."""
        sigma = self.sigma / d
        return int(4 * sigma + 0.5) if sigma >= 0.3 else 0


@dataclass(frozen=True)
class Pen:
    """A marker stroke: ``density`` times the ink's optical density, streaked."""

    band: Band
    ink: str
    density: float
    along: float
    across: float
    """Streak noise spacings, level-0 px."""


@dataclass(frozen=True)
class Holes:
    """Ice-crystal holes (level-0 px): centres, semi-axes a >= b, angle and how square each is
    (0 round .. 1 a rotated rectangle), plus each cluster's box."""

    x: np.ndarray
    y: np.ndarray
    a: np.ndarray
    b: np.ndarray
    angle: np.ndarray
    square: np.ndarray
    clusters: tuple[Box, ...]

    def cover(self, xs: np.ndarray, ys: np.ndarray, step: float | None) -> np.ndarray | None:
        """Hole coverage on the grid ``ys`` x ``xs``: antialiased over one pixel of ``step``
        level-0 px (holes under a pixel are point-sampled with a soft edge, unbiased in area);
        with ``step`` None 1.0 exactly inside a hole, else 0. None where no hole reaches."""
        if not len(self.x) or not len(xs) or not len(ys):
            return None
        # inside is rn < 1; the ramp is 1/k wide in hole units, at most a pixel as |grad rn| >= 1/a;
        # the reach follows from rn >= distance / (sqrt2 a)
        k = None if step is None else np.maximum(self.a / step, 1.0)
        rn_max = 1.0 if k is None else 1.0 + 0.5 / k
        reach = self.a * rn_max / (1 - self.square + self.square / math.sqrt(2)) + 1e-3
        near = np.flatnonzero(
            (self.x + reach >= xs[0]) & (self.x - reach <= xs[-1]) & (self.y + reach >= ys[0]) & (self.y - reach <= ys[-1])
        )
        if not len(near):
            return None
        c0 = np.searchsorted(xs, self.x[near] - reach[near])
        c1 = np.searchsorted(xs, self.x[near] + reach[near], side="right")
        r0 = np.searchsorted(ys, self.y[near] - reach[near])
        r1 = np.searchsorted(ys, self.y[near] + reach[near], side="right")
        side = np.maximum(c1 - c0, r1 - r0)
        order = np.argsort(side, kind="stable")
        out = np.zeros((len(ys), len(xs)), np.float32)
        i = 0
        while i < len(order):  # chunks of similar-sized stamps, each under _BUDGET elements
            j = i + 1
            while j < len(order) and (j + 1 - i) * int(side[order[j]]) ** 2 <= _BUDGET:
                j += 1
            sel = order[i:j]
            self._stamp(out, xs, ys, near[sel], c0[sel], c1[sel], r0[sel], r1[sel], None if k is None else k[near[sel]])
            i = j
        return out

    def _stamp(self, out: np.ndarray, xs: np.ndarray, ys: np.ndarray, idx: np.ndarray, c0: np.ndarray,
               c1: np.ndarray, r0: np.ndarray, r1: np.ndarray, k: np.ndarray | None) -> None:
        """Max the coverage of holes ``idx`` into ``out`` over their windows [r0, r1) x [c0, c1)."""
        ny, nx = out.shape
        w, h = int((c1 - c0).max()), int((r1 - r0).max())
        if w <= 0 or h <= 0:
            return
        jj = c0[:, None] + np.arange(w)
        ii = r0[:, None] + np.arange(h)
        ok = (ii < r1[:, None])[:, :, None] & (jj < c1[:, None])[:, None, :]
        jj, ii = np.minimum(jj, nx - 1), np.minimum(ii, ny - 1)
        dx = (xs[jj].astype(np.float64) - self.x[idx, None]).astype(np.float32)[:, None, :]
        dy = (ys[ii].astype(np.float64) - self.y[idx, None]).astype(np.float32)[:, :, None]
        c = np.cos(self.angle[idx]).astype(np.float32)[:, None, None]
        s = np.sin(self.angle[idx]).astype(np.float32)[:, None, None]
        u = (dx * c + dy * s) / self.a[idx, None, None].astype(np.float32)
        v = (dy * c - dx * s) / self.b[idx, None, None].astype(np.float32)
        q = self.square[idx, None, None].astype(np.float32)
        rn = (1 - q) * np.sqrt(u * u + v * v) + q * np.maximum(np.abs(u), np.abs(v))
        if k is None:
            cov = (rn < 1).astype(np.float32)
        else:
            cov = np.clip((1 - rn) * k[:, None, None].astype(np.float32) + 0.5, 0, 1)
        flat = ii[:, :, None] * nx + jj[:, None, :]
        np.maximum.at(out.ravel(), flat[ok], cov[ok])


_NO_HOLES = Holes(*(np.zeros(0) for _ in range(6)), clusters=())


@dataclass(frozen=True)
class Artefacts:
    """One slide's drawn artefacts (level-0 px geometry) and how they change its tiles."""

    mpp: float
    ice: Holes
    folds: tuple[Fold, ...]
    crush: tuple[Crush, ...]
    focus: tuple[Focus, ...]
    pen: tuple[Pen, ...]

    @property
    def empty(self) -> bool:
        """Nothing drawn: the renderer may skip every call."""
        return not (self.ice.clusters or self.folds or self.crush or self.focus or self.pen)

    def kinds(self) -> dict[str, int]:
        """How many of each kind were drawn (hole clusters for holes), for synth.json."""
        return {
            "holes": len(self.ice.clusters),
            "folds": len(self.folds),
            "crush": len(self.crush),
            "focus": len(self.focus),
            "pen": len(self.pen),
        }

    def boxes(self) -> list[tuple[str, Box]]:
        """(kind, level-0 box) of every artefact: nothing changes outside these boxes."""
        out = [("holes", box) for box in self.ice.clusters]
        for kind in ("folds", "crush", "focus", "pen"):
            out += [(kind, item.band.box()) for item in getattr(self, kind)]
        return out

    def pad_px(self, d: float, box: Box | None = None) -> int:
        """Extra level pixels of context a tile at downsample ``d`` needs on each side so that
        fold copies and focus blur near its border match the neighbouring tiles exactly (add
        it to the look's blur pad). ``box`` is the tile's level-0 box; None: the slide's most."""

        def near(band: Band, grow: float = 0.0) -> bool:
            return box is None or band.touches((box[0] - grow, box[1] - grow, box[2] + grow, box[3] + grow))

        blur = max((f.radius(d) for f in self.focus if near(f.band)), default=0)
        shift = max(
            (math.ceil(max(abs(f.dx), abs(f.dy)) / d) + 1 for f in self.folds if near(f.band, blur * d)), default=0
        )
        return blur + shift

    def holes(self, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
        """Boolean grid ``ys`` x ``xs`` (level-0 points), True inside an ice-crystal hole."""
        cover = self.ice.cover(xs, ys, None)
        return np.zeros((len(ys), len(xs)), bool) if cover is None else cover > 0.5

    def stain(self, xs: np.ndarray, ys: np.ndarray, h: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Folds, crush and holes applied to the stain amounts ``h``, ``e`` (grid ``ys`` x ``xs``,
        0 outside tissue), before colour; the inputs are never modified. Holes set both to 0
        (antialiased over their edge pixel).

        Fold copies read their shift away, clamped at the grid's border: pad the grid by
        ``pad_px``."""
        if self.empty:
            return h, e
        step = _step(xs, ys)
        h0 = h  # copy on the first change only
        for fold in self.folds:
            frame = fold.band.frame(xs, ys)
            if frame is None:
                continue
            rows, cols, _, _, w = frame
            h, e = (h.copy(), e.copy()) if h is h0 else (h, e)
            ox, oy = round(fold.dx / step), round(fold.dy / step)
            src_r = np.clip(np.arange(rows.start, rows.stop) + oy, 0, h.shape[0] - 1)[:, None]
            src_c = np.clip(np.arange(cols.start, cols.stop) + ox, 0, h.shape[1] - 1)[None, :]
            hw, ew = h[rows, cols], e[rows, cols]
            w = w * np.float32(fold.gain) * ((hw + ew) > 0)
            h_copy, e_copy = h[src_r, src_c], e[src_r, src_c]
            h[rows, cols] = hw + w * h_copy
            e[rows, cols] = ew + w * e_copy
        for crush in self.crush:
            frame = crush.band.frame(xs, ys)
            if frame is None:
                continue
            rows, cols, u, v, w = frame
            h, e = (h.copy(), e.copy()) if h is h0 else (h, e)
            hw, ew = h[rows, cols], e[rows, cols]
            w = w * ((hw + ew) > 0)
            smear = np.float32(crush.strength) * (0.55 + 0.9 * _streaks(crush.band.seed + 2, u, v, crush.along, crush.across, step))
            h[rows, cols] = hw + w * (smear - hw)
            e[rows, cols] = ew * (1 - 0.5 * w)
        cover = self.ice.cover(xs, ys, step)
        if cover is not None:
            keep = 1 - cover
            h, e = h * keep, e * keep
        return h, e

    def optics(self, rgb: np.ndarray, xs: np.ndarray, ys: np.ndarray, d: float) -> np.ndarray:
        """Pen ink, then focus blur, on the uint8 RGB tile (grid ``ys`` x ``xs``, downsample ``d``).

        Only pixels inside a stroke or band change. The blur reads up to ``Focus.radius(d)``
        pixels around, with 'nearest' beyond the grid's border: pad the grid by ``pad_px``
        so tiles join without seams."""
        if self.empty or not (self.pen or self.focus):
            return rgb
        out = rgb
        for pen in self.pen:
            frame = pen.band.frame(xs, ys)
            if frame is None:
                continue
            rows, cols, u, v, w = frame
            out = out.copy() if out is rgb else out
            amount = w * np.float32(pen.density) * (0.8 + 0.4 * _streaks(pen.band.seed + 2, u, v, pen.along, pen.across, d))
            trans = np.exp(-amount[..., None] * np.asarray(INKS[pen.ink], np.float32))
            out[rows, cols] = np.clip(out[rows, cols] * trans + 0.5, 0, 255).astype(np.uint8)
        for focus in self.focus:
            r = focus.radius(d)
            frame = focus.band.frame(xs, ys) if r else None
            if frame is None:
                continue
            rows, cols, _, _, w = frame
            out = out.copy() if out is rgb else out
            ctx_r = slice(max(rows.start - r, 0), min(rows.stop + r, out.shape[0]))
            ctx_c = slice(max(cols.start - r, 0), min(cols.stop + r, out.shape[1]))
            sigma = focus.sigma / d
            blurred = ndimage.gaussian_filter(out[ctx_r, ctx_c].astype(np.float32), (sigma, sigma, 0), mode="nearest")
            blurred = blurred[rows.start - ctx_r.start : rows.stop - ctx_r.start, cols.start - ctx_c.start : cols.stop - ctx_c.start]
            sharp = out[rows, cols].astype(np.float32)
            out[rows, cols] = np.clip(sharp + w[..., None] * (blurred - sharp) + 0.5, 0, 255).astype(np.uint8)
        return out


def _sites(tissue: Plan2D, width: int, height: int, edge: bool) -> np.ndarray:
    """Level-0 (x, y) of plan nodes where artefacts may centre: inside the tissue, a couple of
    nodes in from its outline, or with ``edge`` on the outline (pen strokes cross it)."""
    inside = tissue.values > 0
    if edge:
        nodes = ndimage.binary_dilation(inside, iterations=2) & ~ndimage.binary_erosion(inside, iterations=2)
    else:
        deep = ndimage.binary_erosion(inside, iterations=2)
        nodes = deep if deep.any() else inside
    xy = (np.argwhere(nodes)[:, ::-1] + 0.5) * tissue.cell
    return xy[(xy[:, 0] < width) & (xy[:, 1] < height)]


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _band(rng: np.random.Generator, site: np.ndarray, mpp: float, side: int, shape: dict[str, tuple[float, float]],
          soft: float, taper: float, bend: float) -> Band:
    """A band centred at ``site`` with ``shape``'s length and width (um, log-uniform), kept
    within the slide's shorter ``side``; ``taper`` and ``bend`` are fractions of its half length."""
    half_length = min(_log_uniform(rng, *shape["length"]) / 2 / mpp, 0.35 * side)
    half_width = min(_log_uniform(rng, *shape["width"]) / 2 / mpp, 0.1 * side, half_length)
    return Band(
        cx=float(site[0]), cy=float(site[1]), angle=float(rng.uniform(0, np.pi)), half_length=half_length,
        half_width=half_width, soft=soft, taper=taper * half_length, bend=bend * half_length,
        seed=int(rng.integers(2**31)),
    )


def _cluster(rng: np.random.Generator, site: np.ndarray, mpp: float, side: int, tissue: Plan2D) -> tuple[np.ndarray, ...]:
    """One cluster of ice-crystal holes on a jittered lattice, denser at its centre, only
    in tissue: (x, y, a, b, angle, square) arrays."""
    rc = min(_log_uniform(rng, *HOLE_CLUSTER_UM) / mpp, 0.2 * side)
    g = HOLE_SPACING_UM / mpp
    n = int(np.ceil(rc / g))
    jj, ii = np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1))
    u = rng.random((6, *jj.shape))
    x = site[0] + (jj + 0.8 * u[0] - 0.4) * g
    y = site[1] + (ii + 0.8 * u[1] - 0.4) * g
    rr = np.hypot(x - site[0], y - site[1]) / rc
    keep = (rr < 1) & (u[2] < 0.8 * (1 - rr**2))
    keep[keep] = tissue.points(x[keep], y[keep]) > 0
    lo, hi = HOLE_RADIUS_UM
    r = lo * (hi / lo) ** (u[3][keep] ** 1.6) / mpp  # mostly small, a few large
    aspect = np.sqrt(1 + 0.7 * u[4][keep])
    angle = np.pi * u[5][keep]
    square = rng.random(int(keep.sum()))
    return x[keep], y[keep], r * aspect, r / aspect, angle, square


def draw_artefacts(seed: int, rates: ArtefactRates, width: int, height: int, mpp: float, tissue: Plan2D) -> Artefacts:
    """Draw a slide's artefacts: Poisson counts from ``rates``, geometry in and around
    ``tissue`` (> 0 inside) on a ``width`` x ``height`` level-0 slide of ``mpp`` um/px.

    Each kind draws from its own stream, so changing one rate leaves the others' geometry."""
    if not (mpp > 0 and width > 0 and height > 0):
        raise HelpkitError(f"artefacts need mpp > 0 and a non-empty slide, got mpp={mpp}, {width}x{height}")
    side = min(width, height)
    inner, edge = _sites(tissue, width, height, False), _sites(tissue, width, height, True)
    drawn: dict[str, list] = {}
    for k, f in enumerate(fields(rates)):
        rng = np.random.default_rng([seed, 0xA27E, k])
        sites = edge if f.name == "pen" else inner
        count = int(rng.poisson(getattr(rates, f.name))) if len(sites) else 0
        drawn[f.name] = []
        for _ in range(count):
            site = sites[rng.integers(len(sites))] + rng.uniform(-0.5, 0.5, 2) * tissue.cell
            if f.name == "holes":
                drawn[f.name].append(_cluster(rng, site, mpp, side, tissue))
            elif f.name == "folds":
                band = _band(rng, site, mpp, side, FOLD_UM, soft=0.25, taper=0.2, bend=0.08)
                shift = rng.uniform(*FOLD_UM["shift"]) / mpp * rng.choice((-1, 1))
                gain = float(rng.uniform(0.8, 1.0))
                drawn[f.name].append(Fold(band, -math.sin(band.angle) * shift, math.cos(band.angle) * shift, gain))
            elif f.name == "crush":
                band = _band(rng, site, mpp, side, CRUSH_UM, soft=0.5, taper=0.3, bend=0.1)
                along, across = (s / mpp for s in CRUSH_UM["streak"])
                drawn[f.name].append(Crush(band, float(rng.uniform(0.9, 1.4)), along, across))
            elif f.name == "focus":
                band = _band(rng, site, mpp, side, FOCUS_UM, soft=0.7, taper=0.4, bend=0.1)
                drawn[f.name].append(Focus(band, float(rng.uniform(*FOCUS_UM["sigma"])) / mpp))
            else:
                band = _band(rng, site, mpp, side, PEN_UM, soft=0.15, taper=0.1, bend=0.25)
                ink = list(INKS)[int(rng.choice(len(INKS), p=INK_SHARE))]
                along, across = (s / mpp for s in PEN_UM["streak"])
                drawn[f.name].append(Pen(band, ink, float(rng.uniform(0.7, 1.2)), along, across))
    clusters = [c for c in drawn["holes"] if len(c[0])]
    if clusters:
        x, y, a, b, angle, square = (np.concatenate(parts) for parts in zip(*clusters))
        boxes = tuple(
            (float((cx - 2.2 * ca).min()), float((cy - 2.2 * ca).min()), float((cx + 2.2 * ca).max()), float((cy + 2.2 * ca).max()))
            for cx, cy, ca, *_ in clusters
        )
        ice = Holes(x, y, a, b, angle, square, boxes)
    else:
        ice = _NO_HOLES
    return Artefacts(mpp, ice, tuple(drawn["folds"]), tuple(drawn["crush"]), tuple(drawn["focus"]), tuple(drawn["pen"]))
