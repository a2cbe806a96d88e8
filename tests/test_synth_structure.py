"""The synthetic generator's physical scale and structure: colour statistics alone barely
tell tumour from normal, deposits land in their planned CAMELYON class, nuclei have their
real size in microns at any mpp, tumour lies in tissue, and tiles are pure functions of
position."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from helpkit.errors import HelpkitError
from helpkit.layouts import size_class
from helpkit.synth.plan import SlidePlan, make_plan, min_size, tumour_regions
from helpkit.synth.stain import E_VECTOR, H_VECTOR, look_for
from helpkit.synth.tissue_render import render_tile

PATCH = 64
"""Patch side at 2 um/px (128 um), the default patch geometry."""


def _patch_features(plan: SlidePlan, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of R, G, B per 64 px patch at 2 um/px on tissue, and whether each is
    tumour (>= half tumour; patches with less, but some, tumour are left out)."""
    d = int(round(2.0 / plan.mpp))
    img = render_tile(plan, look_for(seed, 0.0), d, 0, 0, plan.width // d)
    tissue, tumour = plan.tissue_mask(d), plan.tumour_mask(d)
    feats, labels = [], []
    for r in range(0, img.shape[0] - PATCH + 1, PATCH // 2):
        for c in range(0, img.shape[1] - PATCH + 1, PATCH // 2):
            box = np.s_[r : r + PATCH, c : c + PATCH]
            share = tumour[box].mean()
            if tissue[box].mean() < 0.5 or 0 < share < 0.5:
                continue
            x = img[box].reshape(-1, 3).astype(float)
            feats.append(np.concatenate([x.mean(0), x.std(0)]))
            labels.append(share >= 0.5)
    return np.array(feats).reshape(-1, 6), np.array(labels, bool)


def test_mean_and_std_rgb_barely_separate_tumour_from_normal() -> None:
    """A logistic regression on mean and std of RGB per patch, fitted on half the slides and
    scored on the others: patch AUC <= 0.80, slide AUC (mean of the top-3 patches) <= 0.75."""
    n = 12
    feats, labels, slide = [], [], []
    for k in range(2 * n):
        positive = k % 2 == 1
        plan = make_plan(2048, 2048, 500 + k, positive, deposit="micro" if positive else None)
        f, y = _patch_features(plan, 500 + k)
        feats.append(f), labels.append(y), slide.append(np.full(len(y), k))
    x, y, s = np.concatenate(feats), np.concatenate(labels), np.concatenate(slide)
    assert y.sum() > 200 and (~y).sum() > 500
    x = (x - x.mean(0)) / x.std(0)
    prob = np.zeros(len(y))
    for fold in (0, 1):
        train = (s // 2) % 2 != fold  # each fold holds both classes
        model = LogisticRegression(max_iter=1000).fit(x[train], y[train])
        prob[~train] = model.predict_proba(x[~train])[:, 1]
    patch_auc = roc_auc_score(y, prob)
    scores = [np.sort(prob[s == k])[-3:].mean() for k in range(2 * n)]
    slide_auc = roc_auc_score([k % 2 for k in range(2 * n)], scores)
    assert patch_auc <= 0.80, patch_auc
    assert slide_auc <= 0.75, slide_auc


@pytest.mark.parametrize(("deposit", "size", "mpp"), [("itc", 2048, 0.5), ("micro", 2048, 0.5), ("micro", 4096, 0.25),
                                                      ("macro", 4096, 1.0)])
def test_largest_deposit_measures_in_its_planned_class(deposit: str, size: int, mpp: float) -> None:
    """The longest box side of the largest tumour region, from the mask, is in the class."""
    for seed in range(6):
        plan = make_plan(size, size, seed, True, mpp=mpp, deposit=deposit)
        assert plan.deposit == deposit and plan.mpp == mpp
        regions = tumour_regions(plan.tumour_mask(16), 16)
        longest_mm = max(max(r["w"], r["h"]) for r in regions) * mpp / 1000
        assert size_class(longest_mm) == deposit, (seed, longest_mm)


def test_a_macro_deposit_on_a_small_slide_names_the_minimum_size() -> None:
    need = min_size("macro", 0.5)
    assert 4096 < need <= 8192
    with pytest.raises(HelpkitError, match=f"at least {need} px"):
        make_plan(4096, 4096, 0, True, mpp=0.5, deposit="macro")
    make_plan(need, need, 0, True, mpp=0.5, deposit="macro")
    with pytest.raises(HelpkitError, match="negative slide"):
        make_plan(2048, 2048, 0, False, deposit="itc")


def test_old_callers_get_a_default_mix_of_deposits() -> None:
    classes = {make_plan(2048, 2048, seed, True).deposit for seed in range(4)}
    assert classes <= {"micro", "itc"} and classes
    assert make_plan(2048, 2048, 0, False).deposit is None


def _nuclear_diameter_um(plan: SlidePlan, cx: float, cy: float, side_um: float, q: float) -> float:
    """Percentile ``q`` of the equivalent diameters, microns, of the single nuclei in a level-0
    window (clumps of touching nuclei, far larger than their inscribed circle, are left out)."""
    size = int(side_um / plan.mpp)
    rgb = render_tile(plan, look_for(plan.seed, 0.0), 1, cx - size // 2, cy - size // 2, size).astype(float)
    od = -np.log(np.maximum(rgb, 1) / 255.0).reshape(-1, 3)
    amounts, *_ = np.linalg.lstsq(np.stack([H_VECTOR, E_VECTOR], 1), od.T, rcond=None)
    h = ndimage.gaussian_filter(amounts[0].reshape(size, size), 0.5 / plan.mpp)
    nuclei = ndimage.binary_fill_holes(h > 0.35 * np.percentile(h, 99))
    labels, n = ndimage.label(nuclei)
    index = np.arange(1, n + 1)
    inscribed = np.asarray(ndimage.maximum(ndimage.distance_transform_edt(nuclei), labels, index))
    area = np.bincount(labels.ravel(), minlength=n + 1)[1:]
    single = (inscribed > 1.0 / plan.mpp) & (area <= 2.2 * np.pi * inscribed**2)
    return float(np.percentile(2 * np.sqrt(area[single] / np.pi), q)) * plan.mpp


def test_nuclei_have_their_size_in_microns_at_any_mpp() -> None:
    """Lymphocyte nuclei ~7 um, tumour nuclei 10-20 um, the same at 0.5 and 0.25 um/px."""
    sizes = {}
    for mpp in (0.5, 0.25):
        side = int(2048 * 0.5 / mpp)
        normal = make_plan(side, side, 3, False, mpp=mpp)
        positive = make_plan(side, side, 3, True, mpp=mpp, deposit="micro")
        dep = positive.tumour.items[0]
        tissue = np.argwhere(normal.tissue_mask(int(32 / (mpp / 0.5))))
        ty, tx = (tissue[len(tissue) // 2] + 0.5) * 32 / (mpp / 0.5)
        # tumour windows also hold infiltrating lymphocytes and septa: their upper quartile
        sizes[mpp] = (_nuclear_diameter_um(normal, int(tx), int(ty), 100.0, 50),
                      _nuclear_diameter_um(positive, int(dep.cx), int(dep.cy), 100.0, 75))
    for lymph, tumour in sizes.values():
        assert 5.0 <= lymph <= 8.5, sizes
        assert 9.0 <= tumour <= 20.0 and tumour > 1.4 * lymph, sizes
    assert sizes[0.5] == pytest.approx(sizes[0.25], rel=0.15)


def test_tumour_lies_inside_the_truth_tissue() -> None:
    for seed in range(4):
        plan = make_plan(2048, 2048, seed, True, deposit=("itc", "micro")[seed % 2])
        tumour, tissue = plan.tumour_mask(8), plan.tissue_mask(8)
        assert tumour.any() and not (tumour & ~tissue).any()


def test_mimics_draw_histiocytes_and_germinal_centres_without_tumour() -> None:
    plan = make_plan(2048, 2048, 5, False, mimics=True)
    assert plan.mimics and plan.tumour is None and not plan.tumour_mask(16).any()
    assert plan.histio.values.max() > 0.5 and plan.germinal.values.max() > 0.5
    plain = make_plan(2048, 2048, 5, False)
    assert plain.histio.values.max() == plain.germinal.values.max() == 0


@pytest.mark.parametrize(("downsample", "mpp"), [(1, 0.5), (4, 0.5), (8, 0.5), (16, 0.5), (2, 0.25)])
def test_tiles_in_any_order_join_without_seams(downsample: int, mpp: float) -> None:
    """Each pixel is a function of its level-0 position: shuffled quarter tiles equal one big tile,
    at stamped and at expected-stain levels."""
    side = int(2048 * 0.5 / mpp)
    plan = make_plan(side, side, 11, True, mpp=mpp, deposit="micro", mimics=True)
    look = look_for(11, 0.0)
    dep = plan.tumour.items[0]
    x0, y0 = int(dep.cx) - 64 * downsample, int(dep.cy) - 64 * downsample
    big = render_tile(plan, look, downsample, x0, y0, 128)
    step = 64 * downsample
    order = [(1, 1), (0, 1), (1, 0), (0, 0)]
    tiles = {(r, c): render_tile(plan, look, downsample, x0 + c * step, y0 + r * step, 64) for r, c in order}
    stitched = np.concatenate([np.concatenate([tiles[r, 0], tiles[r, 1]], axis=1) for r in (0, 1)], axis=0)
    assert np.array_equal(stitched, big)
    assert big.std() > 10


def test_workers_do_not_change_a_slide(tmp_path: Path) -> None:
    from helpkit.synth.competition import make_slide

    make_slide(tmp_path / "one.tiff", 1024, seed=4, positive=True, workers=1)
    make_slide(tmp_path / "two.tiff", 1024, seed=4, positive=True, workers=2)
    digest = [hashlib.sha256((tmp_path / f"{n}.tiff").read_bytes()).hexdigest() for n in ("one", "two")]
    assert digest[0] == digest[1]


def test_artefacts_join_without_seams_and_holes_leave_the_truth_tissue() -> None:
    from helpkit.synth.artefacts import ArtefactRates

    plan = make_plan(2048, 2048, 6, True, deposit="micro", artefacts=ArtefactRates(holes=3, folds=1, focus=1, pen=1))
    assert plan.artefacts is not None and not plan.artefacts.empty
    assert make_plan(2048, 2048, 6, True, deposit="micro", artefacts=ArtefactRates()).artefacts is None
    centres = ((np.arange(256) + 0.5) * 8).astype(np.float32)
    field, truth = plan.tissue.grid(centres, centres) > 0, plan.tissue_mask(8)
    assert not (truth & ~field).any()
    assert truth.sum() < field.sum() if plan.artefacts.kinds()["holes"] else truth.sum() == field.sum()
    look = look_for(6, 0.0)
    for kind, (x0, y0, x1, y1) in plan.artefacts.boxes():
        cx, cy = int((x0 + x1) / 2), int((y0 + y1) / 2)
        big = render_tile(plan, look, 2, cx - 128, cy - 128, 128)
        quads = [[render_tile(plan, look, 2, cx - 128 + c * 128, cy - 128 + r * 128, 64) for c in (0, 1)] for r in (0, 1)]
        assert np.array_equal(np.concatenate([np.concatenate(q, axis=1) for q in quads], axis=0), big), kind
