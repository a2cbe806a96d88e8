"""`helpkit demo --quick`: the whole path in Docker, judged by what the report says.

Asserts on content, not exit codes: both test sets scored in [0, 1], verdict PASS, a row per
test slide in each output.csv, and an HTML page whose images are all embedded.
"""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest


@pytest.mark.docker
def test_quick_demo_end_to_end(engine, tmp_path: Path, capfd: pytest.CaptureFixture[str],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    from helpkit.data import discover
    from helpkit.demo import run_demo
    from helpkit.scoring import read_predictions

    monkeypatch.chdir(tmp_path)
    run = run_demo(Path("demo"), quick=True)  # relative, as `make demo` passes it
    out = tmp_path / "demo"

    saved = json.loads((out / "demo.json").read_text())
    assert saved["verdict"] == "PASS"
    validation = json.loads((out / saved["validation"]).read_text())
    assert [s["label"] for s in validation["stages"]] == ["train", "inference", "inference (phase2)"]
    for phase in ("phase1", "phase2"):
        info = saved["test_sets"][phase]
        test_ids = sorted(discover(out / info["test_dir"])["slide_id"])
        for name, rel in info["predictions"].items():
            preds = read_predictions(out / rel, expected_ids=test_ids)
            assert sorted(preds.scores.index) == test_ids, (phase, name)
        scores = saved["scores"][phase]
        assert set(scores) == {saved["submission"]["name"], "simple-maxprob"}
        for result in scores.values():
            assert 0.0 <= result["auc"] <= 1.0 and 0.0 <= result["ci_low"] <= result["ci_high"] <= 1.0

    page = Path(run["report"]).read_text()
    assert "PASS" in page and "phase2" in page
    images = re.findall(r'<img alt="[^"]*" src="data:image/png;base64,([^"]+)"', page)
    assert len(images) >= 5
    assert all(base64.b64decode(data).startswith(b"\x89PNG") for data in images)
    assert "<img" not in re.sub(r'<img alt="[^"]*" src="data:image/png;base64,[^"]+">', "", page)

    # The trained model dir the container left serves one more inference stage, here on the
    # host, over a test set with a slide that cannot be opened: it still gets a row.
    from helpkit import pipeline
    from helpkit.config import load_submission

    test_dir = tmp_path / "damaged" / "test"
    test_dir.mkdir(parents=True)
    good = sorted((out / saved["test_sets"]["phase1"]["test_dir"]).iterdir())[0]
    (test_dir / good.name).write_bytes(good.read_bytes())
    (test_dir / "Slide999.tiff").write_bytes(b"II*\x00 truncated, not a slide")
    config = load_submission(saved["submission"]["name"])
    capfd.readouterr()
    proba = pipeline.infer(test_dir, out / "validation" / "model", tmp_path / "out.csv", config)
    log = capfd.readouterr().err
    rows = read_predictions(tmp_path / "out.csv", expected_ids=[good.stem, "Slide999"]).scores
    assert rows["Slide999"] == config.fallback_probability == proba["Slide999"]
    assert "Slide999 failed" in log and "Slide999.tiff" in log
