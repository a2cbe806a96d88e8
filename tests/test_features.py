"""Slide-level features against values worked out by hand on small made-up heatmaps."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from helpkit.errors import HelpkitError
from helpkit.features import CALIBRATION_FEATURES, FEATURE_NAMES, build_features, slide_features
from helpkit.heatmap.store import Heatmap, heatmap_path, read_heatmap, write_heatmap
from helpkit.slide.geometry import PatchGeometry

GEOMETRY = PatchGeometry(mpp=1.0, patch_size=50)


def make(prob, tissue=None, missing=None, *, slide_id="S1", model="m", mpp=None, folds=(0,), label=1.0,
         split="train") -> Heatmap:
    prob = np.asarray(prob, dtype=np.float32)
    tissue = np.ones(prob.shape, bool) if tissue is None else np.asarray(tissue, bool)
    missing = np.zeros(prob.shape, bool) if missing is None else np.asarray(missing, bool)
    prob = np.where(tissue & ~missing, prob, np.nan).astype(np.float32)
    return Heatmap(prob=prob, tissue=tissue, missing=missing, origin=(0, 0), stride0=100, patch_size0=100,
                   geometry=GEOMETRY, slide_id=slide_id, model=model, split=split, label=label,
                   folds=list(folds), mpp=mpp)


def test_all_zero_map():
    f = slide_features(make(np.zeros((4, 5))))
    assert list(f) == FEATURE_NAMES
    for name in ("max", "mean", "std", "q50", "q99", "n_above_50", "frac_above_90", "cc_50_count",
                 "cc_50_largest_area", "cc_90_largest_major_axis", "cc_50_largest_max", "missing_frac"):
        assert f[name] == 0, name
    assert f["tissue_patches"] == 20
    assert math.isnan(f["tissue_mm2"])  # no mpp known


def test_two_components_by_hand():
    prob = np.zeros((6, 8))
    prob[0:2, 0:3] = 0.95  # component A: 6 cells, all >= 0.9
    prob[4, 5:8] = [0.6, 0.7, 0.8]  # component B: 3 cells in a row, >= 0.5 only
    prob[5, 0] = 0.4  # below both thresholds
    tissue = np.ones(prob.shape, bool)
    tissue[5, 7] = False  # one cell off tissue: ignored
    f = slide_features(make(prob, tissue, mpp=(0.5, 0.5)))
    values = prob[tissue]
    assert f["max"] == pytest.approx(0.95)
    assert f["mean"] == pytest.approx(values.mean(), rel=1e-6)
    assert f["std"] == pytest.approx(values.std(), rel=1e-5)
    assert f["q90"] == pytest.approx(np.percentile(values, 90), rel=1e-6)
    assert f["n_above_50"] == 9 and f["n_above_90"] == 6
    assert f["frac_above_50"] == pytest.approx(9 / 47)
    assert f["cc_50_count"] == 2 and f["cc_90_count"] == 1
    assert f["cc_50_largest_area"] == 6
    assert f["cc_50_largest_max"] == pytest.approx(0.95)
    assert f["cc_50_largest_mean"] == pytest.approx(0.95)
    # a 2x3 block: column variance 2/3, row variance 1/4 -> major axis 4 * sqrt(2/3)
    assert f["cc_50_largest_major_axis"] == pytest.approx(4 * math.sqrt(2 / 3), rel=1e-6)
    assert f["tissue_patches"] == 47
    assert f["tissue_mm2"] == pytest.approx(47 * 100**2 * 0.25 / 1e6)


def test_largest_component_stats_and_diagonal_connectivity():
    prob = np.zeros((5, 5))
    np.fill_diagonal(prob, [0.6, 0.7, 0.8, 0.9, 1.0])  # diagonal: one 8-connected component
    prob[0, 4] = 0.55
    f = slide_features(make(prob))
    assert f["cc_50_count"] == 2
    assert f["cc_50_largest_area"] == 5
    assert f["cc_50_largest_mean"] == pytest.approx(0.8)
    assert f["cc_50_largest_max"] == pytest.approx(1.0)


def test_missing_cells_are_left_out():
    prob = np.full((2, 2), 0.2)
    missing = np.array([[True, False], [False, False]])
    f = slide_features(make(prob, missing=missing))
    assert f["missing_frac"] == pytest.approx(0.25)
    assert f["tissue_patches"] == 4
    assert f["mean"] == pytest.approx(0.2)


def test_failed_heatmap_gives_nan():
    failed = Heatmap.failure(error="cannot open", slide_id="S", model="m", split="test", label=np.nan,
                             geometry=GEOMETRY, folds=[0, 1])
    assert all(math.isnan(v) for v in slide_features(failed).values())


def test_table_columns_rows_and_flags(tmp_path):
    root = tmp_path / "heatmaps"
    write_heatmap(heatmap_path(root, "a", "S1"), make(np.full((2, 2), 0.7), slide_id="S1", model="a"))
    write_heatmap(heatmap_path(root, "a", "S2"), make(np.zeros((2, 2)), slide_id="S2", model="a", folds=(0, 1),
                                                     label=np.nan, split="test"))
    write_heatmap(heatmap_path(root, "b", "S1"), Heatmap.failure(
        error="broken", slide_id="S1", model="b", split="train", label=1.0, geometry=GEOMETRY, folds=[1]))
    out = tmp_path / "features.parquet"
    assert build_features([root], out)
    table = pd.read_parquet(out)
    assert list(table["slide_id"]) == ["S1", "S2"]
    assert list(table.columns[:3]) == ["slide_id", "split", "label"]
    assert {f"a__{n}" for n in FEATURE_NAMES} <= set(table.columns)
    s1, s2 = table.iloc[0], table.iloc[1]
    assert s1["a__max"] == pytest.approx(0.7) and s1["a__fold"] == 0 and s1["a__failed"] == 0
    assert s2["a__fold"] == -1 and s2["split"] == "test" and math.isnan(s2["label"])
    assert s1["b__failed"] == 1 and math.isnan(s1["b__max"])
    assert s2["b__failed"] == 1  # model b has no heatmap of S2 at all


def test_features_skip_unless_inputs_change_or_force(tmp_path):
    root = tmp_path / "heatmaps"
    write_heatmap(heatmap_path(root, "a", "S1"), make(np.zeros((2, 2))))
    out = tmp_path / "f.parquet"
    assert build_features([root], out)
    assert not build_features([root], out)
    assert build_features([root], out, force=True)
    write_heatmap(heatmap_path(root, "a", "S2"), make(np.zeros((2, 2)), slide_id="S2"))
    assert build_features([root], out)
    assert len(pd.read_parquet(out)) == 2


def test_same_model_twice_is_an_error(tmp_path):
    for parent in ("x", "y"):
        write_heatmap(heatmap_path(tmp_path / parent, "a", "S1"), make(np.zeros((1, 1))))
    with pytest.raises(HelpkitError, match="two heatmap folders"):
        build_features([tmp_path / "x", tmp_path / "y"], tmp_path / "f.parquet")


def test_store_round_trip_and_schema_check(tmp_path):
    hm = make(np.array([[0.1, 0.9]]), mpp=(0.25, 0.26))
    hm.errors, hm.key = ["cell (0, 0): boom"], "abc123"
    path = tmp_path / "m" / "S1.npz"
    write_heatmap(path, hm)
    back = read_heatmap(path)
    np.testing.assert_array_equal(back.prob, hm.prob)
    assert (back.slide_id, back.model, back.folds, back.errors, back.mpp) == ("S1", "m", [0], hm.errors, (0.25, 0.26))
    assert (back.geometry, back.patch_size, back.key) == (GEOMETRY, 50, "abc123")
    with np.load(path) as npz:
        data = dict(npz)
    data["schema_version"] = np.int64(99)
    np.savez(path, **data)
    with pytest.raises(HelpkitError, match="schema_version 99"):
        read_heatmap(path)


def test_calibration_features_by_hand():
    f = slide_features(make(np.array([[0.5, 0.5], [0.5, 0.9]])))
    # logits 0, 0, 0, logit(0.9): the max stands logit(0.9) above the median, sqrt(3) stds above the mean
    assert f["logit_max_minus_q50"] == pytest.approx(math.log(9), rel=1e-5)
    assert f["logit_max_minus_q90"] == pytest.approx(0.3 * math.log(9), rel=1e-5)  # q90 at 0.7 of the way
    assert f["logit_max_z"] == pytest.approx(math.sqrt(3), rel=1e-5)
    flat = slide_features(make(np.full((2, 2), 0.3)))
    assert flat["logit_max_minus_q50"] == flat["logit_max_z"] == 0
    empty = slide_features(make(np.full((2, 2), 0.3), missing=np.ones((2, 2), bool)))
    assert all(math.isnan(empty[name]) for name in CALIBRATION_FEATURES)


def test_calibration_features_ignore_a_shift_of_every_logit():
    rng = np.random.default_rng(0)
    logits = rng.normal(-3, 2, size=(8, 8))
    logits[2:4, 2:4] += 6  # a hot region
    base = slide_features(make(1 / (1 + np.exp(-logits))))
    shifted = slide_features(make(1 / (1 + np.exp(-(logits + 1.5)))))  # a stain shift: every cell hotter
    scaled = slide_features(make(1 / (1 + np.exp(-(0.7 * logits + 1.0)))))
    assert shifted["max"] > base["max"] and shifted["q50"] > base["q50"]  # the plain features move
    for name in CALIBRATION_FEATURES:
        assert shifted[name] == pytest.approx(base[name], rel=1e-3), name
    assert scaled["logit_max_z"] == pytest.approx(base["logit_max_z"], rel=1e-3)
