"""Test-time augmentation: the mean over the named symmetries, invariant to them, keyed apart on disk."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from helpkit.errors import HelpkitError
from helpkit.heatmap.make import Options, heatmap_key, make_heatmaps
from helpkit.heatmap.store import heatmap_path, read_heatmap
from helpkit.heatmap.tta import tta_predict, tta_transforms
from helpkit.heatmap.tta_spec import TTAS
from test_heatmap import TEST_SLIDE, dataset, red_fraction, red_predictor  # noqa: F401  (dataset: a fixture)

P = 8
WEIGHTS = np.random.default_rng(1).random((P, P, 3)).astype(np.float32)


def asymmetric(batch: np.ndarray) -> np.ndarray:
    """A 'model' that sees where each pixel is: every flip or turn changes its answer."""
    return (batch.astype(np.float32) * WEIGHTS).sum(axis=(1, 2, 3)) / (255 * WEIGHTS.sum())


@pytest.fixture
def batch() -> np.ndarray:
    return np.random.default_rng(2).integers(0, 256, (5, P, P, 3), dtype=np.uint8)


def flips(x: np.ndarray) -> list[np.ndarray]:
    return [x, x[:, :, ::-1], x[:, ::-1], x[:, ::-1, ::-1]]


def d4(x: np.ndarray) -> list[np.ndarray]:
    return [np.rot90(y, k, axes=(1, 2)) for y in (x, x[:, :, ::-1]) for k in range(4)]


MANUAL = {"flips": flips, "d4": d4}


@pytest.mark.parametrize("name", ["flips", "d4"])
def test_tta_predict_is_the_mean_over_the_transformed_batch(batch: np.ndarray, name: str) -> None:
    expected = np.mean([asymmetric(x) for x in MANUAL[name](batch)], axis=0)
    np.testing.assert_allclose(tta_predict(asymmetric, name)(batch), expected, rtol=1e-6)
    assert len(tta_transforms(name)) == len(MANUAL[name](batch))


@pytest.mark.parametrize("name", ["flips", "d4"])
def test_tta_output_is_invariant_to_its_symmetries_and_the_model_is_not(batch: np.ndarray, name: str) -> None:
    predict = tta_predict(asymmetric, name)
    reference = predict(batch)
    for moved in MANUAL[name](batch)[1:]:
        assert not np.allclose(asymmetric(moved), asymmetric(batch))
        np.testing.assert_allclose(predict(np.ascontiguousarray(moved)), reference, rtol=1e-6)
    turned = np.rot90(batch, 1, axes=(1, 2))
    assert np.allclose(tta_predict(asymmetric, "d4")(turned), tta_predict(asymmetric, "d4")(batch))
    assert not np.allclose(tta_predict(asymmetric, "flips")(turned), tta_predict(asymmetric, "flips")(batch))


def test_none_is_the_predictor_itself_and_each_tta_measures_its_own_batch_size() -> None:
    assert tta_predict(asymmetric, "none") is asymmetric
    asymmetric.batch_key = ("run", (0,))  # type: ignore[attr-defined]
    try:
        keys = {tta_predict(asymmetric, name).batch_key for name in ("flips", "d4")}  # type: ignore[attr-defined]
    finally:
        del asymmetric.batch_key  # type: ignore[attr-defined]
    assert len(keys) == 2 and ("run", (0,)) not in keys


def test_unknown_tta_is_one_helpkit_error() -> None:
    with pytest.raises(HelpkitError, match="unknown TTA 'd8'.*none, flips, d4"):
        tta_predict(asymmetric, "d8")
    with pytest.raises(HelpkitError, match="unknown TTA"):
        make_heatmaps([], [], "unused", Options(tta="d8"))


def left_half_red(batch: np.ndarray) -> np.ndarray:
    """Red share of the patch's left half only: its mean over flips or d4 is the whole patch's red share."""
    return red_fraction(batch[:, :, : batch.shape[2] // 2])


def test_tta_heatmap_is_keyed_apart_recomputed_and_recorded(tmp_path: Path, dataset) -> None:  # noqa: F811
    slides, run_dir = dataset
    test = [s for s in slides if s.slide_id == TEST_SLIDE]
    out = tmp_path / "hm"

    def run(tta: str) -> dict[str, int]:
        return make_heatmaps([run_dir], test, out, Options(stride=16, tta=tta), lambda run, folds: left_half_red)

    def read():
        return read_heatmap(heatmap_path(out, "a", TEST_SLIDE))

    assert run("none")["written"] == 1
    plain = read()
    assert run("d4")["written"] == 1  # not reused: another key
    averaged = read()
    assert averaged.key != plain.key and (plain.tta, averaged.tta) == ("none", "d4")
    assert run("d4")["skipped"] == 1
    assert run("none")["written"] == 1 and read().key == plain.key  # the d4 file is not taken for a none one
    make_heatmaps([run_dir], test, tmp_path / "whole", Options(stride=16), red_predictor([]))  # cells astride edges
    whole = read_heatmap(heatmap_path(tmp_path / "whole", "a", TEST_SLIDE))
    assert not np.allclose(plain.prob, whole.prob, equal_nan=True)
    np.testing.assert_allclose(averaged.prob, whole.prob, atol=1e-6)


def test_tta_none_keeps_the_keys_heatmaps_had(dataset) -> None:  # noqa: F811
    from helpkit.io import file_identity
    from helpkit.train import load_run

    slides, run_dir = dataset
    run = load_run(run_dir)
    args = (slides[0], file_identity(slides[0].path), run, {0: "m0", 1: "m1"}, [1], run.geometry)
    keys = {name: heatmap_key(*args, tta=name) for name in TTAS}
    assert keys["none"] == heatmap_key(*args) and len(set(keys.values())) == len(TTAS)


def test_pipeline_groups_models_by_tta(monkeypatch, tmp_path: Path) -> None:
    import helpkit.heatmap.make
    from helpkit.pipeline import _heatmaps

    calls = []
    monkeypatch.setattr(helpkit.heatmap.make, "make_heatmaps",
                        lambda dirs, records, out, options, **kw: calls.append((dirs, options.tta)) or {"written": 1})
    models = [SimpleNamespace(mixed_precision=False, xla=False, tta=t) for t in ("d4", "none", "d4")]
    counts = _heatmaps([Path("a"), Path("b"), Path("c")], SimpleNamespace(models=models), [], tmp_path)
    assert calls == [([Path("a"), Path("c")], "d4"), ([Path("b")], "none")] and counts == {"written": 2}


def test_cli_rejects_an_unknown_tta_in_one_line(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "helpkit", "heatmap", "-m", str(tmp_path), "--data", str(tmp_path),
                          "--out", str(tmp_path / "hm"), "--tta", "rot"], capture_output=True, text=True)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and "unknown TTA 'rot'" in lines[0]
