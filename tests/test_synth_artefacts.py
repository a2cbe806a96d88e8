"""Synthetic slide artefacts: counts follow the rates, each kind stays in its geometry and
looks as it should, and tiles agree with one large window (any order, any level)."""

from __future__ import annotations

from dataclasses import fields, replace

import numpy as np
import pytest
from scipy import ndimage

from helpkit.errors import HelpkitError
from helpkit.synth.artefacts import INKS, ArtefactRates, Artefacts, draw_artefacts
from helpkit.synth.field import Plan2D, value_noise
from helpkit.synth.stain import look_for

SIZE, CELL, MPP = 2048, 32.0, 1.0
KINDS = [f.name for f in fields(ArtefactRates)]
LOOK = replace(look_for(0, 0), blur0=0.0)


def _tissue() -> Plan2D:
    """A disc of tissue (radius 800 px) in the middle of a 2048-px slide."""
    nodes = (np.arange(int(SIZE / CELL)) + 0.5) * CELL
    gx, gy = np.meshgrid(nodes, nodes)
    return Plan2D(1 - np.hypot(gx - SIZE / 2, gy - SIZE / 2) / 800, CELL)


TISSUE = _tissue()


def _draw(seed: int, **rates: float) -> Artefacts:
    return draw_artefacts(seed, ArtefactRates(**rates), SIZE, SIZE, MPP, TISSUE)


def _grid(x0: float, y0: float, cols: int, rows: int, d: float) -> tuple[np.ndarray, np.ndarray]:
    xs = (x0 + (np.arange(cols) + 0.5) * d).astype(np.float32)
    ys = (y0 + (np.arange(rows) + 0.5) * d).astype(np.float32)
    return xs, ys


def _stains(xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Textured stain amounts, functions of level-0 position, 0 outside the tissue."""
    tissue = TISSUE.grid(xs, ys) > 0
    nuclei = value_noise(5, xs, ys, 6.0) > 0.75
    h = np.where(tissue, 0.1 + 1.3 * nuclei, 0).astype(np.float32)
    e = np.where(tissue, 0.4 + 0.2 * value_noise(6, xs, ys, 40.0), 0).astype(np.float32)
    return h, e


def _first(kind: str, rate: float = 2.0, want: int = 1) -> Artefacts:
    """The first seed's artefacts with at least ``want`` of ``kind``."""
    for seed in range(100):
        art = _draw(seed, **{kind: rate})
        if art.kinds()[kind] >= want:
            return art
    raise AssertionError(f"no seed drew {kind}")


def _render(art: Artefacts, xs: np.ndarray, ys: np.ndarray, d: float) -> np.ndarray:
    h, e = art.stain(xs, ys, *_stains(xs, ys))
    return art.optics(LOOK.to_rgb(h, e, d), xs, ys, d)


def _in_boxes(art: Artefacts, kind: str, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    inside = np.zeros((len(ys), len(xs)), bool)
    for k, (x0, y0, x1, y1) in art.boxes():
        if k == kind:
            inside |= ((ys >= y0) & (ys <= y1))[:, None] & ((xs >= x0) & (xs <= x1))[None, :]
    return inside


def test_rates() -> None:
    assert not ArtefactRates().any()
    rates = ArtefactRates(pen=0.5, folds=0.25)
    assert rates.any()
    assert rates.scaled(2.0) == ArtefactRates(pen=1.0, folds=0.5)
    for bad in (-0.1, float("nan"), float("inf")):
        with pytest.raises(HelpkitError, match="holes"):
            ArtefactRates(holes=bad)


def test_rate_zero_draws_nothing_and_changes_nothing() -> None:
    art = _draw(3)
    assert art.empty and art.kinds() == dict.fromkeys(KINDS, 0) and art.boxes() == []
    assert art.pad_px(1.0) == 0
    xs, ys = _grid(512, 512, 64, 48, 1.0)
    h, e = _stains(xs, ys)
    rgb = np.full((48, 64, 3), 200, np.uint8)
    assert art.stain(xs, ys, h, e) == (h, e)
    assert art.optics(rgb, xs, ys, 1.0) is rgb
    assert not art.holes(xs, ys).any()


def test_counts_follow_rates_and_are_deterministic() -> None:
    rates = {"holes": 1.5, "folds": 1.0, "crush": 0.5, "focus": 1.0, "pen": 2.0}
    n = 150
    counts = np.array([[_draw(seed, **rates).kinds()[k] for k in KINDS] for seed in range(n)])
    for k, kind in enumerate(KINDS):
        assert abs(counts[:, k].mean() - rates[kind]) < 4 * np.sqrt(rates[kind] / n), kind
    assert _draw(7, **rates).boxes() == _draw(7, **rates).boxes()
    assert _draw(7, **rates).boxes() != _draw(8, **rates).boxes()
    # each kind has its own stream: other rates leave a kind's geometry alone
    folds = [b for k, b in _draw(7, **rates).boxes() if k == "folds"]
    assert folds == [b for k, b in _draw(7, folds=1.0).boxes() if k == "folds"]


def test_bad_slide_is_refused() -> None:
    with pytest.raises(HelpkitError, match="mpp"):
        draw_artefacts(0, ArtefactRates(pen=1.0), SIZE, SIZE, 0.0, TISSUE)


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_changes_pixels_only_in_its_boxes(kind: str) -> None:
    art = _first(kind)
    d = 2.0
    xs, ys = _grid(0, 0, int(SIZE / d), int(SIZE / d), d)
    before = LOOK.to_rgb(*_stains(xs, ys), d)
    after = _render(art, xs, ys, d)
    changed = (before != after).any(axis=-1)
    assert changed.sum() > 200
    assert not (changed & ~_in_boxes(art, kind, xs, ys)).any()


def test_holes_are_white_and_leave_the_truth_tissue() -> None:
    art = _first("holes")
    x0, y0, x1, y1 = next(box for kind, box in art.boxes() if kind == "holes")
    xs, ys = _grid(x0, y0, int(x1 - x0), int(y1 - y0), 1.0)
    holes = art.holes(xs, ys)
    tissue = TISSUE.grid(xs, ys) > 0
    assert holes.sum() > 100 and not (holes & ~tissue).any()
    assert (tissue & ~holes).sum() < tissue.sum()
    h0, e0 = _stains(xs, ys)
    h, e = art.stain(xs, ys, h0, e0)
    # white inside, antialiased over the edge pixel (and where two holes' edges meet)
    core = ndimage.binary_erosion(holes)
    assert (h[holes] <= 0.5 * h0[holes]).all() and (e[holes] <= 0.5 * e0[holes]).all()
    assert (LOOK.to_rgb(h, e, 1.0)[core] == LOOK.background()).all(axis=-1).mean() > 0.99
    # a pure function of position: any subset of points gives the same holes
    np.testing.assert_array_equal(art.holes(xs[::3], ys[1::5]), holes[1::5, ::3])


def test_folds_double_the_stain_and_darken() -> None:
    art = _first("folds")
    d = 2.0
    xs, ys = _grid(0, 0, int(SIZE / d), int(SIZE / d), d)
    h, e = _stains(xs, ys)
    h2, e2 = art.stain(xs, ys, h, e)
    assert (h2 >= h).all() and (e2 >= e).all()
    changed = (h2 != h) | (e2 != e)
    grey = LOOK.to_rgb(h, e, d).mean(axis=-1)[changed]
    grey2 = LOOK.to_rgb(h2, e2, d).mean(axis=-1)[changed]
    assert grey2.mean() < grey.mean() - 15
    assert np.percentile(e2[changed] / e[changed], 90) > 1.6


def test_crush_darkens_haematoxylin() -> None:
    art = _first("crush")
    xs, ys = _grid(0, 0, SIZE // 2, SIZE // 2, 2.0)
    h, e = _stains(xs, ys)
    h2, e2 = art.stain(xs, ys, h, e)
    changed = h2 != h
    assert h2[changed].mean() > 1.5 * h[changed].mean() and (e2 <= e).all()


def test_focus_blurs_inside_its_band() -> None:
    art = _first("focus")
    xs, ys = _grid(0, 0, SIZE // 2, SIZE // 2, 2.0)
    rgb = LOOK.to_rgb(*_stains(xs, ys), 2.0)
    out = art.optics(rgb, xs, ys, 2.0)
    changed = (out != rgb).any(axis=-1)[:, 1:]
    assert changed.sum() > 200

    def grad(im: np.ndarray) -> np.ndarray:
        return np.abs(np.diff(im.astype(np.float32), axis=1)).mean(axis=-1)

    assert grad(out)[changed].mean() < 0.7 * grad(rgb)[changed].mean()


def test_pen_strokes_are_strongly_coloured() -> None:
    seen: set[str] = set()
    for seed in range(60):
        art = _draw(seed, pen=1.0)
        if not art.pen or art.pen[0].ink in seen or len(art.pen) > 1:
            continue
        ink = art.pen[0].ink
        seen.add(ink)
        xs, ys = _grid(0, 0, SIZE // 4, SIZE // 4, 4.0)
        glass = np.full((len(ys), len(xs), 3), 235, np.uint8)
        out = art.optics(glass, xs, ys, 4.0).astype(int)
        darkness = (235 - out).sum(axis=-1)
        r, g, b = out[darkness >= np.percentile(darkness[darkness > 0], 50)].T
        colour = {"green": g - np.maximum(r, b), "blue": b - np.maximum(r, g), "black": 100 - np.maximum(np.maximum(r, g), b)}
        assert np.median(colour[ink]) > 30, ink
    assert seen == set(INKS)


@pytest.mark.parametrize("d", [1.0, 4.0])
def test_tiles_agree_with_one_window(d: float) -> None:
    """Two side-by-side tiles, each padded by pad_px, equal one window over both."""
    art = _draw(4, holes=2, folds=2, crush=2, focus=2, pen=2)
    assert art.folds and art.focus
    band = art.folds[0].band
    size = 128 if d == 1 else 96
    x0, y0 = band.cx - size * d, band.cy - size * d / 2
    box = (x0, y0, x0 + 2 * size * d, y0 + size * d)
    pad = art.pad_px(d, box)
    assert pad > 0
    xs, ys = _grid(x0 - pad * d, y0 - pad * d, 2 * size + 2 * pad, size + 2 * pad, d)
    whole = _render(art, xs, ys, d)[pad:-pad, pad:-pad]
    for k in range(2):
        tx = x0 + k * size * d
        tile_pad = art.pad_px(d, (tx, y0, tx + size * d, y0 + size * d))
        txs, tys = _grid(tx - tile_pad * d, y0 - tile_pad * d, size + 2 * tile_pad, size + 2 * tile_pad, d)
        tile = _render(art, txs, tys, d)
        tile = tile[tile_pad : tile_pad + size, tile_pad : tile_pad + size]
        np.testing.assert_array_equal(tile, whole[:, k * size : (k + 1) * size])
