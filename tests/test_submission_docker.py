"""The validator in a real Docker engine: a good stand-in submission passes, each broken one
fails with its own reason, and the shipped simple submission builds and passes (slow).

These tests skip when no engine is reachable, except under CI (``CI`` set), where a
missing engine or base image is a failure: CI promises to provide both (.ci/run).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import missing_engine_action

FIXTURES = Path(__file__).parent / "fixtures" / "submissions"


@pytest.mark.parametrize(
    ("reachable", "base", "ci", "action"),
    [
        (True, True, None, None),
        (True, True, "1", None),
        (False, False, None, "skip"),
        (True, False, None, "skip"),
        (False, False, "true", "fail"),
        (True, False, "1", "fail"),
    ],
)
def test_missing_engine_skips_locally_but_fails_in_ci(reachable, base, ci, action) -> None:
    assert missing_engine_action(reachable, base, ci) == action


@pytest.fixture(scope="module")
def tiny_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A HeLP layout whose 'slides' are placeholder files: the stand-in stages never open them."""
    root = tmp_path_factory.mktemp("layout")
    for rel in ("train/image/positive/Slide001.tiff", "train/mask/positive/Slide001.png",
                "train/image/negative/Slide002.tiff", "test/Slide003.tiff", "test/Slide004.tiff",
                "test/Slide005.tiff"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"placeholder")
    (root / "labels.csv").write_text("slide_id,label\nSlide003,1\nSlide004,0\nSlide005,1\n")
    return root


def fixture_context(name: str, tmp_path: Path) -> Path:
    """The good context with the overlay ``name`` copied on top."""
    context = Path(shutil.copytree(FIXTURES / "good", tmp_path / name))
    if name != "good":
        shutil.copytree(FIXTURES / name, context, dirs_exist_ok=True)
    return context


@pytest.mark.docker
def test_good_submission_passes_under_the_contract(engine, tiny_layout: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from helpkit.cli import app

    report_path, work = tmp_path / "report.json", tmp_path / "work"
    args = ["submission", "validate", str(fixture_context("good", tmp_path)), "--data", str(tiny_layout),
            "--report", str(report_path), "--work-dir", str(work), "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1] == "PASS"
    assert any(line.startswith("train: exit 0 in ") and "MiB peak" in line for line in lines)
    saved = json.loads(report_path.read_text())
    assert saved["verdict"] == "PASS" and saved["emulation"]["network"] == "none"
    assert [s["stage"] for s in saved["stages"]] == ["train", "inference"]
    assert all(s["exit_code"] == 0 and s["peak_memory_bytes"] for s in saved["stages"])
    assert saved["output"]["rows"] == 3 and saved["score"]["n_positive"] == 2
    written = json.loads((work / "model" / "model.json").read_text())
    assert written["train_slides"] == ["Slide001.tiff", "Slide002.tiff"]


@pytest.mark.docker
def test_extra_test_set_gets_its_own_inference_from_the_same_model(engine, tiny_layout: Path, tmp_path: Path) -> None:
    from helpkit.submission.validate import validate

    phase2 = tmp_path / "phase2"
    for rel in ("test/Slide101.tiff", "test/Slide102.tiff"):
        (phase2 / rel).parent.mkdir(parents=True, exist_ok=True)
        (phase2 / rel).write_bytes(b"placeholder")
    (phase2 / "labels.csv").write_text("slide_id,label\nSlide101,0\nSlide102,1\n")
    work = tmp_path / "work"
    report = validate(fixture_context("good", tmp_path), tiny_layout, work_dir=work, quiet=True,
                      extra_tests={"phase2": phase2})
    assert report.verdict == "PASS"
    assert [s["label"] for s in report.stages] == ["train", "inference", "inference (phase2)"]
    assert report.output["rows"] == 3
    assert report.extra_tests["phase2"]["rows"] == 2
    assert report.extra_tests["phase2"]["score"]["n_positive"] == 1
    rows = (work / "output-phase2" / "output.csv").read_text().split()
    assert sorted(r.split(",")[0] for r in rows) == ["Slide101", "Slide102"]


@pytest.mark.docker
@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("relative-path", "train stage exited with code 1: it opens the relative path 'train.txt'"),
        ("skips-slide", "output.csv: 1 problem(s): missing 1 expected slide(s), no row for: Slide005"),
        ("header", "output.csv: 1 problem(s): line 1: header line"),
        ("nan", "output.csv: 1 problem(s): line 1: probability of Slide003 is nan (must be finite)"),
        ("network", "train stage exited with code 1: it needs the network"),
        ("writes-outside", "inference stage exited with code 1: it writes outside /data/model and /data/output"),
        ("memory", "train stage exceeded its memory limit of 256m"),
        ("timeout", "train stage exceeded its time limit of 3 s"),
        ("writes-model", "inference stage exited with code 1: it writes /data/model/inference in the inference stage, "
                         "where /data/model is read-only"),
        # the live disk watch catches the 3 MiB while the stage runs, or the check after it (a fast stage)
        ("big-model", ("train stage left 3.0 MiB in /data/model, above its cap of 1m (limits.model_max_size)",
                       "train stage wrote 3.0 MiB to /data/model, above its cap of 1m (limits.model_max_size), "
                       "and was killed")),
        ("big-output", "inference stage wrote 3.0 MiB to /data/output, above its cap of 1m (limits.output_max_size), "
                       "and was killed"),
        ("threads", "train stage exited with code 1: it hit the pids limit of 64 processes and threads (limits.pids_limit)"),
        ("tmp-full", "train stage exited with code 1: no space left on device: /tmp is a tmpfs of limits.tmp_size = 16m"),
        ("build-error", "image build: docker build failed: The command '/bin/sh -c python3 -m pip install"),
    ],
)
def test_broken_submission_fails_with_its_own_reason(engine, tiny_layout: Path, tmp_path: Path, name, reason) -> None:
    from helpkit.submission.validate import validate

    report = validate(fixture_context(name, tmp_path), tiny_layout, quiet=True)
    reasons = reason if isinstance(reason, tuple) else (reason,)
    assert any(report.verdict.startswith(f"FAIL: {r}") for r in reasons), report.verdict


@pytest.mark.docker
def test_big_output_is_killed_while_writing(engine, tiny_layout: Path, tmp_path: Path) -> None:
    from helpkit.submission.validate import validate

    report = validate(fixture_context("big-output", tmp_path), tiny_layout, quiet=True)
    inference = report.stages[1]
    assert inference["disk_killed"] == "/data/output" and inference["duration_s"] < 30  # not the minute it asked for
    assert inference["disk_bytes"]["/data/output"] == 3 * 2**20


@pytest.mark.docker
def test_model_writable_in_inference_gives_each_test_set_its_own_model(engine, tiny_layout: Path, tmp_path: Path) -> None:
    """The fixture trusts a score cache it writes into /data/model; with a shared model dir the
    second test set would get the first one's rows (and fail), with its own copy it passes."""
    from helpkit.submission.validate import validate

    phase2 = tmp_path / "phase2"
    for rel in ("test/Slide101.tiff", "test/Slide102.tiff"):
        (phase2 / rel).parent.mkdir(parents=True, exist_ok=True)
        (phase2 / rel).write_bytes(b"placeholder")
    work = tmp_path / "work"
    report = validate(fixture_context("stale-cache", tmp_path), tiny_layout, work_dir=work, quiet=True,
                      extra_tests={"phase2": phase2})
    assert report.verdict == "PASS", report.failures
    assert [s["label"] for s in report.stages] == ["train", "inference", "inference (phase2)"]
    assert sorted(json.loads((work / "model-phase2" / "scores.json").read_text())) == ["Slide101", "Slide102"]
    assert sorted(json.loads((work / "model" / "scores.json").read_text())) == ["Slide003", "Slide004", "Slide005"]


@pytest.mark.docker
def test_user_limit_runs_both_stages_as_that_uid(engine, tiny_layout: Path, tmp_path: Path) -> None:
    from helpkit.submission.validate import validate

    work = tmp_path / "work"
    report = validate(fixture_context("user", tmp_path), tiny_layout, work_dir=work, quiet=True)
    assert report.verdict == "PASS", report.failures
    assert all(s["user"] == "1000:1000" for s in report.stages)
    written = json.loads((work / "model" / "model.json").read_text())
    assert (written["uid"], written["gid"]) == (1000, 1000)
    assert (work / "output" / "output.csv").stat().st_uid == 1000


@pytest.mark.docker
def test_long_log_line_makes_a_short_verdict_and_a_whole_log_file(engine, tiny_layout: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from helpkit.cli import app

    report_path = tmp_path / "r.json"
    args = ["submission", "validate", str(fixture_context("long-log", tmp_path)), "--data", str(tiny_layout),
            "--report", str(report_path), "--quiet"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert max(len(line) for line in lines) <= 300
    assert lines[-1].startswith("FAIL: train stage exited with code 1: see the log tail [last log line: bad shape: 777")
    log = tmp_path / "r.train.log"
    assert log.read_text().splitlines() == ["loading", "bad shape: " + "7" * 2**20]
    saved = json.loads(report_path.read_text())
    assert saved["logs"] == {"train": str(log)} and saved["stages"][0]["log_path"] == str(log)
    assert saved["stages"][0]["log_tail"][-1] == "bad shape: " + "7" * 2**20


@pytest.mark.docker
def test_static_failure_stops_before_any_container(engine, tiny_layout: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from helpkit.cli import app

    context = fixture_context("good", tmp_path)
    os.chmod(context / "inference.sh", 0o644)
    args = ["submission", "validate", str(context), "--data", str(tiny_layout), "--report", str(tmp_path / "r.json")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    verdict = "FAIL: static check (entry point): inference.sh is not executable (chmod +x) [inference.sh]"
    assert result.output.strip().splitlines()[-1] == verdict
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["verdict"] == verdict and saved["stages"] == [] and saved["image"] == ""


@pytest.mark.docker
@pytest.mark.slow
def test_simple_submission_passes_and_survives_a_damaged_test_slide(engine, tmp_path: Path) -> None:
    """The shipped image, real training and inference, on 6 training slides (3 folds need 3 per class);
    one test slide is damaged: it still gets a row, and the inference log says which and why."""
    from helpkit.submission.validate import validate
    from helpkit.synth import make_competition

    data = make_competition(tmp_path / "competition", n_train=6, n_test=2, size=2048, seed=0, shift=0.0)
    damaged = sorted((data / "test").iterdir())[-1]
    damaged.write_bytes(b"not a slide" * 100)
    report = validate("simple-maxprob", data, report_path=tmp_path / "report.json",
                      work_dir=tmp_path / "work", quiet=True)
    assert report.verdict == "PASS", json.dumps(report.to_dict(), indent=1)[-3000:]
    assert report.limits["model_writable_in_inference"] is False  # inference ran with /data/model read-only
    rows = dict(line.split(",") for line in (tmp_path / "work/output/output.csv").read_text().split())
    assert set(rows) == {p.stem for p in (data / "test").iterdir()}
    inference_log = report.stages[1]["log_tail"]
    assert any(damaged.stem in line and "failed" in line for line in inference_log), inference_log


@pytest.mark.docker
def test_stage_log_lines_stream_live_with_time_against_the_limit(engine, tiny_layout: Path, tmp_path: Path,
                                                                 capfd: pytest.CaptureFixture[str],
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A line the stage prints is shown while it still runs (before a later heartbeat), prefixed with
    the time used against the limit, and the whole log is kept beside the report."""
    from helpkit.submission.validate import LiveLog, validate

    monkeypatch.setattr(LiveLog, "HEARTBEAT_S", 1.0)
    context = fixture_context("good", tmp_path)
    (context / "train.sh").write_text("#!/bin/sh\necho 'first line'\nsleep 4\necho 'second line'\n"
                                      "exec python3 /app/train.py\n")
    report = validate(context, tiny_layout, report_path=tmp_path / "r.json", quiet=False)
    assert report.verdict == "PASS"
    err = capfd.readouterr().err.splitlines()
    train = [line for line in err if line.startswith("[train ")]
    first = next(i for i, line in enumerate(train) if line.endswith("] first line"))
    second = next(i for i, line in enumerate(train) if line.endswith("] second line"))
    assert any("still running" in line for line in train[first:second])  # seen live, not after the stage
    assert train[first].startswith("[train 00:0") and "/01:00]" in train[first]  # train_timeout_s = 60
    assert (tmp_path / "r.train.log").read_text().splitlines()[:2] == ["first line", "second line"]
    assert json.loads((tmp_path / "r.json").read_text())["logs"]["train"] == str(tmp_path / "r.train.log")


@pytest.mark.docker
def test_validate_json_prints_only_json_on_stdout(engine, tiny_layout: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from helpkit.cli import app

    args = ["submission", "validate", str(fixture_context("good", tmp_path)), "--data", str(tiny_layout), "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    saved = json.loads(result.stdout)
    assert saved["verdict"] == "PASS" and "NaN" not in result.stdout and "Infinity" not in result.stdout
