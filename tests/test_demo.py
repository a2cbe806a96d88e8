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
def test_quick_demo_end_to_end(engine, tmp_path: Path) -> None:
    from helpkit.data import discover
    from helpkit.demo import run_demo
    from helpkit.scoring import read_predictions

    out = tmp_path / "demo"
    run = run_demo(out, quick=True)

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
