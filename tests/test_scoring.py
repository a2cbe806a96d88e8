"""Scoring: platform-format validation, AUC and DeLong (variance, CI coverage, paired test), CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from helpkit.cli import app
from helpkit.errors import HelpkitError
from helpkit.scoring import (
    at_threshold,
    auc,
    auc_ci,
    delong_test,
    read_predictions,
    write_predictions,
    youden,
)

IDS = ["Slide001", "Slide002", "Slide003"]


def _write(tmp_path: Path, text: str, name: str = "pred.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _binormal(rng: np.random.Generator, n_pos: int, n_neg: int, shift: float) -> tuple[np.ndarray, np.ndarray]:
    y = np.r_[np.ones(n_pos, int), np.zeros(n_neg, int)]
    return y, rng.normal(size=n_pos + n_neg) + shift * y


# ---- predictions I/O -------------------------------------------------------------------

def test_reads_valid_file_in_order(tmp_path: Path) -> None:
    preds = read_predictions(_write(tmp_path, "Slide002,0.25\nSlide001, 0.75\nSlide003,1\n"), IDS)
    assert list(preds.scores.index) == ["Slide002", "Slide001", "Slide003"]
    assert preds.scores.tolist() == [0.25, 0.75, 1.0]
    assert preds.warnings == []


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("slide_id,probability\nSlide001,0.1\nSlide002,0.2\nSlide003,0.3\n", "line 1: header line"),
        ("Slide001,0.1\nSlide002,0.2\nSlide001,0.3\nSlide003,0.1\n", "line 3: duplicate slide id Slide001 (first on line 1)"),
        ("Slide001,0.1\nSlide002,0.2\nSlide003,0.3\nSlide999,0.3\n", "line 4: slide id Slide999 is not among the expected"),
        ("Slide001,0.1\nSlide003,0.3\n", "no row for: Slide002"),
        ("Slide001,0.1\nSlide002,nan\nSlide003,0.3\n", "line 2: probability of Slide002 is nan"),
        ("Slide001,0.1\nSlide002,0.2\nSlide003,-inf\n", "line 3: probability of Slide003 is -inf"),
        ("Slide001,0.1\nSlide002,0.2,x\nSlide003,0.3\n", "line 2: expected 2 columns"),
        ("Slide001,0.1\nSlide002,high\nSlide003,0.3\n", "line 2: probability 'high' is not a number"),
        ("Slide001,0.1\n\nSlide002,0.2\nSlide003,0.3\n", "line 2: empty line"),
        ("", "file is empty"),
    ],
)
def test_each_format_error_names_its_row(tmp_path: Path, text: str, expected: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(HelpkitError, match="problem") as err:
        read_predictions(path, IDS)
    assert expected in str(err.value)
    assert err.value.path == path


def test_all_problems_reported_together(tmp_path: Path) -> None:
    with pytest.raises(HelpkitError) as err:
        read_predictions(_write(tmp_path, "Slide001,x\nSlide001,0.2\nSlide001,0.3\n"), IDS)
    message = str(err.value)
    assert "3 problem(s)" in message
    assert "line 1: header line" in message and "line 3: duplicate" in message
    assert "no row for: Slide002, Slide003" in message


def test_out_of_range_and_constant_are_warnings_or_strict_errors(tmp_path: Path) -> None:
    out_of_range = _write(tmp_path, "Slide001,90.5\nSlide002,0.2\nSlide003,0.3\n")
    preds = read_predictions(out_of_range, IDS)
    assert preds.warnings == ["1 value(s) outside [0, 1]: line 1: Slide001 = 90.5"]
    with pytest.raises(HelpkitError, match="strict: 1 value"):
        read_predictions(out_of_range, IDS, strict=True)
    constant = _write(tmp_path, "Slide001,0.5\nSlide002,0.5\nSlide003,0.5\n", "c.csv")
    assert "constant column" in read_predictions(constant, IDS).warnings[0]
    with pytest.raises(HelpkitError, match="constant"):
        read_predictions(constant, IDS, strict=True)


def test_write_predictions_round_trips_and_refuses_bad_values(tmp_path: Path) -> None:
    scores = pd.Series([0.1, 1 / 3, 1.0], index=IDS)
    path = tmp_path / "out" / "output.csv"
    write_predictions(path, scores)
    back = read_predictions(path, IDS, strict=True).scores
    assert back.equals(scores.rename_axis("slide_id").rename("probability"))
    assert not path.read_text().startswith("slide_id")
    for bad in ([0.1, np.nan, 0.2], [0.1, 1.5, 0.2]):
        with pytest.raises(HelpkitError, match="non-probabilities.*Slide002"):
            write_predictions(tmp_path / "bad.csv", pd.Series(bad, index=IDS))
    with pytest.raises(HelpkitError, match="duplicate"):
        write_predictions(tmp_path / "bad.csv", pd.Series([0.1, 0.2], index=["A", "A"]))
    assert not (tmp_path / "bad.csv").exists()


ODD_IDS = ["Slide,001", 'Slide "002"', "Slide003", "Slide 004"]
"""Ids a file name can give: a comma, quotes, a space; only those that need it are quoted."""


def test_ids_with_commas_and_quotes_round_trip(tmp_path: Path) -> None:
    scores = pd.Series([0.25, 0.5, 0.75, 0.125], index=ODD_IDS)
    path = tmp_path / "output.csv"
    write_predictions(path, scores)
    lines = path.read_text().splitlines()
    assert lines == ['"Slide,001",0.25', '"Slide ""002""",0.5', "Slide003,0.75", "Slide 004,0.125"]
    back = read_predictions(path, ODD_IDS, strict=True).scores
    assert list(back.index) == ODD_IDS
    assert back.tolist() == [0.25, 0.5, 0.75, 0.125]


def test_cli_scores_ids_with_commas(tmp_path: Path) -> None:
    ids = ["a,1", "b,2", "c", "d"]
    pd.DataFrame({"slide_id": ids, "label": [1, 0, 1, 0]}).to_csv(tmp_path / "labels.csv", index=False)
    write_predictions(tmp_path / "pred.csv", pd.Series([0.9, 0.1, 0.8, 0.2], index=ids))
    result = CliRunner().invoke(app, ["score", str(tmp_path / "pred.csv"), "--labels", str(tmp_path / "labels.csv"),
                                      "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["n"] == 4 and data["auc"]["auc"] == 1.0


# ---- metrics ---------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(5))
def test_auc_equals_sklearn_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, 40)
    y[:2] = [0, 1]
    s = np.round(rng.normal(size=40) + y, 1)  # rounding makes ties
    assert auc_ci(y, s).auc == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    assert auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-12)


def _placement_covariance(y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """DeLong et al. (1988) covariance straight from the O(n^2) kernel psi(x, y)."""
    pos, neg = scores[:, y == 1], scores[:, y == 0]
    psi = (pos[:, :, None] > neg[:, None, :]) + 0.5 * (pos[:, :, None] == neg[:, None, :])
    v10, v01 = psi.mean(axis=2), psi.mean(axis=1)  # per positive, per negative
    return np.cov(v10) / pos.shape[1] + np.cov(v01) / neg.shape[1]


def test_delong_variance_matches_placement_formula() -> None:
    rng = np.random.default_rng(7)
    y, s1 = _binormal(rng, 23, 31, 1.0)
    s2 = np.round(s1 + rng.normal(size=len(y)), 1)
    expected = _placement_covariance(y, np.vstack([s1, s2]))
    assert auc_ci(y, s1).variance == pytest.approx(expected[0, 0], rel=1e-10)
    test = delong_test(y, s1, s2)
    assert test.b.variance == pytest.approx(expected[1, 1], rel=1e-10)
    assert test.variance == pytest.approx(expected[0, 0] + expected[1, 1] - 2 * expected[0, 1], rel=1e-10)


def test_ci_coverage_near_nominal() -> None:
    rng = np.random.default_rng(0)
    shift = 1.0
    true_auc = stats.norm.cdf(shift / np.sqrt(2))
    hits = []
    for _ in range(200):
        y, s = _binormal(rng, 40, 60, shift)
        r = auc_ci(y, s)
        hits.append(r.ci_low <= true_auc <= r.ci_high)
    assert 0.90 <= np.mean(hits) <= 0.99


def test_paired_test_null_uniformish_and_power() -> None:
    rng = np.random.default_rng(1)
    p_null = []
    for _ in range(200):
        y, latent = _binormal(rng, 30, 30, 1.0)
        p_null.append(delong_test(y, latent + rng.normal(size=60), latent + rng.normal(size=60)).p_value)
    p_null = np.asarray(p_null)
    assert 0.01 <= np.mean(p_null < 0.05) <= 0.10
    assert stats.kstest(p_null, "uniform").pvalue > 0.01
    y, latent = _binormal(rng, 50, 50, 2.5)
    clear = delong_test(y, latent, rng.normal(size=100))
    assert clear.difference > 0.3 and clear.p_value < 1e-4


def test_identical_predictors_p_one_and_one_class_error() -> None:
    y = np.array([0, 1, 0, 1])
    s = np.array([0.1, 0.9, 0.2, 0.8])
    assert delong_test(y, s, s).p_value == 1.0
    with pytest.raises(HelpkitError, match="one class only"):
        auc_ci(np.ones(4, int), s)


def test_threshold_metrics_match_counts() -> None:
    rng = np.random.default_rng(3)
    y, s = _binormal(rng, 20, 30, 1.5)
    r = at_threshold(y, s, 0.7)
    called = s >= 0.7
    assert (r.tp, r.fn) == (int((called & (y == 1)).sum()), int((~called & (y == 1)).sum()))
    assert r.sensitivity == pytest.approx(r.tp / 20) and r.specificity == pytest.approx(r.tn / 30)
    best = youden(y, s)
    j = [at_threshold(y, s, t).sensitivity + at_threshold(y, s, t).specificity for t in np.unique(s)]
    assert best.sensitivity + best.specificity == pytest.approx(max(j))


# ---- CLI -------------------------------------------------------------------------------

@pytest.fixture()
def scored(tmp_path: Path) -> Path:
    rng = np.random.default_rng(5)
    y, s = _binormal(rng, 12, 18, 1.5)
    ids = [f"S{i:02d}" for i in range(30)]
    pd.DataFrame({"slide_id": ids, "label": y}).to_csv(tmp_path / "labels.csv", index=False)
    write_predictions(tmp_path / "a.csv", pd.Series(stats.norm.cdf(s), index=ids))
    write_predictions(tmp_path / "b.csv", pd.Series(rng.uniform(size=30), index=ids))
    return tmp_path


def test_cli_score_text_json_and_plot(scored: Path) -> None:
    runner = CliRunner()
    text = runner.invoke(app, ["score", str(scored / "a.csv"), "--labels", str(scored / "labels.csv"),
                               "--plot", str(scored / "roc.png"), "--threshold", "0.6"])
    assert text.exit_code == 0, text.output
    assert "AUC 0." in text.output and "95% CI" in text.output and "fixed threshold 0.6" in text.output
    assert (scored / "roc.png").read_bytes()[:4] == b"\x89PNG"
    result = runner.invoke(app, ["score", str(scored / "a.csv"), "--labels", str(scored / "labels.csv"), "--json"])
    data = json.loads(result.output)
    assert data["n"] == 30 and data["auc"]["n_positive"] == 12
    labels = pd.read_csv(scored / "labels.csv")
    preds = read_predictions(scored / "a.csv").scores.reindex(labels["slide_id"])
    assert data["auc"]["auc"] == pytest.approx(roc_auc_score(labels["label"], preds))


def test_cli_compare_and_bad_input(scored: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["compare", str(scored / "a.csv"), str(scored / "b.csv"),
                                 "--labels", str(scored / "labels.csv"), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert 0 <= data["p_value"] <= 1 and data["difference"] == pytest.approx(data["a"]["auc"] - data["b"]["auc"])
    (scored / "extra.csv").write_text((scored / "a.csv").read_text() + "Unlabelled,0.5\n")
    bad = runner.invoke(app, ["score", str(scored / "extra.csv"), "--labels", str(scored / "labels.csv")])
    assert isinstance(bad.exception, HelpkitError) and "Unlabelled is not among the expected" in str(bad.exception)
    (scored / "one.csv").write_text("slide_id,label\nS00,1\nS01,1\n")
    one = runner.invoke(app, ["score", str(scored / "a.csv"), "--labels", str(scored / "one.csv")])
    assert isinstance(one.exception, HelpkitError)  # a.csv has slides the 2-row labels lack
    (scored / "a2.csv").write_text("S00,0.2\nS01,0.7\n")
    one = runner.invoke(app, ["score", str(scored / "a2.csv"), "--labels", str(scored / "one.csv")])
    assert "one class only" in str(one.exception)
