"""Validate a submission end to end, as the platform will run it, and say PASS or why not.

Order: static check of the build context, image build, train stage, inference stage (each
in a container under ``contract.run_stage``'s limits, with a fresh ``/data/model``), then
output.csv through the scorer's own reader against the test slides of the data folder, and
an AUC where ``labels.csv`` sits next to ``test/``. The first failure decides the verdict;
later steps are skipped because they could only fail for the same reason.
"""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from helpkit.errors import HelpkitError
from helpkit.io import write_json
from helpkit.submission.paths import PLATFORM

EMULATION = {
    "network": "none",
    "memory_swap": "equal to memory (no swap)",
    "cap_drop": "ALL",
    "security_opt": "no-new-privileges",
    "root_filesystem": "read-only; /tmp is a tmpfs; only /data/model and /data/output are writable",
    "data_mounts": "read-only",
}


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

    @property
    def passed(self) -> bool:
        """No failure was found."""
        return not self.failures

    @property
    def verdict(self) -> str:
        """``PASS`` or ``FAIL: <first reason>``."""
        return "PASS" if self.passed else f"FAIL: {self.failures[0]}"

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
    report.warnings += [f"static: {f.message} ({f.path})" for f in static.findings if f.level == "warning"]
    if static.errors:
        first = static.errors[0]
        report.failures.append(f"static check ({first.check}): {first.message}" + (f" [{first.path}]" if first.path else ""))
        return None
    try:
        built = build_image(context, image_tag(load_submission(context / "submission.toml").name), quiet=quiet)
    except HelpkitError as err:
        report.failures.append(f"image build: {err.message}")
        return None
    report.image, report.image_id = built.tag, built.image_id
    return context, built.image_id


def _check_output(csv_path: Path, test_ids: list[str], data_dir: Path, report: ValidationReport,
                  what: str = "output.csv") -> dict[str, Any]:
    """output.csv through the scorer's reader, and the AUC where ``data_dir/labels.csv`` exists.

    Problems go to ``report`` prefixed with ``what``; returns rows, expected, warnings, score.
    """
    from helpkit.data import read_labels
    from helpkit.scoring import auc_ci, read_predictions

    if not csv_path.is_file():
        report.failures.append(f"{what}: the inference stage wrote no {PLATFORM.output_csv}")
        return {}
    try:
        predictions = read_predictions(csv_path, expected_ids=test_ids)
    except HelpkitError as err:
        report.failures.append(f"{what}: {err.message}")
        return {}
    checked: dict[str, Any] = {"rows": len(predictions.scores), "expected": len(test_ids),
                               "warnings": predictions.warnings, "score": None}
    report.warnings += [f"{what}: {w}" for w in predictions.warnings]
    labels_path = data_dir / "labels.csv"
    if labels_path.is_file():
        labels = read_labels(labels_path).reindex(predictions.scores.index)
        known = labels.notna()
        try:
            result = auc_ci(labels[known].to_numpy(int), predictions.scores[known].to_numpy())
        except (HelpkitError, ValueError) as err:
            report.warnings.append(f"{what}: no AUC: {err}")
        else:
            checked["score"] = {"labels": str(labels_path), **result.as_dict()}
    return checked


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
    ``labels.csv``). Stages write into ``work_dir/model`` and ``work_dir/output`` (a temporary
    folder when None). ``extra_tests`` maps a name to another competition root whose
    ``test/`` gets its own inference stage from the same trained model (the platform's
    phase 2), written to ``work_dir/output-<name>``. The report is written atomically to
    ``report_path`` when given.
    """
    from helpkit.config import load_submission
    from helpkit.data import discover
    from helpkit.submission.contract import run_stage, stage_mounts
    from helpkit.submission.engine import client

    data_dir = Path(data_dir)
    for split in ("train", "test"):
        if not (data_dir / split).is_dir():
            raise HelpkitError(f"the data folder has no {split}/ (expected the HeLP layout)", data_dir)
    test_sets = {"": data_dir, **{name: Path(root) for name, root in (extra_tests or {}).items()}}
    test_ids = {name: sorted(discover(root / "test")["slide_id"]) for name, root in test_sets.items()}
    report = ValidationReport(submission=str(target), data=str(data_dir))
    engine = client()
    built = _build(target, report, quiet)
    if built is not None:
        context, image_id = built
        limits = load_submission(context / "submission.toml").limits
        with tempfile.TemporaryDirectory(prefix="helpkit-validate-") as tmp:
            root = Path(work_dir) if work_dir is not None else Path(tmp)
            model_dir = root / "model"
            outputs = {name: root / (f"output-{name}" if name else "output") for name in test_sets}
            for folder in (model_dir, *outputs.values()):
                if folder.exists() and any(folder.iterdir()):
                    raise HelpkitError("must be empty: each validation starts from a fresh /data/model", folder)
                folder.mkdir(parents=True, exist_ok=True)
            runs = [("train", "", data_dir)] + [("inference", name, test_root) for name, test_root in test_sets.items()]
            for stage, name, stage_data in runs:
                label = f"{stage} ({name})" if name else stage
                if not quiet:
                    print(f"running the {label} stage in a container ...", flush=True)
                mounts = stage_mounts(stage, stage_data, model_dir, outputs.get(name, root / "output"))
                result = run_stage(engine, image_id, stage, mounts, limits)
                report.stages.append({**result.to_dict(), "label": label})
                if not result.ok:
                    report.failures.append(str(result.failure()))
                    break
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
