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


EXPECTED = ["Slide003", "Slide004", "Slide005"]
GOOD_ROWS = "Slide003,0.25\nSlide004,0.5\nSlide005,0.75\n"


def _output(tmp_path: Path, data: bytes):
    from helpkit.submission.validate import check_output_file

    path = tmp_path / "output.csv"
    path.write_bytes(data)
    return check_output_file(path, EXPECTED)


def test_output_with_a_bom_is_named_a_bom(tmp_path: Path) -> None:
    check = _output(tmp_path, b"\xef\xbb\xbf" + GOOD_ROWS.encode())
    assert len(check.failures) == 1 and "byte-order mark (BOM)" in check.failures[0]
    assert not any("not among the expected" in f for f in check.failures)


@pytest.mark.parametrize(("ending", "words"), [(b"\r\n", "3 CRLF (Windows) line ending(s)"), (b"\r", "bare CR")])
def test_output_with_crlf_line_ends_is_named(tmp_path: Path, ending: bytes, words: str) -> None:
    check = _output(tmp_path, GOOD_ROWS.encode().replace(b"\n", ending))
    assert len(check.failures) == 1 and words in check.failures[0]


@pytest.mark.parametrize("tail", [b"\n", b"\n\n", b"\n  \n"])
def test_output_with_trailing_blank_lines_is_accepted(tmp_path: Path, tail: bytes) -> None:
    check = _output(tmp_path, GOOD_ROWS.encode() + tail)
    assert check.failures == [] and check.predictions is not None
    assert len(check.predictions.scores) == 3
    assert any("blank line(s), accepted" in w for w in check.warnings)
    plain = _output(tmp_path, GOOD_ROWS.encode())
    assert plain.failures == [] and plain.warnings == []


def test_output_blank_line_inside_and_other_problems_still_fail(tmp_path: Path) -> None:
    check = _output(tmp_path, b"Slide003,0.25\n\nSlide004,0.5\nSlide005,0.75\n")
    assert check.failures == ["1 problem(s): line 2: empty line"]
    check = _output(tmp_path, b"\xef\xbb\xbfSlide003,0.25\r\nSlide004,nan\r\n")
    assert "BOM" in check.failures[0] and "CRLF" in check.failures[1]
    assert "line 2: probability of Slide004 is nan" in check.failures[2] and "no row for: Slide005" in check.failures[2]


def test_every_verdict_line_is_at_most_300_characters() -> None:
    base = {"stage": "inference", "image": "img", "memory_limit": "1g", "timeout_s": 5.0}
    huge = "x" * 2**20
    failure = StageResult(**base, exit_code=1, log_tail=["start", huge]).failure()
    assert failure is not None and len(failure) <= 300 and failure.endswith("…]")
    assert failure.startswith("inference stage exited with code 1: see the log tail [last log line: xxx")
    report = ValidationReport(submission="s", data="d")
    report.fail(failure)
    report.fail("y" * 5000)
    report.warn("z" * 5000)
    assert len(report.verdict) <= 300 and report.verdict.startswith("FAIL: inference stage")
    assert all(len(f) <= 294 for f in report.failures) and len(report.warnings[0]) <= 291
    assert report.failures[1].endswith("…")
    multi = ValidationReport(submission="s", data="d")
    multi.fail("first line\nsecond line")
    assert multi.verdict == "FAIL: first line second line"


def test_log_tail_keeps_whole_lines_and_marks_a_cut_one(tmp_path: Path) -> None:
    from helpkit.submission.contract import _tail

    log = tmp_path / "stage.log"
    log.write_bytes(b"".join(f"line {i}\n".encode() for i in range(100)))
    assert _tail(log) == [f"line {i}" for i in range(40, 100)]
    log.write_bytes(b"a" * 5000 + b"\nlast\n")
    assert _tail(log, max_bytes=1000) == ["last"]
    log.write_bytes(b"b" * 5000)
    assert _tail(log, max_bytes=1000) == ["…" + "b" * 1000]


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("RuntimeError: can't start new thread", "pids limit of 64 processes and threads (limits.pids_limit)"),
        ("BlockingIOError: [Errno 11] Resource temporarily unavailable", "pids limit of 64"),
        ("OSError: [Errno 28] No space left on device", "/tmp is a tmpfs of limits.tmp_size = 16m"),
        ("OSError: [Errno 28] No space left on device: '/tmp/heatmaps/x.npz'", "limits.tmp_size = 16m"),
        ("OSError: [Errno 28] No space left on device: '/dev/shm/x'", "limits.shm_size = 64m"),
        ("OSError: [Errno 30] Read-only file system: '/data/model/inference'",
         "it writes /data/model/inference in the inference stage, where /data/model is read-only"),
    ],
)
def test_resource_failures_name_their_limit(line: str, words: str) -> None:
    assert words in explain(["starting", line], pids_limit=64, tmp_size="16m", shm_size="64m")
    base = {"stage": "train", "image": "img", "memory_limit": "1g", "timeout_s": 5.0,
            "pids_limit": 64, "tmp_size": "16m", "shm_size": "64m"}
    assert words in str(StageResult(**base, exit_code=1, log_tail=[line]).failure())


def test_pids_limit_hits_from_the_cgroup_are_named() -> None:
    base = {"stage": "train", "image": "img", "memory_limit": "1g", "timeout_s": 5.0, "pids_limit": 64}
    hung = StageResult(**base, exit_code=137, timed_out=True, pids_refused=12).failure()
    assert hung == ("train stage exceeded its time limit of 5 s and was killed; it hit the pids limit of 64 "
                    "processes and threads (limits.pids_limit): 12 refused")
    silent = StageResult(**base, exit_code=1, pids_refused=3, log_tail=["Aborted"]).failure()
    assert "exited with code 1: it hit the pids limit of 64" in str(silent)
    threads = StageResult(**base, exit_code=1, pids_refused=3, log_tail=["RuntimeError: can't start new thread"])
    assert "(3 refused)" in str(threads.failure())
    not_pids = StageResult(**base, exit_code=1, pids_refused=0, log_tail=["RuntimeError: can't start new thread"])
    assert "refused none (so not the pids limit of 64" in str(not_pids.failure())


def test_disk_caps_fail_naming_the_size_and_the_cap() -> None:
    base = {"stage": "inference", "image": "img", "memory_limit": "1g", "timeout_s": 5.0,
            "disk_caps": {PLATFORM.output: "1m", PLATFORM.model: "2m"}}
    within = StageResult(**base, exit_code=0, disk_bytes={PLATFORM.output: 2**20, PLATFORM.model: 0})
    assert within.ok and within.failure() is None
    over = StageResult(**base, exit_code=0, disk_bytes={PLATFORM.output: 5 * 2**20 + 1, PLATFORM.model: 0})
    assert not over.ok
    assert over.failure() == "inference stage left 5.0 MiB in /data/output, above its cap of 1m (limits.output_max_size)"
    killed = StageResult(**base, exit_code=137, disk_killed=PLATFORM.model, disk_bytes={PLATFORM.model: 3 * 2**20})
    assert killed.failure() == ("inference stage wrote 3.0 MiB to /data/model, above its cap of 2m "
                                "(limits.model_max_size), and was killed")


def test_folder_bytes_counts_files_once_and_skips_links(tmp_path: Path) -> None:
    from helpkit.io import folder_bytes

    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f").write_bytes(b"x" * 1000)
    os.link(tmp_path / "a" / "f", tmp_path / "hard")
    (tmp_path / "link").symlink_to("/usr")
    (tmp_path / "g").write_bytes(b"y" * 24)
    assert folder_bytes(tmp_path) == 1024  # the link to /usr is not followed, the hard link counts once


def test_model_dir_is_read_only_in_inference_unless_the_limits_allow() -> None:
    from helpkit.submission.contract import stage_mounts

    data, model, output = Path("/d"), Path("/m"), Path("/o")
    assert stage_mounts("train", data, model, output)[PLATFORM.model] == (model, "rw")
    assert stage_mounts("inference", data, model, output)[PLATFORM.model] == (model, "ro")
    assert stage_mounts("inference", data, model, output, model_writable=True)[PLATFORM.model] == (model, "rw")
    assert stage_mounts("inference", data, model, output)[PLATFORM.output] == (output, "rw")


def test_expected_test_ids_follow_the_one_slide_rule(tmp_path: Path) -> None:
    from helpkit.submission.validate import expected_test_ids

    test = tmp_path / "test"
    (test / "Slide009").mkdir(parents=True)
    for name in ("Slide001.tiff", "Slide002.svs", "Slide002.tiff", "Slide009/a.dcm", "Slide009/b.dcm", "notes.txt"):
        (test / name).write_bytes(b"placeholder")
    assert expected_test_ids(test) == ["Slide001", "Slide002", "Slide009"]
    with pytest.raises(HelpkitError, match="no test slides found"):
        expected_test_ids(tmp_path / "empty")


def test_validate_help_documents_the_new_limits() -> None:
    from typer.testing import CliRunner

    from helpkit.cli import app

    result = CliRunner().invoke(app, ["submission", "validate", "--help"], terminal_width=200)
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    for words in ("[limits]", "model_writable_in_inference (default false)", "model_max_size (default 10g)",
                  "output_max_size (default 1g)", 'user (e.g. "1000:1000"', "BOM", "300 characters"):
        assert words in text, words
