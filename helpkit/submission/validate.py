"""Validate a submission end to end, as the platform will run it, and say PASS or why not.

Order: static check of the build context, image build, train stage, inference stage (each
in a container under ``contract.run_stage``'s limits, with a fresh ``/data/model``), then
output.csv through the scorer's own reader against the test slides of the data folder, and
an AUC where ``labels.csv`` sits next to ``test/``. The first failure decides the verdict;
later steps are skipped because they could only fail for the same reason.

The inference stage sees ``/data/model`` read-only unless ``limits.model_writable_in_inference``;
then each test set gets its own copy of the trained model, so no test set reads another's
caches. Every failure and warning is one line of at most ``contract.MAX_LINE`` characters;
each stage's whole log is written beside the JSON report (``REPORT.<stage>.log``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from helpkit.errors import HelpkitError
from helpkit.io import write_json
from helpkit.submission.contract import MAX_LINE, clip
from helpkit.submission.device import GPU_NOT_CHECKED
from helpkit.submission.paths import PLATFORM

if TYPE_CHECKING:
    from helpkit.config import Limits
    from helpkit.scoring import Predictions

EMULATION = {
    "network": "none",
    "memory_swap": "equal to memory (no swap)",
    "cap_drop": "ALL",
    "security_opt": "no-new-privileges",
    "root_filesystem": "read-only; /tmp is a tmpfs; only /data/model (train stage) and /data/output are writable",
    "data_mounts": "read-only",
}

FAIL_PREFIX, WARNING_PREFIX = "FAIL: ", "warning: "
BOM = b"\xef\xbb\xbf"


@dataclass
class ValidationReport:
    """Everything a validation found; ``verdict`` is its one-line summary."""

    submission: str
    data: str
    context: str = ""
    image: str = ""
    image_id: str = ""
    static: dict[str, Any] = field(default_factory=dict)
    stages: list[dict[str, Any]] = field(default_factory=list)
    output: dict[str, Any] = field(default_factory=dict)
    score: dict[str, Any] | None = None
    warnings: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    extra_tests: dict[str, dict[str, Any]] = field(default_factory=dict)
    limits: dict[str, Any] = field(default_factory=dict)
    logs: dict[str, str] = field(default_factory=dict)
    device: dict[str, Any] = field(default_factory=lambda: {"image": "cpu", "gpus": False, "gpu_checked": False})
    """What the image was built for and whether its stages had GPUs (``helpkit.submission.device``)."""
    work_dir: str = ""
    """Where the stages' model/ and output/ were kept (``--work-dir``); '' for a temporary folder."""

    def fail(self, reason: str) -> None:
        """Record a failure, as one line that fits the verdict's length limit."""
        self.failures.append(clip(reason, MAX_LINE - len(FAIL_PREFIX)))

    def warn(self, message: str) -> None:
        """Record a warning, as one line that fits the length limit once printed."""
        self.warnings.append(clip(message, MAX_LINE - len(WARNING_PREFIX)))

    @property
    def passed(self) -> bool:
        """No failure was found."""
        return not self.failures

    @property
    def verdict(self) -> str:
        """``PASS`` or ``FAIL: <first reason>``, at most ``MAX_LINE`` characters; a GPU image that
        passed on a host without GPUs says ``PASS (GPU use not checked: ...)``."""
        if not self.passed:
            return clip(f"{FAIL_PREFIX}{self.failures[0]}")
        if self.device["image"] == "gpu" and not self.device["gpu_checked"]:
            return clip(f"PASS ({GPU_NOT_CHECKED})")
        return "PASS"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, verdict first."""
        return {
            "verdict": self.verdict,
            "passed": self.passed,
            "submission": self.submission,
            "data": self.data,
            "context": self.context,
            "image": self.image,
            "image_id": self.image_id,
            "emulation": EMULATION,
            "static": self.static,
            "stages": self.stages,
            "output": self.output,
            "score": self.score,
            "extra_tests": self.extra_tests,
            "limits": self.limits,
            "device": self.device,
            "logs": self.logs,
            "work_dir": self.work_dir,
            "warnings": self.warnings,
            "failures": self.failures,
        }


def _build(target: str | Path, report: ValidationReport, quiet: bool) -> tuple[Path, str] | None:
    """Static check then build; return (context, image id), or None after recording a failure."""
    from helpkit.config import load_submission
    from helpkit.submission.docker_build import build_image, image_tag
    from helpkit.submission.render import render
    from helpkit.submission.static import check_context

    given = Path(target)
    context = given if (given / "Dockerfile").is_file() else render(target)
    static = check_context(context)
    report.context, report.static = str(context), static.to_dict()
    for finding in static.findings:
        if finding.level == "warning":
            report.warn(f"static: {finding.message} ({finding.path})")
    if static.errors:
        first = static.errors[0]
        report.fail(f"static check ({first.check}): {first.message}" + (f" [{first.path}]" if first.path else ""))
        return None
    try:
        built = build_image(context, image_tag(load_submission(context / "submission.toml").name), quiet=quiet)
    except HelpkitError as err:
        report.fail(f"image build: {err.message}")
        return None
    report.image, report.image_id = built.tag, built.image_id
    return context, built.image_id


@dataclass
class OutputCheck:
    """output.csv as the platform would read it: the predictions when readable, and what is wrong."""

    predictions: Predictions | None = None
    failures: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def check_output_file(csv_path: str | Path, expected_ids: Iterable[str]) -> OutputCheck:
    """Read output.csv strictly, naming the byte-level problems the scorer's reader would misreport.

    A UTF-8 byte-order mark and CRLF (or bare CR) line ends are failures named as such (a
    platform may read the first id as '\\ufeffSlide003', or every probability with a trailing
    '\\r'); trailing blank lines are accepted with a warning. The rest (columns, numbers,
    duplicates, missing and unknown slides) is ``read_predictions`` on the file with those
    fixed, so each problem is reported once, by its real name.
    """
    from helpkit.scoring import read_predictions

    csv_path = Path(csv_path)
    check = OutputCheck()
    data = csv_path.read_bytes()
    if data.startswith(BOM):
        check.failures.append("starts with a UTF-8 byte-order mark (BOM), which the platform reads as part of "
                              "the first slide id; write plain UTF-8 (encoding='utf-8', not 'utf-8-sig')")
        data = data[len(BOM):]
    crlf, cr = data.count(b"\r\n"), data.count(b"\r") - data.count(b"\r\n")
    if crlf or cr:
        kind = f"{crlf} CRLF (Windows)" if crlf else f"{cr} bare CR (old Mac)"
        check.failures.append(f"has {kind} line ending(s); the platform expects '\\n' line ends "
                              "(open the file with newline='\\n', or lineterminator='\\n' in pandas)")
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    lines = data.split(b"\n")
    trailing = 0
    while len(lines) > 1 and not lines[-2].strip() and not lines[-1].strip():
        lines.pop()
        trailing += 1
    if trailing:
        check.warnings.append(f"ends with {trailing} blank line(s), accepted and ignored")
        data = b"\n".join(lines)
    with tempfile.TemporaryDirectory(prefix="helpkit-output-") as scratch:
        cleaned = Path(scratch) / "output.csv"
        cleaned.write_bytes(data)
        try:
            check.predictions = read_predictions(cleaned, expected_ids=expected_ids)
        except HelpkitError as err:
            check.failures.append(err.message)
    if check.predictions is not None:
        check.warnings += check.predictions.warnings
    return check


def _check_output(csv_path: Path, test_ids: list[str], data_dir: Path, report: ValidationReport,
                  what: str = "output.csv") -> dict[str, Any]:
    """output.csv through ``check_output_file``, and the AUC where ``data_dir/labels.csv`` exists.

    Problems go to ``report`` prefixed with ``what``; returns rows, expected, warnings, score.
    """
    from helpkit.data import read_labels
    from helpkit.scoring import auc_ci

    if not csv_path.is_file():
        report.fail(f"{what}: the inference stage wrote no {PLATFORM.output_csv}")
        return {}
    check = check_output_file(csv_path, test_ids)
    for failure in check.failures:
        report.fail(f"{what}: {failure}")
    for warning in check.warnings:
        report.warn(f"{what}: {warning}")
    predictions = check.predictions
    if check.failures or predictions is None:
        return {}
    checked: dict[str, Any] = {"rows": len(predictions.scores), "expected": len(test_ids),
                               "warnings": check.warnings, "score": None}
    from helpkit.layouts import labels_file

    labels_path = labels_file(data_dir)  # labels.csv, or CAMELYON's reference.csv / test stage CSV
    if labels_path.is_file():
        labels = read_labels(labels_path).reindex(predictions.scores.index)
        known = labels.notna()
        try:
            result = auc_ci(labels[known].to_numpy(int), predictions.scores[known].to_numpy())
        except (HelpkitError, ValueError) as err:
            report.warn(f"{what}: no AUC: {err}")
        else:
            checked["score"] = {"labels": str(labels_path), **result.as_dict()}
    return checked


def expected_test_ids(test_dir: Path) -> list[str]:
    """The slide ids output.csv must hold one row each for: ``helpkit.data.slide_ids``, the one rule
    of what a slide is that the inference stage follows too (a DICOM folder is one slide, duplicate
    stems one id)."""
    from helpkit.data import slide_ids

    ids = slide_ids(test_dir)
    if not ids:  # CAMELYON17: the slides sit in centre folders
        from helpkit.layouts import nested_slide_ids

        ids = nested_slide_ids(test_dir)
    if not ids:
        raise HelpkitError("no test slides found", test_dir)
    return ids


def _writable_by(folder: Path, limits: Limits) -> None:
    """Let the stage's user write ``folder`` and what is in it: chown when run as root, else open the mode."""
    ids = limits.user_ids
    if ids is None:
        return
    for path in [folder, *folder.rglob("*")]:
        if os.geteuid() == 0:
            os.chown(path, *ids, follow_symlinks=False)
        elif not path.is_symlink():
            path.chmod(path.stat().st_mode | 0o777 if path.is_dir() else path.stat().st_mode | 0o666)


def _log_path(report_path: Path | None, root: Path, label: str) -> Path:
    """Where a stage's whole log goes: beside the JSON report, else in a kept work folder."""
    slug = label.replace(" (", "-").rstrip(")")
    if report_path is not None:
        return report_path.with_name(f"{report_path.stem}.{slug}.log")
    return root / f"{slug}.log"


def _gpus(engine: Any, image_id: str, report: ValidationReport) -> bool:
    """Whether the stages get the host's GPUs: a GPU image on a host whose engine has them.

    A GPU image on a host without them runs on the CPU, with a warning and a verdict saying
    that GPU use was not checked.
    """
    from helpkit.submission.device import host_gpus, image_device

    device = image_device(engine, image_id)
    gpus = device == "gpu" and host_gpus(engine)
    report.device = {"image": device, "gpus": gpus, "gpu_checked": gpus}
    if device == "gpu" and not gpus:
        report.warn(GPU_NOT_CHECKED)
    return gpus


def _clock(seconds: float) -> str:
    """``mm:ss``, or ``h:mm:ss`` from an hour on."""
    seconds = int(max(seconds, 0))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60:02d}:{rest % 60:02d}"


class LiveLog:
    """Prints a running stage's log lines as they come, each prefixed with the time used against the
    stage's limit (``[train 02:13/60:00]``); after ``HEARTBEAT_S`` without a line it says the stage
    is still running, so a long silent step never looks like a hang. Lines go to stderr (stdout stays
    for the verdict and ``--json``), each clipped to ``MAX_LINE``."""

    HEARTBEAT_S = 30.0

    def __init__(self, label: str, limit_s: float, stream: Any = None) -> None:
        self.label, self.limit_s = label, limit_s
        self.stream = stream if stream is not None else sys.stderr
        self.start = self.last = time.monotonic()
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._heartbeat, daemon=True)

    def _prefix(self) -> str:
        used = time.monotonic() - self.start
        return f"[{self.label} {_clock(used)}/{_clock(self.limit_s)}]"

    def _print(self, text: str) -> None:
        with self.lock:
            print(clip(f"{self._prefix()} {text}", MAX_LINE), file=self.stream, flush=True)
            self.last = time.monotonic()

    def line(self, text: str) -> None:
        """One log line of the stage."""
        if text.strip():
            self._print(text)

    def _heartbeat(self) -> None:
        while not self.done.wait(1.0):
            if time.monotonic() - self.last >= self.HEARTBEAT_S:
                used = time.monotonic() - self.start
                self._print(f"... still running ({used / self.limit_s:.0%} of the time limit used)")

    def __enter__(self) -> LiveLog:
        self._print(f"{self.label} stage started in a container (limit {_clock(self.limit_s)})")
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join(timeout=2)


def validate(
    target: str | Path,
    data_dir: str | Path,
    report_path: str | Path | None = None,
    work_dir: str | Path | None = None,
    quiet: bool = False,
    extra_tests: Mapping[str, str | Path] | None = None,
) -> ValidationReport:
    """Validate a submission (a name under submissions/, its toml, or a build context folder).

    ``data_dir`` is a competition in the HeLP layout (``train/``, ``test/``, optional
    ``labels.csv``) or a CAMELYON one (``helpkit.layouts.platform_folders``: CAMELYON16's
    ``training/`` and ``testing/images`` are mounted as /data/train and /data/test). Stages write into ``work_dir/model`` and ``work_dir/output`` (a temporary
    folder when None). ``extra_tests`` maps a name to another competition root whose
    ``test/`` gets its own inference stage from the same trained model (the platform's
    phase 2), written to ``work_dir/output-<name>``; when the model is writable in inference,
    each such set reads its own copy of it, ``work_dir/model-<name>``. The report is written
    atomically to ``report_path`` when given, each stage's log beside it
    (``REPORT.train.log``, ``REPORT.inference.log``, ``REPORT.inference-<name>.log``), or
    into ``work_dir`` without a report. Unless ``quiet``, each stage's log lines are printed on
    stderr as they come, with the time used against the stage's limit (``LiveLog``).
    """
    from helpkit.config import load_submission
    from helpkit.submission.contract import run_stage, stage_mounts
    from helpkit.submission.docker_engine import client

    from helpkit.layouts import platform_folders

    data_dir = Path(data_dir)
    for split, folder in zip(("train", "test"), platform_folders(data_dir)):
        if not folder.is_dir():
            raise HelpkitError(f"the data folder has no {split} folder (expected {folder.name}/ "
                               "of the HeLP or a CAMELYON layout)", data_dir)
    test_sets = {"": data_dir, **{name: Path(root) for name, root in (extra_tests or {}).items()}}
    test_ids = {name: expected_test_ids(platform_folders(root)[1]) for name, root in test_sets.items()}
    report_path = Path(report_path) if report_path is not None else None
    report = ValidationReport(submission=str(target), data=str(data_dir),
                              work_dir=str(Path(work_dir).resolve()) if work_dir is not None else "")
    engine = client()
    built = _build(target, report, quiet)
    if built is not None:
        context, image_id = built
        limits = load_submission(context / "submission.toml").limits
        report.limits = limits.model_dump()
        gpus = _gpus(engine, image_id, report)
        with tempfile.TemporaryDirectory(prefix="helpkit-validate-") as tmp:
            root = Path(work_dir) if work_dir is not None else Path(tmp)
            model_dir = root / "model"
            writable = limits.model_writable_in_inference
            models = {name: root / f"model-{name}" if name and writable else model_dir for name in test_sets}
            outputs = {name: root / (f"output-{name}" if name else "output") for name in test_sets}
            for folder in {model_dir, *models.values(), *outputs.values()}:
                if folder.exists() and any(folder.iterdir()):
                    raise HelpkitError("must be empty: each validation starts from a fresh /data/model", folder)
                folder.mkdir(parents=True, exist_ok=True)
                _writable_by(folder, limits)
            keep_logs = report_path is not None or work_dir is not None
            runs = [("train", "", data_dir)] + [("inference", name, test_root) for name, test_root in test_sets.items()]
            for stage, name, stage_data in runs:
                label = f"{stage} ({name})" if name else stage
                mounts = stage_mounts(stage, stage_data, models[name], outputs.get(name, root / "output"),
                                      model_writable=writable)
                log_path = _log_path(report_path, root, label) if keep_logs else None
                limit = limits.train_timeout_s if stage == "train" else limits.infer_timeout_s
                with contextlib.ExitStack() as live:
                    on_line = None if quiet else live.enter_context(LiveLog(label, limit)).line
                    result = run_stage(engine, image_id, stage, mounts, limits, log_path=log_path, gpus=gpus,
                                       on_line=on_line)
                report.stages.append({**result.to_dict(), "label": label})
                if log_path is not None:
                    report.logs[label] = str(log_path)
                if result.pids_refused and result.ok:
                    report.warn(f"{label} stage: {result.pids_refused} thread or process start(s) refused at the "
                                f"pids limit of {limits.pids_limit} (limits.pids_limit)")
                if not result.ok:
                    report.fail(str(result.failure()))
                    break
                if stage == "train":  # each extra test set's own copy of the trained model, before any inference writes
                    for copy in {m for m in models.values() if m != model_dir}:
                        shutil.copytree(model_dir, copy, symlinks=True, dirs_exist_ok=True)
                        _writable_by(copy, limits)
                if stage == "inference":
                    what = f"output.csv ({name})" if name else "output.csv"
                    checked = _check_output(outputs[name] / "output.csv", test_ids[name], stage_data, report, what)
                    if name:
                        report.extra_tests[name] = checked
                    elif checked:
                        report.output = {k: v for k, v in checked.items() if k != "score"}
                        report.score = checked["score"]
    if report_path is not None:
        write_json(report_path, report.to_dict())
    return report
