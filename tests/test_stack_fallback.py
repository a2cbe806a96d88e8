"""LGBMStacker on few slides: the score-model fallback below min_slides, the tie-break, save/load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpkit.ensemble import LGBMStacker, fit_ensemble, load_ensemble
from helpkit.ensemble.stack import score_columns

MODELS = ("simple", "unet", "inception")


def slides(n: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Named slide features: each model's max (informative) and two noise features, half positive."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(n) % 2)
    columns = {}
    for model in MODELS:
        columns[f"{model}__max"] = 1 / (1 + np.exp(-(rng.normal(size=n) + 1.5 * y)))
        columns[f"{model}__mean"] = rng.normal(size=n)
        columns[f"{model}__tissue_patches"] = rng.integers(100, 1000, n).astype(float)
    return pd.DataFrame(columns), y


def test_score_columns_are_the_named_max_columns_else_all() -> None:
    X, _ = slides(4)
    assert score_columns(np.asarray(X.columns), X.shape[1]) == [0, 3, 6]
    assert score_columns(None, 5) == [0, 1, 2, 3, 4]
    assert score_columns(np.asarray(["a__mean", "b__q99"]), 2) == [0, 1]


def test_fallback_below_min_slides_and_trees_from_it() -> None:
    X, y = slides(24)
    few = LGBMStacker(min_slides=20).fit(X.iloc[:16], y[:16])
    assert few.fitted_with_ == "logreg" and few.booster_ is None
    enough = LGBMStacker(min_slides=20).fit(X.iloc[:20], y[:20])
    assert enough.fitted_with_ == "lgbm" and enough.booster_ is not None
    test, _ = slides(50, seed=1)
    np.testing.assert_allclose(few.predict_proba(test), few.score_model_.predict_proba(test.to_numpy()[:, [0, 3, 6]]))
    assert few.predict_proba(test).shape == enough.predict_proba(test).shape == (50, 2)


def test_tie_break_gives_each_slide_its_own_value_on_16_slides() -> None:
    X, y = slides(16)
    test, _ = slides(100, seed=1)
    trees = LGBMStacker(min_slides=0, tie_break=0.0).fit(X, y).predict_proba(test)[:, 1]
    broken = LGBMStacker(min_slides=0).fit(X, y).predict_proba(test)[:, 1]
    fallback = LGBMStacker().fit(X, y).predict_proba(test)[:, 1]
    assert len(np.unique(trees)) < 100  # the problem: slides tie
    assert len(np.unique(broken)) == len(np.unique(fallback)) == 100
    assert np.abs(broken - trees).max() <= 0.01  # a tie-break, not a different model
    assert ((broken >= 0) & (broken <= 1)).all()


@pytest.mark.parametrize("min_slides", [0, 40])
def test_save_load_round_trip(tmp_path: Path, min_slides: int) -> None:
    X, y = slides(30)
    fitted = LGBMStacker(min_slides=min_slides).fit(X, y)
    fitted.save(tmp_path)
    back = LGBMStacker.load(tmp_path)
    test, _ = slides(20, seed=2)
    np.testing.assert_allclose(back.predict_proba(test), fitted.predict_proba(test))
    saved = json.loads((tmp_path / "stacker.json").read_text())
    assert saved["fitted_with"] == back.fitted_with_ == ("lgbm" if min_slides == 0 else "logreg")
    assert (tmp_path / "model.txt").is_file() == (min_slides == 0)
    assert back.get_params() == fitted.get_params()


def test_a_folder_saved_before_the_score_model_loads_as_plain_trees(tmp_path: Path) -> None:
    X, y = slides(30)
    trees = LGBMStacker(min_slides=0, tie_break=0.0).fit(X, y)
    trees.save(tmp_path)
    saved = json.loads((tmp_path / "stacker.json").read_text())
    old = {k: v for k, v in saved.items() if k not in ("fitted_with", "score_columns", "score_model")}
    old["params"] = {k: v for k, v in saved["params"].items() if k not in ("min_slides", "tie_break")}
    (tmp_path / "stacker.json").write_text(json.dumps(old))
    np.testing.assert_allclose(LGBMStacker.load(tmp_path).predict_proba(X), trees.predict_proba(X))


def test_fit_ensemble_on_16_slides_records_the_fallback(tmp_path: Path) -> None:
    X, y = slides(26)
    table = pd.concat([pd.DataFrame({"slide_id": [f"S{i:02d}" for i in range(26)],
                                     "split": ["train"] * 16 + ["test"] * 10,
                                     "label": np.r_[y[:16], np.full(10, np.nan)]}), X], axis=1)
    fit_ensemble(table, "lgbm", tmp_path, cv_splits=3, cv_repeats=1)
    assert json.loads((tmp_path / "stacker.json").read_text())["fitted_with"] == "logreg"
    p = load_ensemble(tmp_path).predict_proba(table[table["split"] == "test"])
    assert len(np.unique(p)) == 10
