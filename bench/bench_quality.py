"""Benchmark: which recipe holds up on phase 2, against the seed-style model.

Builds (or reuses, when its ``synth.json`` parameters match) a synthetic competition: ``--train``
training slides and a phase-1 test set of ``--test`` slides (preset ``default``), and a phase-2
test set of ``--test`` slides (preset ``help22``). Trains, with fixed budgets (epochs, folds,
patches per slide: no wall-clock budget, so ``--seed`` fixes the result), through helpkit's
own train stage (``helpkit.pipeline.train``):

- ``seed-style``: submissions/seed-style, one simple CNN without stain augmentation; score =
  the slide's max heatmap probability (the inference stage's output.csv);
- the stacked submission (``demo-stacked``; ``demo-quick`` with ``--quick``): simple, unet and
  inception CNNs at 2 um/px and ``fine``, the simple at 1 um/px (demo-quick has no ``fine``),
  whose candidates are each CNN's max heatmap probability (``<model>__max``),
  the mean blend and the tuned blend (``helpkit.ensemble.fit_ensemble`` on the train stage's
  out-of-fold features) and the LightGBM stack (the inference stage's output.csv).

Both test sets go through the inference stage (``helpkit.pipeline.infer``) into fresh work
dirs under ``--out`` (emptied first: no heatmap of an earlier run is reused). Prints per
candidate the phase-1 and phase-2 AUC with 95% DeLong CIs, the drop, the paired DeLong p
against seed-style on each phase, and the sensitivity on positive slides whose largest deposit
is macro / micro / itc at the candidate's Youden threshold chosen on phase 1 (applied unchanged
to phase 2), with the specificity there. Writes ``quality.csv`` and ``quality.png`` to
``--out``, and prints the wall time of each stage.

    .venv/bin/python bench/bench_quality.py            # 60 + 100 + 100 slides: hours on 2 cores the first time
    .venv/bin/python bench/bench_quality.py --quick    # a smoke test: 2-3 minutes (four CNNs train)
    .venv/bin/python bench/bench_quality.py --augment strong   # the stacked CNNs with another augmentation
    .venv/bin/python bench/bench_quality.py --normalise macenko --out build/bq/macenko   # one method alone
    .venv/bin/python bench/bench_quality.py --tta flips --models-from build/bq/base --out build/bq/tta
    .venv/bin/python bench/bench_quality.py --models simple unet inception --out build/bq/three   # without fine

``--augment``, ``--normalise``, ``--tta``, ``--hard-negatives`` and ``--tumour-threshold`` set that
field of every stacked CNN (``ModelSpec``); the seed-style model never changes, so every run's
table compares against the same reference. ``--models`` keeps some of the stacked CNNs, and
``--fine-mpp`` sets the scale of the ``fine`` one (adding ``fine_model`` to a submission without it).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from helpkit import pipeline
from helpkit.config import ModelSpec, SubmissionConfig, load_submission
from helpkit.data import read_labels, read_size_classes
from helpkit.layouts import labels_file, platform_folders
from helpkit.scoring import (
    DEPOSIT_CLASSES,
    at_threshold,
    auc,
    auc_ci,
    delong_test,
    sensitivity_by_class,
    youden_threshold,
)
from helpkit.heatmap.tta_spec import TTAS
from helpkit.slide.stain_spec import NORMALISERS
from helpkit.train.augment_spec import AUGMENTATIONS

if TYPE_CHECKING:
    from helpkit.ensemble.fitted import SlideEnsemble

SEED_STYLE = "seed-style"
SCORES_FILE = "scores.csv"
RECIPE = ("augment", "normalise", "tta", "hard_negatives", "tumour_threshold")
"""The ModelSpec fields the bench's options set on every stacked CNN."""
PHASES = {"phase1": "default", "phase2": "help22"}
"""Each test set and the synth preset it is drawn from (training slides: phase 1's)."""
BLENDS = ("mean", "tuned")
STACK = "lgbm"
FINE = "fine"
"""Name of the stacked CNN at the finer scale (``fine_model``)."""


@dataclass(frozen=True)
class Settings:
    """Sizes of the competition and the training budgets."""

    train: int
    test: int
    size: int
    seed: int
    epochs: int
    folds: int
    patches: int
    """Most patches sampled per training slide (``max_patches_per_slide``)."""
    stacked: str
    """The submission whose CNNs give the per-model, blend and stack candidates."""
    augment: str | None = None
    """Augmentation of the stacked submission's CNNs (``AUGMENTATIONS``); None: each model's own."""
    normalise: str | None = None
    """Stain normalisation of the stacked CNNs (``NORMALISERS``); None: each model's own."""
    tta: str | None = None
    """Test-time augmentation of the stacked CNNs' heatmaps (``TTAS``); None: each model's own."""
    hard_negatives: float | None = None
    """Hard-negative share of the stacked CNNs' second training round; None: each model's own."""
    tumour_threshold: float | None = None
    """Tumour share from which a training cell of the stacked CNNs is tumour; None: each model's own."""
    models: tuple[str, ...] | None = None
    """Names of the stacked submission's CNNs to keep, in its order; None: all of them."""
    fine_mpp: float | None = None
    """Microns per pixel of the stacked ``fine`` CNN (added as ``fine_model`` where there is none); None: as shipped."""

    def recipe(self) -> dict[str, object]:
        """What this run sets on the stacked CNNs (the settings that were given)."""
        return {k: v for k in RECIPE if (v := getattr(self, k)) is not None}


FULL = Settings(train=60, test=100, size=4096, seed=0, epochs=4, folds=3, patches=240, stacked="demo-stacked")
QUICK = Settings(train=6, test=6, size=2048, seed=0, epochs=1, folds=2, patches=32, stacked="demo-quick")


class Clock:
    """Wall time of named stages, printed as each ends."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.stages: dict[str, float] = {}

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.monotonic()
        yield
        self.stages[name] = time.monotonic() - t0
        print(f"bench_quality: {name}: {self.stages[name]:.0f} s", flush=True)

    def total(self) -> float:
        return time.monotonic() - self.start


def competition(out: Path, **params: object) -> Path:
    """``make_competition(out, **params)`` unless ``out`` holds what it would draw now
    (``helpkit.synth.is_current``: the parameters, the presets' numbers, the generator's source)."""
    from helpkit.synth import is_current, make_competition

    if not is_current(out, **params):
        make_competition(out, **params)  # type: ignore[arg-type]
    return out


def fixed_budget(config: SubmissionConfig, settings: Settings, recipe: dict[str, object] | None = None) -> SubmissionConfig:
    """``config`` with every model on the bench's budget (no wall-clock budget) and seed, and
    with ``recipe`` (ModelSpec fields: augment, normalise, tta, hard_negatives) on every model."""
    update = {"epochs": settings.epochs, "folds": settings.folds, "max_patches_per_slide": settings.patches,
              "time_budget_min": None} | (recipe or {})
    models = [m.model_copy(update=update) for m in config.models]
    return config.model_copy(update={"models": models, "seed": settings.seed})


def with_fallback(scores: pd.Series, failures: list[str], fallback: float) -> pd.Series:
    """What the inference stage writes: the fallback for failed slides (and for a missing score)."""
    scores = scores.astype(float).copy()
    scores[scores.index.isin(failures)] = fallback
    return scores.fillna(fallback).clip(0.0, 1.0)


def phase_scores(data: Path, models: dict[str, Path], configs: dict[str, SubmissionConfig],
                 blends: dict[str, SlideEnsemble], work: Path) -> pd.DataFrame:
    """Every candidate's score of the test slides of ``data`` (columns), by slide id."""
    test = platform_folders(data)[1]
    seed_cfg, stacked_cfg = configs[SEED_STYLE], configs["stacked"]
    seed = pipeline.infer(test, models[SEED_STYLE], work / "seed-style.csv", seed_cfg, work_dir=work / "seed-style")
    stack = pipeline.infer(test, models["stacked"], work / "stacked.csv", stacked_cfg, work_dir=work / "stacked")
    # The same work dir: the heatmaps just made are read back, not recomputed.
    features, scratch = pipeline.inference_features(test, models["stacked"], stacked_cfg, work / "stacked")
    failures = list(json.loads((scratch / "inference.json").read_text())["failures"])
    fallback = stacked_cfg.fallback_probability
    scores = {SEED_STYLE: seed}
    for spec in stacked_cfg.models:
        scores[f"{spec.name} max"] = with_fallback(features[f"{spec.name}__max"], failures, fallback)
    for method, ensemble in blends.items():
        proba = pd.Series(ensemble.predict_proba(features.reset_index()), index=features.index)
        scores[f"{method} blend"] = with_fallback(proba, failures, fallback)
    scores[f"{STACK} stack"] = stack
    return pd.DataFrame(scores)


def quality_table(scores: dict[str, pd.DataFrame], truth: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per candidate: AUCs with CIs, drop, p vs seed-style, Youden threshold, sensitivities."""
    rows = []
    for candidate in scores["phase1"].columns:
        row: dict[str, object] = {"candidate": candidate}
        for phase in PHASES:
            y = truth[phase]["label"].to_numpy(int)
            s = scores[phase][candidate].reindex(truth[phase].index).to_numpy(float)
            seed = scores[phase][SEED_STYLE].reindex(truth[phase].index).to_numpy(float)
            result = auc_ci(y, s)
            row |= {f"{phase}_auc": result.auc, f"{phase}_ci_low": result.ci_low, f"{phase}_ci_high": result.ci_high,
                    f"{phase}_p_vs_seed": np.nan if candidate == SEED_STYLE else delong_test(y, s, seed).p_value}
            if phase == "phase1":
                row["threshold"] = threshold = youden_threshold(y, s)
            for size, sens in sensitivity_by_class(truth[phase]["size_class"], s, threshold).items():
                row[f"{phase}_sens_{size}"] = sens.sensitivity
            row[f"{phase}_specificity"] = at_threshold(y, s, threshold).specificity
        row["drop"] = row["phase1_auc"] - row["phase2_auc"]  # type: ignore[operator]
        rows.append(row)
    columns = ["candidate", *(f"{p}_{k}" for p in PHASES for k in ("auc", "ci_low", "ci_high")), "drop",
               *(f"{p}_p_vs_seed" for p in PHASES), "threshold",
               *(f"{p}_{k}" for p in PHASES for k in (*(f"sens_{c}" for c in DEPOSIT_CLASSES), "specificity"))]
    return pd.DataFrame(rows)[columns]


def class_aucs(frame: pd.DataFrame, column: str) -> dict[str, float]:
    """AUC of ``column`` over ``frame``'s slides (``label``, ``size_class``), and of each deposit
    class's positives against the negatives alone (``auc_<class>``): which slides a score misses."""
    y = frame["label"].to_numpy(int)
    out = {"auc": auc(y, frame[column].to_numpy(float))}
    for size in DEPOSIT_CLASSES:
        rows = frame[(frame["label"] == 0) | (frame["size_class"] == size)]
        out[f"auc_{size}"] = auc(rows["label"].to_numpy(int), rows[column].to_numpy(float))
    return out


def write_scores(scores: dict[str, pd.DataFrame], truth: dict[str, pd.DataFrame], path: Path) -> None:
    """Every candidate's score per test slide, with phase, label and size class: what ``--compare`` reads."""
    frames = [scores[p].reindex(truth[p].index).assign(phase=p, **truth[p]) for p in PHASES]
    pd.concat(frames).rename_axis("slide_id").reset_index().to_csv(path, index=False)


def compare(runs: dict[str, Path], candidate: str = f"{STACK} stack") -> pd.DataFrame:
    """``quality_table`` of ``candidate`` from each run's ``scores.csv`` (rows named by run) beside
    the seed-style model, plus each phase's paired DeLong p against the first run's ``candidate``
    (the previous default) and the number of distinct scores on phase 2 (ties cost AUC)."""
    scores: dict[str, pd.DataFrame] = {}
    truth: dict[str, pd.DataFrame] = {}
    for name, folder in runs.items():
        path = folder / SCORES_FILE
        if not path.is_file():
            raise SystemExit(f"bench_quality: {path}: no {SCORES_FILE} (run the bench with --out {folder} first)")
        table = pd.read_csv(path, index_col="slide_id")
        for phase in PHASES:
            rows = table[table["phase"] == phase]
            if phase not in truth:
                truth[phase] = rows[["label", "size_class"]]
                scores[phase] = rows[[SEED_STYLE]].copy()
            elif not rows.index.equals(truth[phase].index):
                raise SystemExit(f"bench_quality: {path}: other {phase} slides than {next(iter(runs.values()))}")
            scores[phase][name] = rows[candidate]
    table = quality_table(scores, truth)
    reference = next(iter(runs))
    for phase in PHASES:
        y = truth[phase]["label"].to_numpy(int)
        ref = scores[phase][reference].to_numpy(float)
        table[f"{phase}_p_vs_{reference}"] = [
            np.nan if name in (SEED_STYLE, reference) else delong_test(y, scores[phase][name].to_numpy(float), ref).p_value
            for name in table["candidate"]]
    table["phase2_distinct"] = [scores["phase2"][name].nunique() for name in table["candidate"]]
    table.attrs["counts"] = {p: {c: int((truth[p]["size_class"] == c).sum()) for c in DEPOSIT_CLASSES} for p in PHASES}
    return table


def printable(table: pd.DataFrame) -> pd.DataFrame:
    """The table as printed: AUC [CI] cells, rounded rates."""
    out = pd.DataFrame({"candidate": table["candidate"]})
    for phase in PHASES:
        out[f"{phase} AUC [95% CI]"] = [f"{a:.3f} [{lo:.2f}, {hi:.2f}]" for a, lo, hi in
                                        table[[f"{phase}_auc", f"{phase}_ci_low", f"{phase}_ci_high"]].to_numpy()]
    out["drop"] = table["drop"].round(3)
    for phase in PHASES:
        out[f"p vs seed {phase[-1]}"] = table[f"{phase}_p_vs_seed"].map(lambda p: "-" if np.isnan(p) else f"{p:.3g}")
    out["threshold"] = table["threshold"].round(3)
    for phase in PHASES:
        sens = [f"{phase}_sens_{c}" for c in DEPOSIT_CLASSES]
        out[f"sens {'/'.join(DEPOSIT_CLASSES)} {phase[-1]}"] = [
            "/".join("-" if np.isnan(v) else f"{v:.2f}" for v in values) for values in table[sens].to_numpy()]
        out[f"spec {phase[-1]}"] = table[f"{phase}_specificity"].round(2)
    return out


def plot(table: pd.DataFrame, counts: dict[str, dict[str, int]], path: Path) -> None:
    """AUC with CI bars per candidate and phase; sensitivity by deposit class per phase."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = table["candidate"].tolist()
    x = np.arange(len(names))
    fig, axes = plt.subplots(1, 3, figsize=(16, 5), sharex=True)
    try:
        for k, phase in enumerate(PHASES):
            auc = table[f"{phase}_auc"].to_numpy()
            err = [auc - table[f"{phase}_ci_low"].to_numpy(), table[f"{phase}_ci_high"].to_numpy() - auc]
            axes[0].errorbar(x + (k - 0.5) * 0.25, auc, yerr=err, fmt="o", capsize=3, label=phase)
        axes[0].axhline(0.5, ls="--", lw=0.8, color="grey")
        axes[0].set(title="AUC with 95% DeLong CI", ylim=(0, 1.02), ylabel="AUC")
        axes[0].legend(loc="lower left")
        for ax, phase in zip(axes[1:], PHASES):
            for k, size in enumerate(DEPOSIT_CLASSES):
                ax.bar(x + (k - 1) * 0.27, table[f"{phase}_sens_{size}"].fillna(0).to_numpy(), width=0.27,
                       label=f"{size} (n={counts[phase][size]})")
            ax.set(title=f"{phase}: sensitivity at the phase-1 Youden threshold", ylim=(0, 1.25))
            ax.legend(loc="upper center", ncol=3, fontsize="small")  # above the bars, never over them
        for ax in axes:
            ax.set_xticks(x, names, rotation=30, ha="right")
            ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)


def fine_model(config: SubmissionConfig, mpp: float) -> ModelSpec:
    """The CNN at a finer scale: ``config``'s first CNN (the stacked recipe's simple) at ``mpp``
    microns per pixel, named ``fine``, as ``demo-stacked`` ships it at 1 um/px (``bench_scale.py``
    trains it alone)."""
    return config.models[0].model_copy(update={"mpp": mpp, "name": FINE})


def stacked_models(config: SubmissionConfig, names: tuple[str, ...] | None = None,
                   fine_mpp: float | None = None) -> SubmissionConfig:
    """``config`` with only its CNNs named in ``names`` (all when None), and its ``fine`` CNN at
    ``fine_mpp`` (a ``fine_model`` added when there is none); ValueError on a name it lacks."""
    known = [m.name for m in config.models]
    unknown = sorted(set(names or ()) - set(known))
    if unknown:
        raise ValueError(f"{config.name} has no model {', '.join(unknown)}; it has {', '.join(known)}")
    models = [m for m in config.models if names is None or m.name in names]
    if fine_mpp is not None:
        models = [m.model_copy(update={"mpp": fine_mpp}) if m.name == FINE else m for m in models]
        if all(m.name != FINE for m in models):
            models.append(fine_model(config, fine_mpp))
    return config.model_copy(update={"models": models})


def run(settings: Settings, data_root: Path, out: Path, models_from: Path | None = None) -> pd.DataFrame:
    """The whole bench; returns the table written to ``out/quality.csv``. With ``models_from`` (an
    earlier ``--out``), its trained CNN folds are copied in and resumed rather than retrained:
    for a recipe that changes only inference (``tta``); heatmaps, features and ensembles are
    always made afresh."""
    import tensorflow as tf

    from helpkit.ensemble import fit_ensemble

    tf.config.experimental.enable_op_determinism()  # same --seed, same models
    clock = Clock()
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    s = settings
    with clock.stage("synth"):
        key = f"train{s.train}_test{s.test}_size{s.size}_seed{s.seed}"
        data = {"phase1": competition(data_root / f"phase1_{key}", n_train=s.train, n_test=s.test, size=s.size,
                                      seed=s.seed, phase1=PHASES["phase1"], phase2=None),
                # Phase 2 only lends its test set (make_competition needs two training slides).
                "phase2": competition(data_root / f"phase2_{key}", n_train=2, n_test=s.test, size=s.size,
                                      seed=s.seed + 1, phase1=PHASES["phase1"], phase2=PHASES["phase2"])}
    stacked = stacked_models(fixed_budget(load_submission(s.stacked), s, s.recipe()), s.models, s.fine_mpp)
    configs = {SEED_STYLE: fixed_budget(load_submission(SEED_STYLE), s), "stacked": stacked}
    models = {name: out / "models" / name for name in configs}
    if models_from is not None:  # trained folds are resumed (train_run refuses another recipe's)
        shutil.copytree(models_from / "models", out / "models",
                        ignore=shutil.ignore_patterns("heatmaps", "features_oof.parquet", "ensemble*", "cache"))
    train_dir = platform_folders(data["phase1"])[0]
    for name, config in configs.items():
        with clock.stage(f"train {name}"):
            pipeline.train(train_dir, models[name], config)
    with clock.stage("fit blends"):
        oof = pd.read_parquet(models["stacked"] / "features_oof.parquet")
        blends = {m: fit_ensemble(oof, m, out / "models" / f"blend-{m}", seed=s.seed) for m in BLENDS}
    scores, truth = {}, {}
    for phase, root in data.items():
        with clock.stage(f"infer {phase}"):
            scores[phase] = phase_scores(root, models, configs, blends, out / "inference" / phase)
        labels = read_labels(labels_file(root))
        truth[phase] = pd.DataFrame({"label": labels, "size_class": read_size_classes(labels_file(root))})
    with clock.stage("score"):
        table = quality_table(scores, truth)
        table.to_csv(out / "quality.csv", index=False)
        write_scores(scores, truth, out / SCORES_FILE)
        counts = {p: {c: int((truth[p]["size_class"] == c).sum()) for c in DEPOSIT_CLASSES} for p in PHASES}
        plot(table, counts, out / "quality.png")
    presets = ", ".join(f"{p}: {name}" for p, name in PHASES.items())
    print(f"\n{s.train} training slides; {s.test} test slides per phase ({presets}), {s.size} px, seed {s.seed}; "
          f"{s.folds} folds x {s.epochs} epochs, {s.patches} patches per slide; stacked CNNs' recipe: "
          + ", ".join(f"{k} {getattr(configs['stacked'].models[0], k)}" for k in RECIPE) + "; CNNs: "
          + ", ".join(f"{m.name} ({m.architecture}, {m.mpp:g} um/px)" for m in configs["stacked"].models))
    for phase in PHASES:
        n = truth[phase]["label"]
        print(f"{phase}: {int(n.sum())} positive ({', '.join(f'{c} {k}' for c, k in counts[phase].items())}), "
              f"{int((n == 0).sum())} negative")
    print("threshold: each candidate's Youden threshold on phase 1, applied unchanged to phase 2; "
          "sens: sensitivity on positive slides by largest deposit; spec: specificity")
    print(printable(table).to_string(index=False))
    print(f"wrote {out / 'quality.csv'} and {out / 'quality.png'}")
    print(f"wall time {clock.total():.0f} s: " + ", ".join(f"{k} {v:.0f} s" for k, v in clock.stages.items()))
    return table


def print_comparison(table: pd.DataFrame, out: Path) -> None:
    """Print the ``compare`` table and write ``evidence.csv`` and ``evidence.png`` to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "evidence.csv", index=False)
    reference = next(c for c in table["candidate"] if c != SEED_STYLE)
    shown = printable(table)
    for phase in PHASES:
        shown[f"p vs {reference} {phase[-1]}"] = table[f"{phase}_p_vs_{reference}"].map(
            lambda p: "-" if np.isnan(p) else f"{p:.3g}")
    shown["distinct 2"] = table["phase2_distinct"]
    plot(table, table.attrs["counts"], out / "evidence.png")
    print(shown.to_string(index=False))
    print(f"wrote {out / 'evidence.csv'} and {out / 'evidence.png'}")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv and os.environ.get("MAKELEVEL"):
        # `make bench` runs every bench with no arguments: this one takes an hour or more.
        print("bench_quality: skipped under make (an hour or more on 2 cores): run "
              "`.venv/bin/python bench/bench_quality.py`, or with --quick for a smoke test")
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="Tiny sizes and budgets: a smoke test.")
    for field, help_ in (("train", "Training slides."), ("test", "Test slides per phase, about half positive."),
                         ("size", "Level-0 side of each slide (px)."), ("seed", "Seed of data and training."),
                         ("epochs", "Epochs per fold, every model."), ("folds", "Folds by slide, every model."),
                         ("patches", "Most patches per training slide.")):
        parser.add_argument(f"--{field}", type=int, help=f"{help_} Default: {asdict(FULL)[field]} "
                            f"({asdict(QUICK)[field]} with --quick).")
    parser.add_argument("--augment", choices=list(AUGMENTATIONS),
                        help="Augmentation of the stacked submission's CNNs (seed-style keeps its own). "
                        "Default: each model's setting in its submission.toml.")
    parser.add_argument("--normalise", choices=list(NORMALISERS),
                        help="Stain normalisation of the stacked submission's CNNs. Default: each model's own.")
    parser.add_argument("--tta", choices=list(TTAS),
                        help="Test-time augmentation of the stacked CNNs' heatmaps. Default: each model's own.")
    parser.add_argument("--hard-negatives", type=float, metavar="SHARE",
                        help="Hard-negative mining round for the stacked CNNs at this share (0-0.5). "
                        "Default: each model's own.")
    parser.add_argument("--tumour-threshold", type=float, metavar="SHARE",
                        help="Tumour share from which a training cell of the stacked CNNs is tumour; lower it to "
                        "learn isolated tumour cells. Default: each model's own (demo-stacked: 0.1).")
    parser.add_argument("--models", nargs="+", metavar="NAME",
                        help="Keep only these of the stacked submission's CNNs (demo-stacked: simple unet inception "
                        "fine). Default: all.")
    parser.add_argument("--fine-mpp", type=float, metavar="MPP",
                        help="Microns per pixel of the stacked fine CNN (demo-stacked's: 1); a submission without one "
                        "gets its first CNN at MPP, named fine. Default: as shipped.")
    parser.add_argument("--models-from", type=Path, metavar="OUT",
                        help="Copy the trained CNN folds of an earlier --out and resume them instead of "
                        "training anew (a recipe that differs in training is refused): for --tta.")
    parser.add_argument("--compare", nargs="+", metavar="NAME=OUT",
                        help="Train nothing: the lgbm stack of each earlier --out side by side with the seed-style "
                        "model, with DeLong p against the first (the previous default); writes evidence.csv and "
                        "evidence.png to --out (not emptied).")
    parser.add_argument("--data", type=Path, default=Path("build/bench-quality/data"),
                        help="Competitions, made once per set of parameters and reused.")
    parser.add_argument("--out", type=Path, default=Path("build/bench-quality/out"), help="Emptied, then outputs.")
    parser.add_argument("--workers", type=int, help="Per-slide work on a local Dask cluster of this many workers.")
    parser.add_argument("--scheduler", help="Per-slide work on this Dask scheduler (address).")
    args = parser.parse_args(argv)
    if args.compare:
        runs = dict(item.partition("=")[::2] for item in args.compare)
        if any(not name or not folder for name, folder in runs.items()):
            parser.error("--compare takes NAME=OUT items")
        print_comparison(compare({name: Path(folder) for name, folder in runs.items()}), args.out)
        return
    base = QUICK if args.quick else FULL
    settings = replace(base, **{k: v for k, v in vars(args).items() if k in asdict(base) and v is not None})
    if args.models:
        settings = replace(settings, models=tuple(args.models))
        try:
            stacked_models(load_submission(settings.stacked), settings.models)
        except ValueError as err:
            parser.error(str(err))
    if args.data.resolve().is_relative_to(args.out.resolve()):
        parser.error("--data must not lie inside --out (--out is emptied)")
    for env, value in (("HELPKIT_WORKERS", args.workers), ("HELPKIT_SCHEDULER", args.scheduler)):
        if value is not None:
            os.environ[env] = str(value)
    if args.models_from is not None and args.models_from.resolve() == args.out.resolve():
        parser.error("--models-from must not be --out (--out is emptied)")
    run(settings, args.data, args.out, args.models_from)


if __name__ == "__main__":
    main()
