"""Your own predictions: platform and long formats, tune -> fit -> apply -> score, the method registry."""

from __future__ import annotations

import inspect
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from helpkit.cli import app
from helpkit.errors import HelpkitError

MODELS = ("cnn_a", "cnn_b", "vit")


def write_own_predictions(folder: Path, n_train: int = 40, n_test: int = 12, seed: int = 0) -> dict[str, Path]:
    """What a competitor has: per-model platform-format files written with numpy, and labels.csv."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    y = rng.permutation(np.arange(n_train) % 2)
    train_ids = np.array([f"Train{i:03d}" for i in range(n_train)])
    test_ids = np.array([f"Test{i:03d}" for i in range(n_test)])
    y_test = np.arange(n_test) % 2
    for j, model in enumerate(MODELS):
        for split, ids, labels in (("oof", train_ids, y), ("test", test_ids, y_test)):
            p = 1 / (1 + np.exp(-(rng.normal(size=len(ids)) + (0.5 + j) * (2 * labels - 1))))
            rows = np.column_stack([ids, np.char.mod("%.6f", p)])
            np.savetxt(folder / f"{split}-{model}.csv", rows, fmt="%s", delimiter=",")
    np.savetxt(folder / "labels.csv", np.column_stack([train_ids, y.astype(str)]), fmt="%s", delimiter=",",
               header="slide_id,label", comments="")
    np.savetxt(folder / "test-labels.csv", np.column_stack([test_ids, y_test.astype(str)]), fmt="%s",
               delimiter=",", header="slide_id,label", comments="")
    return {"folder": folder, "labels": folder / "labels.csv", "test_labels": folder / "test-labels.csv"}


def invoke(*args: str) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.stdout  # progress bars go to stderr


def test_own_predictions_tune_fit_apply_score(tmp_path: Path) -> None:
    """Acceptance: three files made outside helpkit go through tune, fit --method lgbm, apply, score."""
    own = write_own_predictions(tmp_path / "own")
    d = own["folder"]
    oof = [f"{m}={d / f'oof-{m}.csv'}" for m in MODELS]
    test = [f"{m}={d / f'test-{m}.csv'}" for m in MODELS]
    tuned = json.loads(invoke("ensemble", "tune", *oof, "--labels", own["labels"], "--splits", "3", "--repeats", "1",
                              "--out", tmp_path / "weights.json", "--json"))
    assert tuned["models"] == list(MODELS) and tuned["best"] in tuned["blends"]
    assert tuned["blends"]["greedy"]["weights"]["vit"] >= tuned["blends"]["greedy"]["weights"]["cnn_a"]
    invoke("ensemble", "fit", *oof, "--labels", own["labels"], "--method", "lgbm", "--param", "n_estimators=30",
           "--param", "learning_rate=0.1", "--out", tmp_path / "lgbm", "--splits", "3", "--repeats", "1")
    assert json.loads((tmp_path / "lgbm" / "stacker.json").read_text())["params"]["n_estimators"] == 30
    for source, out in ((tmp_path / "lgbm", tmp_path / "out-lgbm.csv"), (tmp_path / "weights.json", tmp_path / "out-blend.csv")):
        invoke("ensemble", "apply", source, *test, "--out", out)
        rows = out.read_text().splitlines()
        assert len(rows) == 12 and rows[0].startswith("Test000,")  # platform format: no header, every test slide
        scored = json.loads(invoke("score", out, "--labels", own["test_labels"], "--json"))
        assert scored["auc"]["auc"] > 0.7


def test_long_format_without_fold_and_stems_as_names(tmp_path: Path) -> None:
    own = write_own_predictions(tmp_path / "own", n_train=30)
    d = own["folder"]
    frames = [pd.read_csv(d / f"oof-{m}.csv", header=None, names=["slide_id", "probability"]).assign(model=m)
              for m in MODELS]
    pd.concat(frames)[["slide_id", "model", "probability"]].to_csv(tmp_path / "long.csv", index=False)
    from helpkit.data import read_labels
    from helpkit.ensemble import read_inputs

    labels = read_labels(own["labels"])
    long = read_inputs([tmp_path / "long.csv"], labels)
    for m in MODELS:
        (tmp_path / f"{m}.csv").write_bytes((d / f"oof-{m}.csv").read_bytes())
    stems = read_inputs([tmp_path / f"{m}.csv" for m in MODELS], labels)
    assert [c for c in long.columns if c.endswith("__max")] == [f"{m}__max" for m in MODELS]
    pd.testing.assert_frame_equal(long, stems)
    assert long["label"].notna().all() and not any(c.endswith("__fold") for c in long.columns)
    with_fold = pd.concat(frames).assign(fold=1)
    with_fold.to_csv(tmp_path / "long-fold.csv", index=False)
    assert (read_inputs([tmp_path / "long-fold.csv"], labels)["vit__fold"] == 1).all()
    report = json.loads(invoke("ensemble", "report", tmp_path / "long.csv", "--labels", own["labels"], "--out",
                               tmp_path / "rep", "--splits", "3", "--repeats", "1", "--json"))
    from helpkit.ensemble.methods import REGISTRY

    assert [r["candidate"] for r in report][-len(REGISTRY) + 1:] == [m for m in REGISTRY if REGISTRY[m].candidate]


def test_input_errors_are_one_line(tmp_path: Path) -> None:
    from helpkit.ensemble import read_inputs

    own = write_own_predictions(tmp_path / "own", n_train=10)
    d = own["folder"]
    (tmp_path / "short.csv").write_text("\n".join((d / "oof-vit.csv").read_text().splitlines()[:-1]) + "\n")
    with pytest.raises(HelpkitError, match="slides differ"):
        read_inputs([d / "oof-vit.csv", tmp_path / "short.csv"])
    with pytest.raises(HelpkitError, match="given twice"):
        read_inputs([f"a={d / 'oof-vit.csv'}", f"a={d / 'oof-cnn_a.csv'}"])
    (tmp_path / "bad.csv").write_text("slide_id,prob\nA,0.5\n")
    with pytest.raises(HelpkitError, match="no probability"):
        read_inputs([tmp_path / "bad.csv"])
    with pytest.raises(HelpkitError, match="must not|must be letters"):
        read_inputs([f"a__b={d / 'oof-vit.csv'}"])


def test_apply_names_missing_models(tmp_path: Path) -> None:
    own = write_own_predictions(tmp_path / "own", n_train=20)
    d = own["folder"]
    invoke("ensemble", "fit", *[f"{m}={d / f'oof-{m}.csv'}" for m in MODELS], "--labels", own["labels"],
           "--method", "mean", "--out", tmp_path / "mean", "--repeats", "1", "--splits", "3")
    result = CliRunner().invoke(app, ["ensemble", "apply", str(tmp_path / "mean"), f"vit={d / 'test-vit.csv'}"])
    assert result.exit_code != 0 and "cnn_a, cnn_b" in str(result.exception)


# ---- the registry ---------------------------------------------------------------------

def test_registry_matches_each_estimator() -> None:
    """Every registered parameter is an argument of the estimator with the same default, and the reverse."""
    from helpkit.ensemble.methods import REGISTRY

    for method in REGISTRY.values():
        cls = method.estimator_class()
        signature = inspect.signature(cls.__init__)
        arguments = {k: v.default for k, v in signature.parameters.items() if k != "self"}
        user = {k: v for k, v in arguments.items() if k not in method.fixed}
        declared = {k: p.default for k, p in method.params.items() if k != "model"}
        if method.columns == "one":  # single: one column, so only which model's score is a choice
            assert not declared, method.name
        else:
            assert declared == user, method.name
        for name, param in method.params.items():
            param.check(name, param.default)


def test_config_cli_and_report_read_the_registry() -> None:
    from helpkit.config import EnsembleSpec
    from helpkit.ensemble.methods import NAMES, REGISTRY
    from helpkit.ensemble.candidates import stacked_candidates

    assert set(EnsembleSpec.model_fields["method"].annotation.__args__) == set(NAMES)
    assert stacked_candidates() == [m for m in NAMES if REGISTRY[m].candidate]
    help_text = CliRunner().invoke(app, ["ensemble", "fit", "--help"]).output
    assert all(name in help_text for name in NAMES)


@pytest.mark.parametrize(("items", "message"), [
    (["n_estimator=3"], "unknown parameter 'n_estimator' (did you mean n_estimators?)"),
    (["n_estimators=three"], "n_estimators must be int >= 1, got 'three'"),
    (["subsample=1.5"], "subsample must be float > 0, <= 1"),
    (["n_estimators"], "--param takes KEY=VALUE"),
])
def test_param_errors_on_the_command_line(tmp_path: Path, items: list[str], message: str) -> None:
    args = ["ensemble", "fit", str(tmp_path / "none.csv"), "--method", "lgbm", "--out", str(tmp_path / "o")]
    for item in items:
        args += ["--param", item]
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0 and message in str(result.exception)
    assert not (tmp_path / "o").exists()


def test_params_typo_in_the_toml_fails_at_load_before_anything_heavy(tmp_path: Path) -> None:
    """Acceptance: n_estimator (a typo) in submission.toml is one line, before anything trains:
    loading a config imports none of numpy, scikit-image, scikit-learn, LightGBM, TensorFlow."""
    toml = tmp_path / "submission.toml"
    toml.write_text('name = "typo"\n[[models]]\narchitecture = "simple"\n[[models]]\narchitecture = "unet"\n'
                    '[ensemble]\nmethod = "lgbm"\nparams = { n_estimator = 50 }\n')
    heavy = ("numpy", "skimage", "sklearn", "lightgbm", "tensorflow")
    code = ("import sys\nfrom helpkit.config import load_submission\n"
            "try:\n    load_submission(sys.argv[1])\nexcept Exception as e:\n    print(e)\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r}))\n")
    out = subprocess.run([sys.executable, "-c", code, str(toml)], capture_output=True, text=True, timeout=60)
    error, imported = out.stdout.strip().splitlines()
    assert "ensemble.params" in error and "unknown parameter 'n_estimator' (did you mean n_estimators?)" in error
    assert imported == "[]"
    toml.write_text(toml.read_text().replace("n_estimator = 50", 'n_estimators = "50"'))
    from helpkit.config import load_submission

    with pytest.raises(HelpkitError, match="n_estimators must be int"):
        load_submission(toml)
    toml.write_text(toml.read_text().replace('n_estimators = "50"', "n_estimators = 50, learning_rate = 1"))
    assert load_submission(toml).ensemble.params == {"n_estimators": 50, "learning_rate": 1.0}


def test_fit_reads_method_and_params_from_a_config(tmp_path: Path) -> None:
    own = write_own_predictions(tmp_path / "own", n_train=20)
    d = own["folder"]
    toml = tmp_path / "submission.toml"
    toml.write_text('name = "x"\n[[models]]\narchitecture = "simple"\n[[models]]\narchitecture = "unet"\n'
                    '[ensemble]\nmethod = "logreg"\nparams = { C = 0.5 }\n')
    invoke("ensemble", "fit", *[str(d / f"oof-{m}.csv") for m in MODELS], "--labels", own["labels"], "--config", toml,
           "--param", "max_iter=200", "--out", tmp_path / "fit", "--splits", "3", "--repeats", "1")
    params = json.loads((tmp_path / "fit" / "stacker.json").read_text())["params"]
    assert params == {"C": 0.5, "max_iter": 200}
