"""bench/bench_quality.py: its --quick run writes the table and the figure; the deposit-size scoring."""

from __future__ import annotations

import functools
import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpkit.errors import HelpkitError
from helpkit.scoring import DEPOSIT_CLASSES, sensitivity_by_class, youden_threshold

BENCH = Path(__file__).resolve().parents[1] / "bench" / "bench_quality.py"


def test_youden_threshold_hand_case() -> None:
    # Negatives 0.1 0.2 0.3 0.5, positives 0.4 0.8 0.9: J is 0.75 at 0.4 (all positives, one
    # false positive), 0.67 at 0.8 (two positives, no false positive).
    labels = np.array([0, 0, 0, 0, 1, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.5, 0.4, 0.8, 0.9])
    assert youden_threshold(labels, scores) == pytest.approx(0.4)


def test_sensitivity_by_class_hand_case() -> None:
    classes = ["negative", "macro", "macro", "micro", "MICRO", "micro", "negative"]
    scores = np.array([0.9, 0.7, 0.2, 0.5, 0.49, 0.1, 0.0])
    result = sensitivity_by_class(classes, scores, threshold=0.5)
    assert list(result) == list(DEPOSIT_CLASSES)
    assert (result["macro"].n, result["macro"].detected, result["macro"].sensitivity) == (2, 1, 0.5)
    assert (result["micro"].n, result["micro"].detected) == (3, 1)  # 0.5 counts (>=), 0.49 does not
    assert result["itc"].n == 0 and math.isnan(result["itc"].sensitivity)


def test_sensitivity_by_class_checks_inputs() -> None:
    with pytest.raises(HelpkitError, match="unknown size class"):
        sensitivity_by_class(["tumour"], np.array([0.5]), 0.5)
    with pytest.raises(HelpkitError, match="2 size classes for 1 scores"):
        sensitivity_by_class(["itc", "micro"], np.array([0.5]), 0.5)
    with pytest.raises(HelpkitError, match="NaN"):
        sensitivity_by_class(["itc"], np.array([np.nan]), 0.5)


@functools.cache
def _bench():
    """bench/bench_quality.py as a module (bench/ is not a package)."""
    spec = importlib.util.spec_from_file_location("bench_quality", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _check_table(table: pd.DataFrame, candidates: list[str]) -> None:
    bench = _bench()
    assert table["candidate"].tolist() == candidates
    phases = list(bench.PHASES)
    expected = ["candidate", *(f"{p}_{k}" for p in phases for k in ("auc", "ci_low", "ci_high")), "drop",
                *(f"{p}_p_vs_seed" for p in phases), "threshold",
                *(f"{p}_{k}" for p in phases for k in ("sens_macro", "sens_micro", "sens_itc", "specificity"))]
    assert list(table.columns) == expected
    for phase in phases:
        auc, low, high = (table[f"{phase}_{k}"] for k in ("auc", "ci_low", "ci_high"))
        assert auc.between(0, 1).all() and (low <= auc).all() and (auc <= high).all()
    assert np.allclose(table["drop"], table["phase1_auc"] - table["phase2_auc"])
    seed = table["candidate"] == bench.SEED_STYLE
    assert table.loc[seed, "phase1_p_vs_seed"].isna().all() and table.loc[~seed, "phase2_p_vs_seed"].between(0, 1).all()


def _truth() -> dict[str, pd.DataFrame]:
    """40 test slides per phase, a quarter each negative, macro, micro and itc."""
    ids = [f"Slide{k:03d}" for k in range(40)]
    classes = np.array(["negative", "macro", "micro", "itc"] * 10)
    return {p: pd.DataFrame({"label": (classes != "negative").astype(int), "size_class": classes}, index=ids)
            for p in _bench().PHASES}


def test_quality_table_and_plot(tmp_path: Path) -> None:
    bench = _bench()
    rng = np.random.default_rng(0)
    truth = _truth()
    ids = truth["phase1"].index
    candidates = [bench.SEED_STYLE, "simple max", "lgbm stack"]
    y = truth["phase1"]["label"].to_numpy()
    scores = {p: pd.DataFrame({c: y * (0.4 - 0.25 * k) + rng.uniform(0, 0.6, len(ids)) for c in candidates}, index=ids)
              for k, p in enumerate(bench.PHASES)}
    table = bench.quality_table(scores, truth)
    _check_table(table, candidates)
    assert (table["phase1_auc"] > table["phase2_auc"]).all()  # the phase-2 scores separate less
    printed = bench.printable(table)
    assert len(printed) == len(candidates) and printed["p vs seed 1"].iloc[0] == "-"
    bench.plot(table, {p: {c: 10 for c in DEPOSIT_CLASSES} for p in bench.PHASES}, tmp_path / "q.png")
    assert (tmp_path / "q.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_class_aucs_score_each_deposit_class_against_the_negatives() -> None:
    """A score that ranks macro and micro slides above every negative and ITC slides below them:
    1.0, 1.0 and 0.0 by class; overall the share of (positive, negative) pairs in order."""
    bench = _bench()
    frame = _truth()["phase1"]
    frame["score"] = frame["size_class"].map({"negative": 0.5, "macro": 0.9, "micro": 0.7, "itc": 0.1})
    result = bench.class_aucs(frame, "score")
    assert result == pytest.approx({"auc": 2 / 3, "auc_macro": 1.0, "auc_micro": 1.0, "auc_itc": 0.0})


def test_compare_reads_scores_of_runs_and_tests_against_the_first(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    bench = _bench()
    rng = np.random.default_rng(1)
    truth = _truth()
    ids = truth["phase1"].index
    y = truth["phase1"]["label"].to_numpy()
    noise = {p: rng.uniform(0, 0.6, len(ids)) for p in bench.PHASES}
    for name, signal in (("old", 0.05), ("new", 0.5)):  # the same seed-style scores, a stronger stack
        scores = {p: pd.DataFrame({bench.SEED_STYLE: y * 0.2 + noise[p], "lgbm stack": y * signal + noise[p],
                                   "simple max": noise[p]}, index=ids) for p in bench.PHASES}
        (tmp_path / name).mkdir()
        bench.write_scores(scores, truth, tmp_path / name / bench.SCORES_FILE)
    table = bench.compare({"old": tmp_path / "old", "new": tmp_path / "new"})
    assert table["candidate"].tolist() == [bench.SEED_STYLE, "old", "new"]
    new = table.set_index("candidate").loc["new"]
    assert new["phase2_auc"] > table.set_index("candidate").loc["old", "phase2_auc"]
    assert new["phase2_p_vs_old"] < 0.05 and np.isnan(table.set_index("candidate").loc["old", "phase2_p_vs_old"])
    assert new["phase2_distinct"] == len(ids)
    bench.main(["--compare", f"old={tmp_path / 'old'}", f"new={tmp_path / 'new'}", "--out", str(tmp_path / "ev")])
    assert "p vs old 2" in capsys.readouterr().out and (tmp_path / "ev" / "evidence.png").is_file()
    with pytest.raises(SystemExit, match="no scores.csv"):
        bench.compare({"old": tmp_path / "old", "gone": tmp_path / "gone"})


def test_skipped_under_make(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MAKELEVEL", "1")
    _bench().main([])
    assert "skipped under make" in capsys.readouterr().out


def test_fine_model_is_the_first_cnn_at_the_finer_scale() -> None:
    from helpkit.config import load_submission

    config = load_submission("demo-quick")
    fine = _bench().fine_model(config, 1.0)
    first = config.models[0]
    assert (fine.name, fine.mpp, fine.architecture) == ("fine", 1.0, "simple")
    assert fine.model_dump(exclude={"name", "mpp"}) == first.model_dump(exclude={"name", "mpp"})
    assert first.mpp != 1.0 and first.name != "fine"  # a copy: the submission's own model is untouched


def test_shipped_fine_cnn_is_the_benchs_fine_model() -> None:
    # What the bench measured (the first CNN at 1 um/px beside the three) is what demo-stacked ships.
    from helpkit.config import load_submission

    bench, shipped = _bench(), load_submission("demo-stacked")
    assert shipped.models[-1] == bench.fine_model(shipped, 1.0)
    assert [m.name for m in shipped.models] == ["simple", "unet", "inception", "fine"]


def test_stacked_models_keeps_named_cnns_and_sets_the_fine_scale() -> None:
    from helpkit.config import load_submission

    bench, shipped, quick = _bench(), load_submission("demo-stacked"), load_submission("demo-quick")
    three = bench.stacked_models(shipped, ("inception", "simple", "unet"))
    assert [m.name for m in three.models] == ["simple", "unet", "inception"]  # the submission's order
    assert [m.mpp for m in bench.stacked_models(shipped, fine_mpp=0.5).models] == [2.0, 2.0, 2.0, 0.5]
    added = bench.stacked_models(quick, ("simple",), fine_mpp=1.0)
    assert [(m.name, m.mpp) for m in added.models] == [("simple", 2.0), ("fine", 1.0)]
    assert bench.stacked_models(shipped) == shipped
    with pytest.raises(ValueError, match="no model resnet"):
        bench.stacked_models(shipped, ("simple", "resnet"))


def test_unknown_model_is_a_one_line_usage_error() -> None:
    result = subprocess.run([sys.executable, str(BENCH), "--models", "simple", "resnet"], capture_output=True,
                            text=True)
    assert result.returncode == 2
    assert "no model resnet" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_quick_run(tmp_path: Path) -> None:
    """The whole bench at toy sizes, with a fine CNN at 1 um/px added to demo-quick's three (a few
    minutes on two cores: five CNNs train)."""
    out = tmp_path / "out"
    subprocess.run([sys.executable, str(BENCH), "--quick", "--fine-mpp", "1", "--data", str(tmp_path / "data"),
                    "--out", str(out)], check=True)
    table = pd.read_csv(out / "quality.csv")
    _check_table(table, ["seed-style", "simple max", "unet max", "inception max", "fine max", "mean blend",
                         "tuned blend", "lgbm stack"])
    assert (out / "quality.png").stat().st_size > 0
