"""CLI commands: ``helpkit submission build|validate|check|base-image``."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import typer

submission_app = typer.Typer(
    help="Docker submissions: build the image, validate it under the platform contract.",
    no_args_is_help=True,
)


@submission_app.command("build")
def build(
    name: str = typer.Argument(..., help="A submission under the project's submissions/, a shipped example, "
                               "or a path to its folder or submission.toml."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Hide the build steps; print only the result."),
    update_lock: bool = typer.Option(
        False, "--update-lock", help="Resolve the dependencies again and rewrite submission.lock (otherwise a "
        "build installs exactly the lock its first build wrote)."),
    device: str | None = typer.Option(
        None, "--device", help="cpu (tensorflow-cpu) or gpu (TensorFlow with CUDA, tagged :gpu; its own lock, "
        "submission.gpu.lock); default: submission.toml's device."),
) -> None:
    """Render build/NAME (templates + the locked wheelhouse), build and tag the image, print its id and size.

    The first build writes submission.lock beside submission.toml: the exact version and sha256 of every
    wheel the image installs. Later builds install exactly that, offline, until --update-lock. The image
    is labelled with helpkit's version, the project's git commit and the lock's sha256."""
    from helpkit.submission.docker_build import build_submission

    from helpkit.errors import HelpkitError
    from helpkit.submission.device import DEVICES

    if device is not None and device not in DEVICES:
        raise HelpkitError(f"--device must be one of {', '.join(DEVICES)}, got {device!r}")
    built = build_submission(name, quiet=quiet, update_lock=update_lock, device=device)
    typer.echo(built.summary())


@submission_app.command("check")
def check(
    context: Path = typer.Argument(..., help="A build context folder (e.g. build/NAME) to check without Docker."),
) -> None:
    """Static checks only: entry points, config, baked-in data/secrets/caches, host paths, size."""
    from helpkit.submission.static import check_context

    report = check_context(context)
    for finding in report.findings:
        typer.echo(f"{finding.level}: {finding.check}: {finding.message} [{finding.path}]")
    typer.echo("PASS" if not report.errors else f"FAIL: {report.errors[0].check}: {report.errors[0].message}")
    raise typer.Exit(0 if not report.errors else 1)


VALIDATE_HELP = "\n\n".join([
    "Build the image, run train then inference in containers under the platform's limits, check output.csv.",
    "Each stage runs with no network, no capabilities, a read-only root and a tmpfs /tmp, under the \\[limits] of "
    "submission.toml: memory, cpus, shm_size, pids_limit, tmp_size, train_timeout_s, infer_timeout_s, and:",
    "model_writable_in_inference (default false): /data/model is read-only in the inference stage, as on platforms "
    "that freeze the train stage's output; true mounts it read-write, and each --extra-test set then reads its own "
    "copy of the trained model.",
    "model_max_size (default 10g), output_max_size (default 1g): what /data/model and /data/output may hold after "
    "each stage; a stage over its cap fails (and is killed as soon as it passes the cap).",
    'user (e.g. "1000:1000"; default unset): run both stages as that non-root uid:gid.',
    "output.csv is read as the platform would: a UTF-8 BOM or CRLF line ends fail by name, a trailing blank line "
    "is accepted.",
    "While a stage runs, its log lines are printed on stderr as they come, each with the time used against the "
    "stage's limit (--quiet hides them). Then prints each stage's exit code, duration and peak memory, and PASS or "
    "FAIL with the first reason; every line is at most 300 characters, and each stage's whole log goes beside the "
    "--report file (REPORT.<stage>.log) or into --work-dir. --json prints the whole report as JSON on stdout "
    "instead. Exits 1 on FAIL.",
])


@contextlib.contextmanager
def _stdout_to_stderr() -> Iterator[None]:
    """Send what this process and its children print on stdout to stderr for a while."""
    sys.stdout.flush()
    try:
        real = sys.stdout.fileno() == 1
    except (AttributeError, OSError, ValueError):  # a captured stdout (tests): Python-level only
        real = False
    saved = os.dup(1) if real else None
    if saved is not None:
        os.dup2(2, 1)
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stdout.flush()
        if saved is not None:
            os.dup2(saved, 1)
            os.close(saved)


@submission_app.command("validate", help=VALIDATE_HELP)
def validate(
    name: str = typer.Argument(
        ..., help="A submission under submissions/, its submission.toml, or a build context folder (with a Dockerfile)."
    ),
    data: Path = typer.Option(..., "--data", help="A competition: HeLP (train/, test/, optional labels.csv) or CAMELYON16/17 (training/ and testing/images or testing/ are mounted; reference.csv or the test stage CSV scores)."),
    json_path: Path | None = typer.Option(None, "--report", help="Write the full report here (JSON, atomic), each "
                                          "stage's whole log beside it."),
    as_json: bool = typer.Option(False, "--json", help="Print the full report as one JSON object on stdout (the "
                                 "build and the live log go to stderr)."),
    work_dir: Path | None = typer.Option(
        None, "--work-dir", help="Keep the stages' model/ and output/ here (must be empty); a temporary folder if unset."
    ),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Hide build progress and the stages' live log lines."),
    extra_test: list[str] = typer.Option(
        [], "--extra-test", metavar="NAME=DIR",
        help="Also run the inference stage on DIR/test (a second test set, like the platform's phase 2) "
        "with the same trained model; repeatable.",
    ),
) -> None:
    """Build the image, run train then inference in containers under the platform's limits, check output.csv."""
    from helpkit.errors import HelpkitError
    from helpkit.submission.contract import MAX_LINE, clip
    from helpkit.submission.validate import validate as run_validation

    extra = {}
    for item in extra_test:
        test_name, sep, folder = item.partition("=")
        if not sep or not test_name or not folder:
            raise HelpkitError(f"--extra-test takes NAME=DIR, got {item!r}")
        extra[test_name] = Path(folder)
    if as_json:  # stdout holds the JSON alone: the build's and the stages' progress go to stderr
        from helpkit.io import json_text

        with _stdout_to_stderr():
            report = run_validation(name, data, report_path=json_path, work_dir=work_dir, quiet=quiet,
                                    extra_tests=extra)
        typer.echo(json_text(report.to_dict()))
        raise typer.Exit(0 if report.passed else 1)
    report = run_validation(name, data, report_path=json_path, work_dir=work_dir, quiet=quiet, extra_tests=extra)
    for stage in report.stages:
        peak = stage["peak_memory_bytes"]
        memory = f"{peak / 2**20:.0f} MiB peak" if peak else "peak memory not sampled"
        typer.echo(f"{stage['label']}: exit {stage['exit_code']} in {stage['duration_s']:.1f} s, {memory}")
        if not stage["ok"]:
            tail = [clip(line, MAX_LINE - 4) for line in stage["log_tail"][-15:]]
            typer.echo("  log tail:\n    " + "\n    ".join(tail))
        if stage.get("log_path"):
            typer.echo(f"  log: {stage['log_path']}")
    scores = {"": report.score, **{n: t.get("score") for n, t in report.extra_tests.items()}}
    for test_name, score in scores.items():
        if score:
            where = f" ({test_name})" if test_name else ""
            typer.echo(f"AUC{where} {score['auc']:.3f} on {score['n_positive'] + score['n_negative']} labelled test slides")
    for warning in report.warnings:
        typer.echo(f"warning: {warning}")
    if json_path is not None:
        typer.echo(f"report: {json_path}")
    typer.echo(report.verdict)
    raise typer.Exit(0 if report.passed else 1)


@submission_app.command("base-image")
def base_image(
    tag: str = typer.Option("helpkit/base:bookworm", "--tag", help="Tag of the image to create."),
    mirror: str | None = typer.Option(None, "--mirror", help="Debian mirror for debootstrap (its default if unset)."),
) -> None:
    """Build a Debian bookworm base image with debootstrap + docker import (no registry needed)."""
    from helpkit.submission.base_image import build_base_image

    typer.echo(f"{tag}  {build_base_image(tag, mirror=mirror)}")


def register(app: typer.Typer) -> None:
    """Add the ``submission`` command group to ``app``."""
    app.add_typer(submission_app, name="submission")
