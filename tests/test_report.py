"""The HTML report of any run: a fabricated `validate --work-dir` folder (fast), a real one in Docker (slow)."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from helpkit.heatmap.store import Heatmap, heatmap_path, write_heatmap
from helpkit.slide.geometry import PatchGeometry

MODELS = ("simple", "unet")


def _heatmap(slide_id: str, model: str, value: float, split: str) -> Heatmap:
    rng = np.random.default_rng(abs(hash((slide_id, model))) % 2**32)
    prob = np.clip(rng.normal(value, 0.1, size=(12, 16)), 0, 1).astype(np.float32)
    return Heatmap(prob=prob, tissue=np.ones_like(prob, bool), missing=np.zeros_like(prob, bool), origin=(0, 0),
                   stride0=128, patch_size0=128, geometry=PatchGeometry(), slide_id=slide_id, model=model, split=split,
                   label=np.nan, folds=[0])


def fabricate_work_dir(root: Path, tied: bool = False, min_slides: int = 40) -> Path:
    """What `helpkit submission validate --work-dir W --report W/report.json` leaves, made without Docker:
    model/ (pipeline.json, runs/*/fold_*/log.csv, OOF heatmaps and features, a fitted LightGBM ensemble and
    the candidate table), output/output.csv, the JSON report; and the test heatmaps an earlier report made."""
    from helpkit.ensemble import fit_ensemble, write_report
    from helpkit.pipeline import PIPELINE_FILE, inference_dir

    rng = np.random.default_rng(0)
    work, model_dir = root / "work", root / "work" / "model"
    train_ids = [f"Slide{i:03d}" for i in range(1, 21)]
    test_ids = [f"Slide{i:03d}" for i in range(21, 29)]
    y_train, y_test = np.arange(20) % 2, np.array([1, 0, 1, 0, 1, 0, 1, 0])
    features = {"slide_id": train_ids, "split": "train", "label": y_train}
    for j, model in enumerate(MODELS):
        features[f"{model}__max"] = np.clip(0.3 + 0.3 * y_train + rng.normal(0, 0.15 + 0.1 * j, 20), 0, 1)
        features[f"{model}__mean"] = features[f"{model}__max"] / 2
        features[f"{model}__fold"] = np.arange(20) % 3
        features[f"{model}__failed"] = 0
    table = pd.DataFrame(features)
    model_dir.mkdir(parents=True)
    table.to_parquet(model_dir / "features_oof.parquet")
    fit_ensemble(table, "lgbm", model_dir / "ensemble", cv_splits=3, cv_repeats=1, n_estimators=20,
                 min_slides=min_slides)
    write_report(table, model_dir / "ensemble_report", n_splits=3, n_repeats=1)
    config = {"name": "fabricated", "models": [{"architecture": m} for m in MODELS],
              "ensemble": {"method": "lgbm", "params": {"n_estimators": 20, "min_slides": min_slides}}}
    (model_dir / PIPELINE_FILE).write_text(json.dumps({"stage": "train", "config": config,
                                                       "runs": {m: f"runs/{m}" for m in MODELS}}))
    for model in MODELS:
        for fold in range(3):
            log = model_dir / "runs" / model / f"fold_{fold}" / "log.csv"
            log.parent.mkdir(parents=True)
            epochs = np.arange(5)
            pd.DataFrame({"epoch": epochs, "loss": 0.7 - 0.1 * epochs, "val_loss": 0.7 - 0.05 * epochs - 0.01 * fold,
                          "auc": 0.5 + 0.1 * epochs, "val_auc": 0.5 + 0.08 * epochs}).to_csv(log, index=False)
        for slide_id, label in zip(train_ids, y_train):
            write_heatmap(heatmap_path(model_dir / "heatmaps", model, slide_id), _heatmap(slide_id, model, 0.3 + 0.4 * label, "train"))
    final = np.array([0.9, 0.2, 0.8, 0.85, 0.3, 0.1, 0.7, 0.25])  # Slide024 (normal) scores above two positives
    if tied:
        final = np.array([0.7, 0.3, 0.7, 0.7, 0.3, 0.3, 0.7, 0.3])
    (work / "output").mkdir()
    (work / "output" / "output.csv").write_text("".join(f"{s},{p}\n" for s, p in zip(test_ids, final)))
    (root / "data" / "test").mkdir(parents=True)
    pd.DataFrame({"slide_id": test_ids, "label": y_test}).to_csv(root / "data" / "labels.csv", index=False)
    scratch = inference_dir(work / "report-inference", test_ids)
    test_features = {"slide_id": test_ids, "split": "test", "label": np.nan}
    for model in MODELS:
        test_features[f"{model}__max"] = np.clip(final + rng.normal(0, 0.05, 8), 0, 1)
        for slide_id, p in zip(test_ids, final):
            write_heatmap(heatmap_path(scratch / "heatmaps", model, slide_id), _heatmap(slide_id, model, p, "test"))
    pd.DataFrame(test_features).to_parquet(scratch / "features.parquet")
    stages = [{"stage": s, "label": s, "exit_code": 0, "duration_s": d, "timeout_s": t, "peak_memory_bytes": 2**30,
               "memory_limit": "8g", "ok": True, "log_tail": [f"[helpkit] {s} done"]}
              for s, d, t in (("train", 1800.0, 3600.0), ("inference", 60.0, 1800.0))]
    report = {"verdict": "PASS", "passed": True, "submission": "fabricated", "data": str(root / "data"),
              "image": "helpkit-submission/fabricated:latest", "image_id": "sha256:" + "ab" * 32, "stages": stages,
              "extra_tests": {}, "warnings": [], "failures": [], "work_dir": str(work)}
    (work / "report.json").write_text(json.dumps(report))
    return work


def test_report_of_a_validate_work_dir(tmp_path: Path) -> None:
    from helpkit.report import build_report, load_view, slide_table

    work = fabricate_work_dir(tmp_path)
    view = load_view(work, heatmaps=False)
    assert [s.name for s in view.sets] == ["test set", "training slides (out of fold)"]
    table, threshold = slide_table(view.sets[0])
    assert list(table.columns) == ["label", *MODELS, "final", "rank", "correct"]
    assert table.loc["Slide021", "rank"] == 1 and 0 < threshold <= 1
    assert not table.loc["Slide024", "correct"]  # a normal slide ranked among the positives
    page = build_report(work, tmp_path / "report.html", heatmaps=False).read_text()
    # 20 training slides, fewer than the stacker's min_slides: its fallback, not trees, is shown
    assert "LightGBM feature importance" not in page and "few-slide fallback" in page
    for expected in ("Per slide", "Heatmaps: misclassified slides first", "simple__max</td>",
                     "Training curves per fold", "share of time limit", "50.0%", "sha256:" + "ab" * 32,
                     "report made by helpkit", 'class="wrong"', "Slide024", "Final score <b>fabricated (output.csv)</b>: AUC"):
        assert expected in page, expected
    test_part, oof_part = page.split("<h2>training slides (out of fold)")
    assert "distinct value" not in test_part  # eight distinct scores: no ties warning
    assert "distinct value" not in oof_part  # the fallback's scores of 20 slides do not tie
    assert page.count("data:image/png;base64,") >= 6
    trees = build_report(fabricate_work_dir(tmp_path / "trees", min_slides=2), tmp_path / "trees.html",
                         heatmaps=False).read_text()
    assert "LightGBM feature importance" in trees and "few-slide fallback" not in trees


def test_report_of_a_model_dir_with_a_test_output(tmp_path: Path) -> None:
    from helpkit.report import load_view, slide_table

    work = fabricate_work_dir(tmp_path)
    view = load_view(work / "model", output_csv=work / "output" / "output.csv", labels=tmp_path / "data" / "labels.csv",
                     heatmaps=False)
    assert view.kind == "model dir" and [s.name for s in view.sets] == ["test set", "training slides (out of fold)"]
    table, _ = slide_table(view.sets[0])
    assert list(table.columns) == ["label", "final", "rank", "correct"]  # no test heatmaps: no per-model scores
    assert "not at hand (--data)" in view.sets[0].note


def test_ties_warning(tmp_path: Path) -> None:
    from helpkit.report import build_report, ties_warning

    assert ties_warning(pd.Series([0.1, 0.2, 0.3, 0.4, 0.5])) == ""
    assert "only 2 distinct value(s) over 8 slides" in ties_warning(pd.Series([0.7, 0.3] * 4))
    page = build_report(fabricate_work_dir(tmp_path, tied=True), tmp_path / "r.html", heatmaps=False).read_text()
    assert "only 2 distinct value(s) over 8 slides" in page


def test_report_cli_says_what_a_folder_lacks(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from helpkit.cli import app

    result = CliRunner().invoke(app, ["report", str(tmp_path)])
    assert result.exit_code != 0 and "validate --work-dir" in str(result.exception)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="no headless Chromium")
def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    from helpkit.report import build_report

    page = build_report(fabricate_work_dir(tmp_path), tmp_path / "report.html", heatmaps=False)
    shot = tmp_path / "shot.png"
    subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1400,3000", page.resolve().as_uri()], capture_output=True, timeout=120, check=False)
    assert shot.is_file() and shot.read_bytes()[:4] == b"\x89PNG" and shot.stat().st_size > 50_000


@pytest.mark.docker
@pytest.mark.slow
def test_report_of_a_real_validate_work_dir(engine, tmp_path: Path) -> None:
    """Acceptance: `helpkit report` of a `submission validate --work-dir` (the shipped simple-maxprob on a
    6 + 6 slide synthetic competition) has the per-slide table and the misclassified slides' heatmaps."""
    from typer.testing import CliRunner

    from helpkit.cli import app
    from helpkit.synth import make_competition

    data = make_competition(tmp_path / "D", n_train=6, n_test=6, size=2048, seed=0, shift=0.0)
    work = tmp_path / "W"
    runner = CliRunner()
    validated = runner.invoke(app, ["submission", "validate", "simple-maxprob", "--data", str(data), "--work-dir",
                                    str(work), "--report", str(work / "report.json"), "--quiet"])
    assert validated.exit_code == 0, validated.output[-3000:]
    reported = runner.invoke(app, ["report", str(work), "-o", str(tmp_path / "report.html")])
    assert reported.exit_code == 0, reported.output[-3000:]
    page = (tmp_path / "report.html").read_text()
    test_ids = sorted(p.stem for p in (data / "test").iterdir())
    test_part = page.split("<h2>training slides (out of fold)")[0]
    assert "Verdict: <span class=\"pass\">PASS" in page and 'class="slides"' in test_part
    assert all(f"<td>{slide_id}</td>" in test_part for slide_id in test_ids)
    assert "Heatmaps: misclassified slides first" in test_part and "Training curves per fold" in page
    assert "image digest (id)" in page and "share of time limit" in page
    if _chromium() is not None:
        shot = tmp_path / "shot.png"
        subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                        "--window-size=1400,4000", (tmp_path / "report.html").resolve().as_uri()],
                       capture_output=True, timeout=120, check=False)
        assert shot.is_file() and shot.stat().st_size > 50_000
