"""``helpkit demo``: a whole competition end to end on synthetic data, judged by one report.

Synthesizes a phase-1 competition (the default preset) and a phase-2 test set (help22:
another lab's stain, scanner and case mix), builds the stacked-ensemble submission image, validates it in Docker under the platform
contract (train once, infer on both test sets), scores both ``output.csv`` files and the
simple model's max-probability score against the held-aside labels, and writes the report.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from helpkit.errors import HelpkitError
from helpkit.io import write_json

SIMPLE_MAXPROB = "simple-maxprob"
"""The reference team's recipe, scored from the stacked run's own simple model: the slide's
maximum heatmap probability (the simple-maxprob submission trains the same model)."""


@dataclass(frozen=True)
class DemoSettings:
    """Sizes of the synthetic competition and which submission the demo builds."""

    n_train: int
    n_test: int
    n_test_phase2: int
    size: int
    seed: int
    submission: str
    phase1: str = "default"
    """Preset of the training and phase-1 test slides (``helpkit.synth.presets``)."""
    phase2: str = "help22"
    """Preset of the phase-2 test slides: another lab, scanner, more mimics and small deposits."""
    layout: str = "help"
    """The synthetic competition's layout: help, camelyon16 or camelyon17 (``helpkit synth --layout``)."""


DEFAULT = DemoSettings(n_train=16, n_test=10, n_test_phase2=10, size=4096, seed=0, submission="demo-stacked")
QUICK = DemoSettings(n_train=6, n_test=4, n_test_phase2=4, size=2048, seed=0, submission="demo-quick")


class _Clock:
    """Times named steps and prints each as it starts."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.timings: dict[str, float] = {}

    def step(self, name: str, what: str) -> _Step:
        print(f"==> {what}", flush=True)
        return _Step(self, name)


class _Step:
    def __init__(self, clock: _Clock, name: str) -> None:
        self.clock, self.name = clock, name

    def __enter__(self) -> None:
        self.t0 = time.monotonic()

    def __exit__(self, *exc: object) -> None:
        self.clock.timings[self.name] = time.monotonic() - self.t0


def _synthesize(out: Path, settings: DemoSettings, clock: _Clock) -> tuple[Path, Path]:
    from helpkit.synth import is_current, make_competition

    phase1, phase2 = out / "data", out / "data-phase2"
    with clock.step("synth", f"synthesizing a competition ({settings.layout} layout): {settings.n_train} training, "
                    f"{settings.n_test} test slides of {settings.size} px ({settings.phase1} preset), and a phase-2 "
                    f"test set of {settings.n_test_phase2} ({settings.phase2} preset)"):
        common = {"size": settings.size, "layout": settings.layout, "phase1": settings.phase1}
        first = common | {"n_train": settings.n_train, "n_test": settings.n_test, "seed": settings.seed}
        # Phase 2 only lends its test set; its two training slides are never used.
        second = common | {"n_train": 2, "n_test": settings.n_test_phase2, "seed": settings.seed + 1,
                           "phase2": settings.phase2}
        for folder, params in ((phase1, first), (phase2, second)):
            if not is_current(folder, **params):  # reused only if drawn now with these parameters
                make_competition(folder, **params)
    _print_patch_counts(phase1)
    return phase1, phase2


def _print_patch_counts(competition: Path) -> None:
    """Per training slide: tissue, tumour and normal patches at the default grid (the data at a glance)."""
    from helpkit.data import discover
    from helpkit.layouts import platform_folders
    from helpkit.slide.index import index_dataset

    slides = discover(platform_folders(competition)[0])
    summary = index_dataset(slides, progress=False).summary
    print(summary[["slide_id", "label", "tissue", "tumour", "normal", "ambiguous"]].to_string(index=False))


def _score(run: dict[str, Any], out: Path, model_dir: Path, config: Any) -> None:
    """AUC with CI of each submission on each labelled test set; adds ``scores`` to ``run``.

    The simple model's max-probability score and the report's heatmaps come from the test
    sets' heatmaps in ``validation/inference-<phase>``: the host stages left them there, and
    after a validation in containers (whose scratch is gone) they are made here from the
    model dir the train stage left.
    """
    from helpkit.pipeline import PIPELINE_FILE, inference_features
    from helpkit.scoring import auc_ci, read_labels, read_predictions, write_predictions

    run["scores"] = {}
    for phase, info in run["test_sets"].items():
        labels = read_labels(out / info["labels"])
        if (model_dir / PIPELINE_FILE).is_file():  # else the train stage failed: nothing to score it by
            table, work = inference_features(out / info["test_dir"], model_dir, config, _work_dir(out, phase))
            if "simple__max" in table.columns:
                maxprob = table["simple__max"].fillna(run["fallback_probability"]).clip(0, 1)
                path = out / "predictions" / f"{phase}-{SIMPLE_MAXPROB}.csv"
                write_predictions(path, maxprob)
                info["predictions"][SIMPLE_MAXPROB] = str(path.relative_to(out))
            info["heatmaps"] = str((work / "heatmaps").relative_to(out))
        run["scores"][phase] = {}
        for name, rel in info["predictions"].items():
            if (out / rel).is_file():
                preds = read_predictions(out / rel, expected_ids=list(labels.index)).scores
                result = auc_ci(labels.to_numpy(dtype=int), preds.reindex(labels.index).to_numpy())
                run["scores"][phase][name] = result.as_dict()


def run_demo(out: str | Path, quick: bool = False, docker: bool = True, layout: str = "help") -> dict[str, Any]:
    """Run the demo into ``out`` on a synthetic competition in ``layout``; return what ``demo.json`` records."""
    from dataclasses import replace

    from helpkit.config import load_submission, resolve_submission_path
    from helpkit.layouts import labels_file, platform_folders
    from helpkit.report import build_report
    from helpkit.synth.camelyon_writer import truth_folder

    settings = replace(QUICK if quick else DEFAULT, layout=layout)
    out = Path(out).absolute()  # layouts hand back absolute paths; the run records them relative to out
    out.mkdir(parents=True, exist_ok=True)
    clock = _Clock()
    phase1, phase2 = _synthesize(out, settings, clock)
    toml_path = resolve_submission_path(settings.submission)
    config = load_submission(toml_path)
    work = out / "validation"
    model_dir = work / "model"
    run: dict[str, Any] = {
        "settings": asdict(settings) | {"quick": quick, "docker": docker},
        "submission": {"name": config.name, "toml": toml_path.read_text()},
        "models": [m.name for m in config.models],
        "fallback_probability": config.fallback_probability,
        "ensemble_report": str((model_dir / "ensemble_report").relative_to(out)),
        "test_sets": {},
    }
    outputs = {"phase1": work / "output" / "output.csv", "phase2": work / "output-phase2" / "output.csv"}
    for phase, data in (("phase1", phase1), ("phase2", phase2)):
        run["test_sets"][phase] = {
            "test_dir": str(platform_folders(data)[1].relative_to(out)), "labels": str(labels_file(data).relative_to(out)),
            "truth_masks": str(truth_folder(data, layout).relative_to(out)),
            "predictions": {config.name: str(outputs[phase].relative_to(out))},
        }
    if docker:
        _validate_in_docker(run, out, phase1, phase2, settings, clock)
    else:
        _run_on_host(run, out, phase1, phase2, config, toml_path, clock)
    with clock.step("score", "scoring both test sets against the held-aside labels"):
        _score(run, out, model_dir, config)
    run["timings_s"] = clock.timings | {"total": time.monotonic() - clock.start}
    run["finished"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    write_json(out / "demo.json", run)
    report = build_report(out, out / "report.html")
    run["report"] = str(report)
    _print_summary(run)
    return run


def _validate_in_docker(run: dict[str, Any], out: Path, phase1: Path, phase2: Path, settings: DemoSettings,
                        clock: _Clock) -> None:
    from docker.errors import ImageNotFound

    from helpkit.config import load_submission
    from helpkit.submission.base_image import build_base_image
    from helpkit.submission.docker_build import build_submission
    from helpkit.submission.docker_engine import client
    from helpkit.submission.validate import validate

    try:
        engine = client()
    except HelpkitError as err:
        raise HelpkitError(f"{err.message}; or run `helpkit demo --no-docker`") from err
    base = load_submission(settings.submission).base_image
    with clock.step("build", f"building the {settings.submission} submission image"):
        try:
            engine.images.get(base)
        except ImageNotFound:
            if not base.startswith("helpkit/base:"):
                raise HelpkitError(f"base image {base} is not in the engine and no registry is assumed") from None
            print(f"base image {base} is missing: building it with debootstrap", flush=True)
            build_base_image(base)
        built = build_submission(settings.submission)
    run["submission"] |= {"image": built.tag, "image_id": built.image_id, "image_size_bytes": built.size_bytes}
    work = out / "validation"
    if work.exists():
        import shutil

        shutil.rmtree(work)
    with clock.step("validate", "validating under the platform contract: train stage, then inference on both "
                    "test sets, each in a locked-down container"):
        report = validate(settings.submission, phase1, report_path=work / "report.json", work_dir=work,
                          extra_tests={"phase2": phase2})
    run["validation"] = str((work / "report.json").relative_to(out))
    run["verdict"] = report.verdict


def _run_on_host(run: dict[str, Any], out: Path, phase1: Path, phase2: Path, config: Any, toml_path: Path,
                 clock: _Clock) -> None:
    """The same stages without containers, for machines with no Docker engine (no verdict)."""
    from helpkit.layouts import platform_folders

    from helpkit import pipeline

    work = out / "validation"
    with clock.step("train", "train stage on this machine (no containers: --no-docker)"):
        pipeline.train(platform_folders(phase1)[0], work / "model", config, submission_dir=toml_path.parent)
    for phase, data in (("phase1", phase1), ("phase2", phase2)):
        with clock.step(f"infer_{phase}", f"inference stage on the {phase} test set"):
            pipeline.infer(platform_folders(data)[1], work / "model", out / run["test_sets"][phase]["predictions"][config.name],
                           config, work_dir=_work_dir(out, phase))
    run["verdict"] = "NOT RUN (--no-docker)"


def _work_dir(out: Path, phase: str) -> Path:
    """The inference scratch of one test set, kept for the report."""
    return out / "validation" / f"inference-{phase}"


def _print_summary(run: dict[str, Any]) -> None:
    scores = run.get("scores", {})

    def line(phase: str) -> str:
        parts = [f"{name} {r['auc']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}]" for name, r in scores.get(phase, {}).items()]
        return f"{phase} AUC: " + ("; ".join(parts) or "none")

    print()
    print(f"report:   {run['report']}")
    print(line("phase1"))
    print(line("phase2"))
    print(f"image:    {run['submission'].get('image', 'none (not built)')}  verdict: {run.get('verdict')}")
    print(f"time:     {run['timings_s']['total'] / 60:.1f} min total "
          f"({', '.join(f'{k} {v:.0f}s' for k, v in run['timings_s'].items() if k != 'total')})")
