"""CAMELYON17 scoring: node labels, patient pN stages, quadratic weighted kappa by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from helpkit.cli import app
from helpkit.errors import HelpkitError
from helpkit.scoring.pn_stage import (
    labels_from_probabilities,
    labels_from_scores,
    patient_of,
    patient_stage,
    quadratic_kappa,
    read_stage_csv,
    score_stages,
)


@pytest.mark.parametrize(("nodes", "stage"), [
    (["negative"] * 5, "pN0"),
    (["itc", "negative", "itc"], "pN0(i+)"),
    (["micro", "itc"], "pN1mi"),
    (["micro"] * 4, "pN1mi"),  # four positive nodes but no macro-metastasis
    (["macro", "micro", "micro", "itc", "itc"], "pN1"),  # ITC nodes are not positive nodes
    (["macro", "micro", "micro", "micro", "negative"], "pN2"),
    (["macro"] * 5, "pN2"),
    (["macro"], "pN1"),
])
def test_patient_stage_rules(nodes: list[str], stage: str) -> None:
    assert patient_stage(nodes) == stage


def test_node_labels_from_probabilities_and_thresholds() -> None:
    probs = pd.DataFrame({"negative": [0.7, 0.1, 0.25], "itc": [0.1, 0.2, 0.25],
                          "micro": [0.1, 0.3, 0.25], "macro": [0.1, 0.4, 0.25]})
    assert labels_from_probabilities(probs).tolist() == ["negative", "macro", "negative"]  # a tie: the lower class
    scores = pd.Series([0.0, 0.2, 0.49, 0.5, 0.79, 0.8, 1.0])
    assert labels_from_scores(scores, [0.2, 0.5, 0.8]).tolist() == [
        "negative", "itc", "itc", "micro", "micro", "macro", "macro"]
    with pytest.raises(HelpkitError, match="increasing"):
        labels_from_scores(scores, [0.5, 0.2, 0.8])


def test_patient_names() -> None:
    assert patient_of("patient_004_node_2.tif") == "patient_004"
    assert patient_of("patient_004_node_2") == "patient_004"
    with pytest.raises(HelpkitError, match="node"):
        patient_of("tumor_001")


def test_quadratic_kappa_by_hand() -> None:
    # Reference stages 0..4 (one patient each), predicted 0, 2, 2, 3, 3 (indices into STAGES).
    # Quadratic weights (i - j)^2: observed sum = (1-2)^2 + (4-3)^2 = 2. Expected counts
    # r_i c_j / n with r = 1 each, c = (1, 0, 2, 2, 0): sum_j c_j sum_i (i - j)^2 / 5
    # = (1 * 30 + 2 * 10 + 2 * 15) / 5 = 16. Kappa = 1 - 2 / 16 = 0.875.
    ref = ["pN0", "pN0(i+)", "pN1mi", "pN1", "pN2"]
    pred = ["pN0", "pN1mi", "pN1mi", "pN1", "pN1"]
    assert quadratic_kappa(ref, pred) == pytest.approx(0.875, abs=1e-12)
    assert quadratic_kappa(ref, ref) == pytest.approx(1.0)


REFERENCE = """patient,stage
patient_000.zip,pN0
patient_000_node_0.tif,negative
patient_001.zip,pN0(i+)
patient_001_node_0.tif,itc
patient_002.zip,pN1mi
patient_002_node_0.tif,micro
patient_003.zip,pN1
patient_003_node_0.tif,macro
patient_004.zip,pN2
patient_004_node_0.tif,macro
"""

# Probabilities giving the nodes: p000 all negative; p001 one micro; p002 one micro; p003 a
# macro and a micro; p004 a macro and two micros (3 positive nodes: pN1, not pN2).
NODES = {
    "patient_000": ["negative"] * 5,
    "patient_001": ["micro", "negative", "negative", "negative", "negative"],
    "patient_002": ["micro", "itc", "negative", "negative", "negative"],
    "patient_003": ["macro", "micro", "negative", "negative", "negative"],
    "patient_004": ["macro", "micro", "micro", "negative", "negative"],
}


def write_predictions(path: Path) -> None:
    rows = ["slide,negative,itc,micro,macro"]
    for patient, nodes in NODES.items():
        for k, label in enumerate(nodes):
            p = {c: 0.1 for c in ("negative", "itc", "micro", "macro")}
            p[label] = 0.7
            rows.append(f"{patient}_node_{k}.tif,{p['negative']},{p['itc']},{p['micro']},{p['macro']}")
    path.write_text("\n".join(rows) + "\n")


def test_score_stages_end_to_end(tmp_path: Path) -> None:
    (tmp_path / "ref.csv").write_text(REFERENCE)
    write_predictions(tmp_path / "pred.csv")
    result = score_stages(tmp_path / "pred.csv", tmp_path / "ref.csv", out=tmp_path / "sub.csv")
    assert result["kappa"] == pytest.approx(0.875, abs=1e-12)
    assert [result["stages"][p]["predicted"] for p in sorted(NODES)] == ["pN0", "pN1mi", "pN1mi", "pN1", "pN1"]
    # Node 0 of each patient is in the reference: all agree but patient_001's (itc vs micro).
    assert result["nodes_compared"] == 5 and result["node_agreement"] == pytest.approx(0.8)
    patients, nodes = read_stage_csv(tmp_path / "sub.csv")  # the written submission reads back
    assert patients["patient_004"] == "pN1" and nodes["patient_004_node_2"] == "micro" and len(nodes) == 25


def test_cli_pn_stage_with_thresholds(tmp_path: Path) -> None:
    (tmp_path / "ref.csv").write_text(REFERENCE)
    level = {"negative": 0.05, "itc": 0.3, "micro": 0.6, "macro": 0.9}
    rows = ["slide_id,score"] + [f"{p}_node_{k},{level[label]}" for p, nodes in NODES.items()
                                 for k, label in enumerate(nodes)]
    (tmp_path / "scores.csv").write_text("\n".join(rows) + "\n")
    runner = CliRunner()
    args = ["score", "--pn-stage", str(tmp_path / "scores.csv"), "--reference", str(tmp_path / "ref.csv")]
    result = runner.invoke(app, [*args, "--thresholds", "0.2,0.5,0.8", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["kappa"] == pytest.approx(0.875, abs=1e-12)
    text = runner.invoke(app, [*args, "--thresholds", "0.2,0.5,0.8"])
    assert "quadratic weighted kappa 0.8750" in text.output
    missing = runner.invoke(app, args)
    assert missing.exit_code != 0 and "thresholds" in str(missing.exception or missing.output)


def test_bad_reference_label_names_its_line(tmp_path: Path) -> None:
    (tmp_path / "ref.csv").write_text("patient,stage\npatient_000.zip,pN3\n")
    with pytest.raises(HelpkitError, match="row 2: patient stage 'pN3'"):
        read_stage_csv(tmp_path / "ref.csv")
