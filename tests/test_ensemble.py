"""Ensembles: estimator contract, normalisation, blends, nested CV, fit/save/load, report, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.utils.estimator_checks import parametrize_with_checks
from typer.testing import CliRunner

from helpkit.cli import app
from helpkit.ensemble import (
    METHODS,
    BlendClassifier,
    LGBMStacker,
    LogisticStacker,
    apparent_auc,
    cross_val_oof,
    ensemble_report,
    fit_ensemble,
    load_ensemble,
    read_inputs,
    validate_features,
    write_model_oof,
)
from helpkit.ensemble.blend import Normaliser
from helpkit.errors import HelpkitError
from helpkit.scoring import auc, read_predictions

MODELS = ("simple", "unet", "inception")
_NOT_A_GENERAL_CLASSIFIER = (
    "a blend assumes every column is a score that rises with the positive class; the check's "
    "blobs data has features of either sign, so accuracy after averaging ranks is near chance"
)


def make_features(n_train: int = 60, n_test: int = 10, seed: int = 0, signal: tuple = (0.0, 1.0, 2.0)) -> pd.DataFrame:
    """A features table: models of increasing skill, max/mean/q99 columns, fold and failed columns."""
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    y = rng.permutation(np.arange(n) % 2)
    table = {"slide_id": [f"Slide{i:03d}" for i in range(n)], "split": ["train"] * n_train + ["test"] * n_test,
             "label": np.r_[y[:n_train], np.full(n_test, np.nan)]}
    for model, strength in zip(MODELS, signal, strict=True):
        latent = rng.normal(size=n) + strength * y
        table[f"{model}__max"] = 1 / (1 + np.exp(-latent))
        table[f"{model}__mean"] = table[f"{model}__max"] / 3 + rng.normal(scale=0.05, size=n)
        table[f"{model}__q99"] = table[f"{model}__max"] * 0.9
        table[f"{model}__fold"] = np.r_[rng.integers(0, 3, n_train), np.full(n_test, -1)]
        table[f"{model}__failed"] = 0
    return pd.DataFrame(table)


# ---- estimator contract ----------------------------------------------------------------

@parametrize_with_checks(
    [LGBMStacker(), LogisticStacker(), BlendClassifier(method="greedy")],
    expected_failed_checks=lambda est: (
        {name: _NOT_A_GENERAL_CLASSIFIER for name in ("check_classifiers_train",)}
        if isinstance(est, BlendClassifier) else {}
    ),
)
def test_sklearn_estimator_checks(estimator, check) -> None:  # noqa: ANN001
    check(estimator)


@pytest.mark.slow
@parametrize_with_checks([BlendClassifier(method="tuned")],
                         expected_failed_checks=lambda est: {"check_classifiers_train": _NOT_A_GENERAL_CLASSIFIER})
def test_sklearn_estimator_checks_tuned_blend(estimator, check) -> None:  # noqa: ANN001
    check(estimator)


def test_stacker_defaults_are_for_small_data() -> None:
    params = LGBMStacker().get_params()
    assert params["num_leaves"] <= 8 and 1 < params["min_child_samples"] <= 10
    assert params["n_estimators"] <= 200 and params["learning_rate"] <= 0.1 and params["reg_lambda"] > 0


# ---- normalisation and blends ----------------------------------------------------------

@pytest.mark.parametrize("method", ["rank", "zscore", "logit"])
def test_normalisation_of_a_row_ignores_other_rows(method: str) -> None:
    rng = np.random.default_rng(0)
    norm = Normaliser(method).fit(rng.uniform(size=(50, 2)))
    test = rng.uniform(size=(8, 2))
    together = norm.transform(test)
    alone = np.vstack([norm.transform(row[None, :]) for row in test])
    np.testing.assert_allclose(together, alone)
    assert not np.allclose(together, Normaliser(method).fit(test).transform(test))


def test_rank_normalisation_is_train_ecdf() -> None:
    norm = Normaliser("rank").fit(np.array([[0.1], [0.2], [0.3], [0.4]]))
    np.testing.assert_allclose(norm.transform(np.array([[0.0], [0.2], [0.25], [1.0], [np.nan]]))[:, 0],
                               [0.0, 0.375, 0.5, 1.0, np.nan])


def test_blend_uses_available_models_and_falls_back() -> None:
    X = np.array([[0.9, 0.1], [0.1, 0.9], [0.2, 0.3], [0.8, 0.7]])
    blend = BlendClassifier(method="mean", normalisation="none").fit(X, [1, 0, 0, 1])
    p = blend.predict_proba(np.array([[0.6, np.nan], [np.nan, np.nan], [0.2, 0.4]]))[:, 1]
    np.testing.assert_allclose(p, [0.6, 0.5, 0.3])


@pytest.mark.parametrize("method", ["greedy", "optimise"])
def test_weight_tuning_finds_the_informative_model(method: str) -> None:
    features = make_features(n_train=80, signal=(0.0, 0.0, 3.0))
    rows = features[features["split"] == "train"]
    X, y = rows[[f"{m}__max" for m in MODELS]].to_numpy(), rows["label"].to_numpy(int)
    blend = BlendClassifier(method=method).fit(X, y)
    assert blend.weights_.sum() == pytest.approx(1.0) and (blend.weights_ >= 0).all()
    assert np.argmax(blend.weights_) == 2 and blend.weights_[2] > 0.5
    assert auc(y, blend.predict_proba(X)[:, 1]) >= auc(y, X[:, 2]) - 0.02


def _noise(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.uniform(size=(40, 5)), rng.permutation(np.arange(40) % 2)


def test_nested_cv_does_not_flatter_tuned_weights_on_noise() -> None:
    """Greedy weights scored on the slides they were tuned on look good; nested CV does not."""
    nested, apparent = [], []
    for seed in range(8):
        X, y = _noise(seed)
        blend = BlendClassifier(method="greedy", n_rounds=10)
        nested.append(cross_val_oof(blend, X, y, n_splits=4, n_repeats=1, seed=seed).auc)
        apparent.append(apparent_auc(blend, X, y))
    assert np.mean(apparent) > 0.6  # tuning on the scored slides is optimistic
    assert np.mean(nested) < np.mean(apparent)
    assert abs(np.mean(nested) - 0.5) < 0.1


def test_nested_cv_does_not_flatter_method_selection_on_noise() -> None:
    """The tuned blend's own best inner-CV score is selection-biased; the outer CV is not."""
    nested, selected = [], []
    for seed in range(4):
        X, y = _noise(seed)
        blend = BlendClassifier(method="tuned", n_rounds=10)
        selected.append(max(blend.fit(X, y).cv_scores_.values()))
        nested.append(cross_val_oof(blend, X, y, n_splits=4, n_repeats=1, seed=seed).auc)
    assert np.mean(nested) <= np.mean(selected)


def test_cross_val_needs_two_of_each_class() -> None:
    with pytest.raises(HelpkitError, match="at least 2 slides of each class"):
        cross_val_oof(LogisticStacker(), np.zeros((5, 1)), np.array([1, 0, 0, 0, 0]))


# ---- fit / save / load -----------------------------------------------------------------

@pytest.mark.parametrize("method", METHODS)
def test_fit_save_load_predict(tmp_path: Path, method: str) -> None:
    features = make_features()
    features.loc[features.index[-1], "unet__failed"] = 1  # a test slide the unet failed on
    features.loc[features.index[-2], [f"{m}__{f}" for m in MODELS for f in ("max", "mean", "q99")]] = np.nan
    fitted = fit_ensemble(features, method, tmp_path, cv_splits=3, cv_repeats=1)
    test = features[features["split"] == "test"]
    p = load_ensemble(tmp_path).predict_proba(test)
    np.testing.assert_allclose(p, fitted.predict_proba(test))
    assert p.shape == (len(test),) and np.isfinite(p).all() and ((p >= 0) & (p <= 1)).all()
    one_by_one = np.concatenate([load_ensemble(tmp_path).predict_proba(test.iloc[[i]]) for i in range(len(test))])
    np.testing.assert_allclose(p, one_by_one)
    meta = json.loads((tmp_path / "ensemble.json").read_text())
    folds = json.loads((tmp_path / "fold_scores.json").read_text())
    assert meta["method"] == method and meta["n_train"] == 60 and 0 <= folds["auc"] <= 1
    assert len(folds["fold_aucs"]) == 3
    if method == "lgbm":
        assert (tmp_path / "model.txt").read_text().startswith("tree")
        assert json.loads((tmp_path / "stacker.json").read_text())["n_features_in"] == len(meta["columns"])
        assert "unet__mean" in meta["columns"] and not any(c.endswith(("__fold", "__failed")) for c in meta["columns"])


def test_single_picks_best_model_and_all_nan_columns_are_dropped(tmp_path: Path) -> None:
    features = make_features()
    features["simple__q99"] = np.nan
    single = fit_ensemble(features, "single", tmp_path / "single", cv_repeats=1)
    assert single.columns == ["inception__max"]
    stacked = fit_ensemble(features, "logreg", tmp_path / "logreg", cv_repeats=1)
    assert stacked.dropped == ["simple__q99"] and "simple__q99" not in stacked.columns
    assert json.loads((tmp_path / "logreg" / "ensemble.json").read_text())["dropped_columns"] == ["simple__q99"]


def test_fit_without_enough_slides_to_cross_validate(tmp_path: Path) -> None:
    features = make_features(n_train=6)
    features.loc[:5, "label"] = [1, 0, 0, 0, 0, 0]
    fit_ensemble(features, "lgbm", tmp_path)
    assert "at least 2 slides of each class" in json.loads((tmp_path / "fold_scores.json").read_text())["skipped"]
    assert load_ensemble(tmp_path).predict_proba(features).shape == (len(features),)


def test_failed_flag_blanks_features() -> None:
    features = make_features()
    features.loc[0, "unet__failed"] = 1
    checked = validate_features(features)
    assert checked.loc[0, ["unet__max", "unet__mean", "unet__q99"]].isna().all()
    assert checked.loc[0, "simple__max"] == features.loc[0, "simple__max"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.drop(columns="split"), "lacks column"),
        (lambda f: f.assign(label=f["label"].fillna(2)), "label must be"),
        (lambda f: f.assign(split="valid"), "split must be"),
        (lambda f: f.drop(columns=[f"{m}__max" for m in MODELS]), "no '<model>__max' column"),
        (lambda f: f.assign(split="test"), "no training slides with a known label"),
        (lambda f: f.assign(label=f["label"].where(f["split"] == "test", 1.0)), "one class only"),
    ],
)
def test_bad_feature_tables_give_clear_errors(tmp_path: Path, change, message: str) -> None:  # noqa: ANN001
    with pytest.raises(HelpkitError, match=message):
        fit_ensemble(change(make_features()), "lgbm", tmp_path)


def test_unknown_method_and_missing_test_columns(tmp_path: Path) -> None:
    features = make_features()
    with pytest.raises(HelpkitError, match="unknown ensemble method"):
        fit_ensemble(features, "magic", tmp_path)
    with pytest.raises(HelpkitError, match="bad parameter for ensemble method 'lgbm'"):
        fit_ensemble(features, "lgbm", tmp_path, leaves=3)
    with pytest.raises(HelpkitError, match="unknown parameter 'normalisation'; single takes: model"):
        fit_ensemble(features, "single", tmp_path, normalisation="rank")
    fit_ensemble(features, "mean", tmp_path, cv_repeats=1)
    with pytest.raises(HelpkitError, match="lacks column.*inception__max"):
        load_ensemble(tmp_path).predict_proba(features.drop(columns=["inception__max"]))


# ---- report, OOF files, CLI ------------------------------------------------------------

def test_report_rows_and_p_values() -> None:
    report = ensemble_report(make_features(), n_splits=3, n_repeats=1)
    assert report["candidate"].tolist() == [f"single:{m}" for m in MODELS] + ["mean", "tuned", "logreg", "lgbm"]
    best = report[report["best_single"]]
    assert best["candidate"].tolist() == ["single:inception"] and best["p_vs_best_single"].item() == 1.0
    assert ((report["ci_low"] <= report["auc"]) & (report["auc"] <= report["ci_high"])).all()
    assert report.loc[report["candidate"] == "single:simple", "p_vs_best_single"].item() < 0.05


def test_report_skips_a_model_without_scores() -> None:
    features = make_features()
    features["unet__max"] = np.nan
    report = ensemble_report(features, n_splits=3, n_repeats=1)
    assert "single:unet" not in report["candidate"].tolist() and "mean" in report["candidate"].tolist()
    assert report["auc"].notna().all()


def test_oof_files_round_trip_and_mismatch(tmp_path: Path) -> None:
    features = make_features()
    paths = write_model_oof(features, tmp_path)
    assert [p.name for p in paths] == [f"{m}.csv" for m in MODELS]
    frame = pd.read_csv(paths[0])
    assert list(frame.columns) == ["slide_id", "label", "fold", "score"] and len(frame) == 60
    table = read_inputs(paths)
    np.testing.assert_allclose(table["unet__max"], features["unet__max"][:60])
    pd.read_csv(paths[1]).iloc[:-1].to_csv(tmp_path / "short.csv", index=False)
    with pytest.raises(HelpkitError, match="slides differ"):
        read_inputs([paths[0], tmp_path / "short.csv"])


def test_cli_report_tune_fit_predict(tmp_path: Path) -> None:
    features = make_features()
    features.to_parquet(tmp_path / "features.parquet")
    runner = CliRunner()
    result = runner.invoke(app, ["ensemble", "report", str(tmp_path / "features.parquet"), "--out",
                                 str(tmp_path / "rep"), "--splits", "3", "--repeats", "1"])
    assert result.exit_code == 0, result.output
    assert len(pd.read_csv(tmp_path / "rep" / "report.csv")) == 7
    oof = pd.read_csv(tmp_path / "rep" / "oof_scores.csv")
    assert len(oof) == 60 and {"label", "lgbm", "single:unet"} <= set(oof.columns)
    assert (tmp_path / "rep" / "roc.png").read_bytes()[:4] == b"\x89PNG"
    assert runner.invoke(app, ["ensemble", "oof", str(tmp_path / "features.parquet"), "--out",
                               str(tmp_path / "oof")]).exit_code == 0
    tune = runner.invoke(app, ["ensemble", "tune", *[str(tmp_path / "oof" / f"{m}.csv") for m in MODELS],
                               "--splits", "3", "--repeats", "1", "--json"])
    assert tune.exit_code == 0, tune.output
    blends = json.loads(tune.output)["blends"]
    assert set(blends) == {"mean", "greedy", "optimise", "tuned"}
    assert blends["greedy"]["weights"]["inception"] > blends["greedy"]["weights"]["simple"]
    fit = runner.invoke(app, ["ensemble", "fit", str(tmp_path / "features.parquet"), "--method", "lgbm",
                              "--out", str(tmp_path / "lgbm"), "--splits", "3", "--repeats", "1"])
    assert fit.exit_code == 0, fit.output
    predict = runner.invoke(app, ["ensemble", "predict", str(tmp_path / "features.parquet"), "--model",
                                  str(tmp_path / "lgbm"), "--out", str(tmp_path / "output.csv")])
    assert predict.exit_code == 0, predict.output
    test_ids = features.loc[features["split"] == "test", "slide_id"]
    assert len(read_predictions(tmp_path / "output.csv", test_ids, strict=True).scores) == 10

