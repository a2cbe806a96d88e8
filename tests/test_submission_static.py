"""Build contexts without Docker: rendering, static checks, failure reasons, the engine message."""

from __future__ import annotations

import os
import shutil
import sys
import zipfile
from pathlib import Path

import pytest

from helpkit.config import SUBMISSIONS_DIR
from helpkit.errors import HelpkitError
from helpkit.submission.contract import StageResult, explain
from helpkit.submission.paths import PLATFORM
from helpkit.submission.render import render
from helpkit.submission.static import check_context
from helpkit.submission.validate import ValidationReport

FIXTURES = Path(__file__).parent / "fixtures" / "submissions"


@pytest.fixture
def good(tmp_path: Path) -> Path:
    """A copy of the good fixture context, free to break."""
    return Path(shutil.copytree(FIXTURES / "good", tmp_path / "good"))


def command_lines(script: Path) -> list[str]:
    return [line for line in script.read_text().splitlines() if line.strip() and not line.startswith("#")]


def test_rendered_context_runs_helpkit_with_the_platform_paths(tmp_path: Path) -> None:
    context = render("simple-maxprob", out_dir=tmp_path / "ctx", wheels=False)
    train, infer = command_lines(context / "train.sh"), command_lines(context / "inference.sh")
    assert len(train) == len(infer) == 1
    assert f"helpkit platform train --data {PLATFORM.train} --model-dir {PLATFORM.model}" in train[0]
    assert f"--output {PLATFORM.output_csv}" in infer[0] and f"--data {PLATFORM.test}" in infer[0]
    assert all(f"--config {PLATFORM.config}" in line for line in train + infer)
    dockerfile = (context / "Dockerfile").read_text()
    assert dockerfile.count("FROM helpkit/base:bookworm") == 2
    assert "--no-index" in dockerfile
    assert (context / "submission.toml").read_text() == (SUBMISSIONS_DIR / "simple-maxprob" / "submission.toml").read_text()
    assert check_context(context).findings == []


def test_render_uses_the_base_image_and_ships_weights(tmp_path: Path) -> None:
    source = tmp_path / "sub"
    (source / "runs" / "simple").mkdir(parents=True)
    (source / "runs" / "simple" / "model.keras").write_bytes(b"weights")
    (source / "submission.toml").write_text(
        'name = "shipped"\nbase_image = "python:3.11-slim"\n'
        '[[models]]\narchitecture = "simple"\nweights = "runs/simple"\n'
    )
    context = render(source, out_dir=tmp_path / "ctx", wheels=False)
    dockerfile = (context / "Dockerfile").read_text()
    assert dockerfile.count("FROM python:3.11-slim") == 2
    assert "COPY runs/simple/ ./runs/simple/" in dockerfile
    assert (context / "runs" / "simple" / "model.keras").read_bytes() == b"weights"

    shutil.rmtree(source / "runs")
    with pytest.raises(HelpkitError, match="weights folder 'runs/simple' does not exist"):
        render(source, out_dir=tmp_path / "ctx", wheels=False)


def test_good_fixture_passes_static_checks(good: Path) -> None:
    report = check_context(good)
    assert report.errors == []
    assert report.size_bytes == sum(p.stat().st_size for p in good.iterdir())


def _not_executable(ctx: Path) -> None:
    os.chmod(ctx / "train.sh", 0o644)


def _missing(ctx: Path) -> None:
    (ctx / "inference.sh").unlink()


def _no_shebang(ctx: Path) -> None:
    (ctx / "train.sh").write_text("python3 /app/train.py\n")


def _host_path(ctx: Path) -> None:
    (ctx / "train.py").write_text("import json\nopen('/home/alice/helpchallenge/train.txt')\n")


@pytest.mark.parametrize(
    ("breakage", "check", "words"),
    [
        (_not_executable, "entry point", "train.sh is not executable"),
        (_missing, "entry point", "inference.sh is missing"),
        (_no_shebang, "entry point", "no #! line"),
        (_host_path, "host path", "line 2 uses the absolute host path '/home/alice/helpchallenge/train.txt'"),
        (lambda c: (c / "heatmaps.npz").write_bytes(b"x"), "data", ".npz files"),
        (lambda c: (c / "Slide001.svs").write_bytes(b"x"), "data", ".svs files"),
        (lambda c: (c / "id_rsa").write_text("key"), "secret", "secret"),
        (lambda c: (c / ".env").write_text("TOKEN=1"), "secret", "secret"),
        (lambda c: ((c / "__pycache__").mkdir(), (c / "__pycache__" / "x.pyc").write_bytes(b"x")), "cache", "caches"),
        (lambda c: (c / "submission.toml").write_text('name = "x"\nmemroy = "1g"\n'), "config", "memroy"),
    ],
)
def test_each_problem_is_found_with_its_reason(good: Path, breakage, check: str, words: str) -> None:
    breakage(good)
    errors = check_context(good).errors
    assert [e.check for e in errors] == [check]
    assert words in errors[0].message


def test_dockerignore_decides_what_is_checked(good: Path) -> None:
    (good / "cache.npz").write_bytes(b"x")
    (good / ".dockerignore").write_text("*.npz\n")
    assert check_context(good).errors == []


def test_size_limit_and_missing_dockerfile(good: Path) -> None:
    assert [e.check for e in check_context(good, max_bytes=100).errors] == ["size"]
    large = check_context(good, warn_bytes=100)
    assert large.errors == [] and [(f.level, f.check) for f in large.findings] == [("warning", "size")]
    (good / "Dockerfile").unlink()
    assert [e.check for e in check_context(good).errors] == ["dockerfile"]
    with pytest.raises(HelpkitError, match="dockerfile: no Dockerfile"):
        check_context(good).raise_errors()


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("FileNotFoundError: [Errno 2] No such file or directory: 'train.txt'", "relative path 'train.txt'"),
        ("FileNotFoundError: [Errno 2] No such file or directory: '/opt/x.txt'", "opens '/opt/x.txt'"),
        ("OSError: [Errno 30] Read-only file system: '/app/cache'", "writes outside /data/model"),
        ("urllib.error.URLError: <urlopen error [Errno -3] Temporary failure in name resolution>", "needs the network"),
        ("Traceback: something else", "see the log tail"),
    ],
)
def test_log_tails_are_explained(line: str, words: str) -> None:
    assert words in explain(["starting", line])


def test_stage_failures_read_in_the_authors_terms() -> None:
    base = {"stage": "train", "image": "img", "memory_limit": "1g", "timeout_s": 5.0}
    assert StageResult(**base, exit_code=0).failure() is None
    assert "exceeded its time limit of 5 s" in StageResult(**base, exit_code=137, timed_out=True).failure()
    assert "memory limit of 1g" in StageResult(**base, exit_code=137, oom_killed=True).failure()
    failed = StageResult(**base, exit_code=3, log_tail=["boom", ""]).failure()
    assert failed.startswith("train stage exited with code 3") and "last log line: boom" in failed


def test_verdict_is_pass_or_the_first_failure() -> None:
    report = ValidationReport(submission="s", data="d")
    assert report.verdict == "PASS" and report.to_dict()["passed"]
    report.failures += ["first", "second"]
    assert report.verdict == "FAIL: first"


def test_missing_engine_is_one_line_saying_how_to_start_one(monkeypatch, capsys) -> None:
    from helpkit.cli import main

    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent/docker.sock")
    monkeypatch.setattr(sys, "argv", ["helpkit", "submission", "build", "simple-maxprob"])
    with pytest.raises(SystemExit) as exited:
        main()
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "no Docker engine is reachable" in err
    assert "dockerd --bridge=none --iptables=false" in err


def test_helpkit_wheel_carries_the_package_and_is_reproducible(tmp_path: Path) -> None:
    from helpkit.submission.wheelhouse import build_helpkit_wheel

    wheel = build_helpkit_wheel(tmp_path / "a")
    names = zipfile.ZipFile(wheel).namelist()
    assert "helpkit/config.py" in names and "helpkit/submission/validate.py" in names
    # Same code, same bytes: otherwise every build would miss Docker's layer cache.
    assert build_helpkit_wheel(tmp_path / "b").read_bytes() == wheel.read_bytes()
