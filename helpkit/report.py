"""One self-contained HTML page that judges a whole run: scores, ROC curves, heatmaps, verdict.

It reads any of three folders (``load_view``): what ``helpkit demo``
leaves (``demo.json`` says where each piece is), a ``helpkit submission validate --work-dir``
folder (``model/``, ``output/output.csv``, the JSON report), or a model dir plus test outputs
and labels. Every image is embedded as a data URI, so the page can be mailed or archived alone.

Sections: provenance (helpkit version, git commit, image and its digest), the verdict and
each stage's time and memory as a share of its limit, per test set a per-slide table (label,
each model's score, the final score, its rank, correct at the Youden threshold), a ties
warning, score distributions per class, ROC curves, the misclassified slides' heatmaps first
(with colour bars), the same for the training slides out of fold, LightGBM feature
importance, per-fold training curves from each run's ``log.csv``, the candidate ensembles,
log tails and the configuration.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from helpkit.errors import HelpkitError
from helpkit.io import write_text

RUN_FILE = "demo.json"
HEATMAP_SLIDES = 4
"""Test slides shown with their heatmaps: positives first, one negative for contrast."""

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;line-height:1.4}
h1{margin-bottom:0}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}
.pass{color:#0a0;font-weight:bold}.fail{color:#c00;font-weight:bold}
img{max-width:100%;border:1px solid #eee}pre{background:#f7f7f7;padding:.6em;overflow-x:auto;font-size:85%}
.muted{color:#777}.warn{background:#fff4e0;border-left:4px solid #e90;padding:.4em .8em}
table.slides tr.wrong td{background:#fde8e8}table.kv th{text-align:left}
.row{display:flex;flex-wrap:wrap;gap:1em;align-items:flex-start}
.bar{display:inline-block;width:90px;height:.7em;background:#eee;margin-right:.4em;vertical-align:middle}
.bar span{display:block;height:100%}
"""


def _png(fig: Any) -> str:
    """A matplotlib figure as an <img> with a base64 data URI (the figure is closed)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="figure" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def _png_file(path: Path) -> str:
    if not path.is_file():
        return f'<p class="muted">missing: {html.escape(path.name)}</p>'
    return f'<img alt="{html.escape(path.name)}" src="data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}">'


def _table(frame: pd.DataFrame, floats: str = "{:.3f}") -> str:
    return frame.to_html(index=False, escape=True, border=0, na_rep="–",
                         float_format=lambda v: floats.format(v))


def load_run(run_dir: str | Path) -> dict[str, Any]:
    """``demo.json`` of a run folder, with paths made absolute."""
    run_dir = Path(run_dir)
    path = run_dir / RUN_FILE
    if not path.is_file():
        raise HelpkitError(f"not a helpkit run folder: no {RUN_FILE} (make one with `helpkit demo`)", run_dir)
    try:
        return json.loads(path.read_text())
    except ValueError as err:
        raise HelpkitError(f"unreadable ({err})", path) from err


def _roc_figure(curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_auc_score, roc_curve

    fig, ax = plt.subplots(figsize=(5, 5))
    for name, (y, s) in curves.items():
        fpr, tpr, _ = roc_curve(y, s)
        ax.plot(fpr, tpr, lw=1.5, label=f"{name}: AUC {roc_auc_score(y, s):.3f}")
    ax.plot([0, 1], [0, 1], ls="--", lw=0.8, color="grey")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=title, xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(loc="lower right", fontsize="small")
    return _png(fig)


def _shift_figure(scores: dict[str, dict[str, dict[str, float]]]) -> str:
    """AUC with 95% CI per submission, phase 1 beside phase 2: the drop under the shift."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phases = list(scores)
    names = sorted({n for p in phases for n in scores[p]})
    fig, ax = plt.subplots(figsize=(6, 3.6))
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        xs, ys, lo, hi = [], [], [], []
        for j, phase in enumerate(phases):
            r = scores[phase].get(name)
            if r is None:
                continue
            xs.append(j + (i - (len(names) - 1) / 2) * width)
            ys.append(r["auc"])
            lo.append(r["auc"] - r["ci_low"])
            hi.append(r["ci_high"] - r["auc"])
        ax.bar(xs, ys, width=width * 0.9, yerr=[lo, hi], capsize=4, label=name)
    ax.set_xticks(range(len(phases)), phases)
    ax.set(ylabel="AUC (95% CI)", ylim=(0, 1.05), title="Test AUC: phase 1 vs phase 2 (another lab, scanner, case mix)")
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.legend(fontsize="small", loc="lower left")
    return _png(fig)


@dataclass
class SlideSet:
    """One set of slides the report judges: labels, each model's score, the final score, where the heatmaps are."""

    name: str
    final: pd.Series
    """The submission's score per slide (output.csv, or the ensemble's out-of-fold score)."""
    final_name: str
    labels: pd.Series | None = None
    model_scores: pd.DataFrame | None = None
    """Each model's slide score (``<model>__max``), one column per model."""
    heatmap_dir: Path | None = None
    slide_paths: dict[str, str] = field(default_factory=dict)
    truth: dict[str, str] = field(default_factory=dict)
    other: dict[str, pd.Series] = field(default_factory=dict)
    """Other submissions scored on the same slides (the demo's simple max-probability)."""
    note: str = ""


@dataclass
class RunView:
    """Everything the report shows, whichever folder it came from."""

    title: str
    source: Path
    kind: str
    model_dir: Path | None = None
    models: list[str] = field(default_factory=list)
    validation: dict[str, Any] = field(default_factory=dict)
    sets: list[SlideSet] = field(default_factory=list)
    config_text: str = ""
    demo: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def _colorbar(fig: Any, shown: Any, ax: Any) -> None:
    if shown is not None:
        fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.02, label="tumour probability")


def _heatmap_figure(slides: list[dict[str, Any]], models: list[str], heatmap_dir: Path) -> str:
    """Per slide: its thumbnail with the true tumour outline, then each model's heatmap over it, with colour bars.

    A slide whose file is not at hand is drawn as its heatmap alone (still with a colour bar).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from helpkit.heatmap.overlay import draw_heatmap, thumbnail
    from helpkit.heatmap.store import heatmap_path, read_heatmap
    from helpkit.slide import SlideReader

    fig, axes = plt.subplots(len(slides), len(models) + 1, figsize=(3.6 * (len(models) + 1), 3.3 * len(slides)),
                             squeeze=False)
    for row, slide in zip(axes, slides):
        thumb, downsample, dimensions, problem = None, 1.0, None, ""
        if slide.get("path"):
            try:
                with SlideReader(slide["path"]) as reader:
                    thumb, downsample = thumbnail(reader, 512)
                    dimensions = reader.dimensions
            except HelpkitError as err:
                problem = err.message
        outline = None
        if thumb is not None and slide.get("truth") and Path(slide["truth"]).is_file():
            from helpkit.slide.annotation import read_annotation  # PNG mask, ASAP XML or GeoJSON

            try:
                outline = read_annotation(slide["truth"], dimensions).tumour(shape=thumb.shape[:2])
            except HelpkitError:
                outline = None
        label = {1: "tumour", 0: "normal"}.get(slide.get("label"), "label unknown")
        verdict = "" if slide.get("correct") is None else (" · correct" if slide["correct"] else " · WRONG")
        title = f"{slide['slide_id']} ({label}, p={slide['prob']:.2f}{verdict})"
        for ax, model in zip(row, [None, *models]):
            if model is None:
                if thumb is not None:
                    ax.imshow(thumb)
                else:
                    ax.text(0.5, 0.5, problem or "slide file not at hand", ha="center", va="center", fontsize=8,
                            wrap=True, transform=ax.transAxes)
                ax.set_title(title, fontsize=8, color="#c00" if slide.get("correct") is False else "black")
            else:
                path = heatmap_path(heatmap_dir, model, slide["slide_id"])
                heatmap = read_heatmap(path) if path.is_file() else None
                if thumb is not None:
                    ax.imshow(thumb)
                    shown = draw_heatmap(ax, heatmap, downsample) if heatmap is not None else None
                elif heatmap is not None and heatmap.prob.size:
                    shown = ax.imshow(np.ma.masked_invalid(heatmap.prob), cmap="jet", vmin=0, vmax=1,
                                      interpolation="nearest")
                else:
                    shown = None
                _colorbar(fig, shown, ax)
                ax.set_title(model if heatmap is not None else f"{model}: no heatmap", fontsize=9)
            if thumb is not None:
                if outline is not None and outline.any():
                    ax.contour(outline, levels=[0.5], colors="lime", linewidths=1.0)
                ax.set_xlim(0, thumb.shape[1])
                ax.set_ylim(thumb.shape[0], 0)
            ax.axis("off")
    fig.suptitle("Heatmaps (jet: tumour probability, colour bar beside each) · green: true tumour outline",
                 fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    return _png(fig)


# ---- loading any run folder ---------------------------------------------------------------

def _read_scores(path: Path) -> pd.Series | None:
    from helpkit.scoring import read_predictions

    if not path.is_file():
        return None
    return read_predictions(path).scores.astype(float)


def _labels(path: Path | None) -> pd.Series | None:
    from helpkit.data import read_labels

    if path is None or not Path(path).is_file():
        return None
    return read_labels(path).astype(float)


def _slide_paths(folder: Path | None, split: str) -> dict[str, str]:
    from helpkit.data import discover

    if folder is None or not folder.is_dir():
        return {}
    try:
        records = discover(folder, split)
    except HelpkitError:
        return {}
    return {str(r.slide_id): str(r.path) for r in records.itertuples()}


def _train_truth(folder: Path | None) -> dict[str, str]:
    from helpkit.data import discover

    if folder is None or not folder.is_dir():
        return {}
    try:
        records = discover(folder, "train")
    except HelpkitError:
        return {}
    return {str(r.slide_id): str(r.mask_path) for r in records.itertuples() if r.mask_path}


def _test_truth(root: Path | None, ids: list[str]) -> dict[str, str]:
    """The held-aside tumour outlines of test slides, where ``helpkit synth`` left them."""
    if root is None:
        return {}
    folders = [root / "truth" / "mask", root / "truth", root / "testing" / "lesion_annotations"]
    found = {}
    for slide_id in ids:
        for folder in folders:
            hit = next((folder / f"{slide_id}{s}" for s in (".png", ".xml", ".geojson") if (folder / f"{slide_id}{s}").is_file()), None)
            if hit is not None:
                found[slide_id] = str(hit)
                break
    return found


def _pipeline_config(model_dir: Path | None) -> tuple[Any, str]:
    """(SubmissionConfig or None, its TOML-ish text) from the model dir's pipeline.json."""
    from helpkit.pipeline import PIPELINE_FILE

    if model_dir is None or not (model_dir / PIPELINE_FILE).is_file():
        return None, ""
    meta = json.loads((model_dir / PIPELINE_FILE).read_text())
    try:
        from helpkit.config import SubmissionConfig

        config = SubmissionConfig.model_validate(meta.get("config", {}))
    except Exception:  # noqa: BLE001  a config of another helpkit: still show its text
        config = None
    return config, json.dumps(meta.get("config", {}), indent=2)


def _test_features(test_dir: Path | None, model_dir: Path | None, config: Any, scratch: Path, ids: list[str],
                   compute: bool) -> tuple[pd.DataFrame | None, Path | None, str]:
    """The test slides' features and heatmap folder: found in ``scratch`` (a previous report), else made
    there on this machine from the model dir when ``compute`` (TensorFlow), else none (and why)."""
    from helpkit.pipeline import inference_dir, inference_features

    if not ids:
        return None, None, ""
    work = inference_dir(scratch, ids)
    if (work / "features.parquet").is_file():
        return pd.read_parquet(work / "features.parquet").set_index("slide_id"), work / "heatmaps", ""
    if config is None or not getattr(config, "models", None):
        return None, None, "no per-model scores: the run has no helpkit models"
    if test_dir is None or not test_dir.is_dir():
        return None, None, "no per-model scores or heatmaps: the test slides are not at hand (--data)"
    if not compute:
        return None, None, "no per-model scores or heatmaps (--no-heatmaps)"
    table, work = inference_features(test_dir, model_dir, config, scratch)
    return table, work / "heatmaps", "per-model scores and heatmaps made on this machine from the trained model"


def _model_columns(features: pd.DataFrame | None, models: list[str]) -> pd.DataFrame | None:
    if features is None:
        return None
    columns = {m: features[f"{m}__max"] for m in models if f"{m}__max" in features.columns}
    return pd.DataFrame(columns) if columns else None


def _oof_set(model_dir: Path, models: list[str], train_dir: Path | None) -> SlideSet | None:
    """The training slides out of fold: each model's OOF max probability and the ensemble's OOF score."""
    features_path = model_dir / "features_oof.parquet"
    oof_path = model_dir / "ensemble_report" / "oof_scores.csv"
    meta_path = model_dir / "ensemble" / "ensemble.json"
    if not (features_path.is_file() and oof_path.is_file()):
        return None
    features = pd.read_parquet(features_path).set_index("slide_id")
    oof = pd.read_csv(oof_path, dtype={"slide_id": str}).set_index("slide_id")
    method = json.loads(meta_path.read_text()).get("method") if meta_path.is_file() else None
    column = method
    if method == "single" and meta_path.is_file():
        cols = json.loads(meta_path.read_text()).get("columns", [])
        column = f"single:{cols[0].split('__')[0]}" if cols else None
    if column not in oof.columns:
        column = next((c for c in oof.columns if c != "label"), None)
    if column is None:
        return None
    heatmaps = model_dir / "heatmaps"
    return SlideSet(
        name="training slides (out of fold)", final=oof[column], final_name=f"{column} (out of fold)",
        labels=oof["label"].astype(float), model_scores=_model_columns(features.reindex(oof.index), models),
        heatmap_dir=heatmaps if heatmaps.is_dir() else None, slide_paths=_slide_paths(train_dir, "train"),
        truth=_train_truth(train_dir),
        note="Each slide scored by fold models that never saw it; the ensemble's score from the repeated "
             "stratified K-fold of the candidate table.")


def _find_validation(work_dir: Path) -> dict[str, Any]:
    """The validator's JSON report for ``work_dir``: inside it, or beside it naming it."""
    for candidate in [*sorted(work_dir.glob("*.json")), *sorted(work_dir.parent.glob("*.json"))]:
        try:
            data = json.loads(candidate.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict) or "verdict" not in data:
            continue
        named = data.get("work_dir")
        if candidate.parent == work_dir or (named and Path(named).resolve() == work_dir.resolve()):
            return data
    return {}


def load_view(run_dir: str | Path, validation: Path | None = None, data: Path | None = None,
              output_csv: Path | None = None, labels: Path | None = None, heatmaps: bool = True) -> RunView:
    """What to report from a demo folder, a ``validate --work-dir`` folder, or a model dir.

    ``validation``: the validator's JSON report (found in or beside a work dir when not given);
    ``data``: the competition (its test slides and labels; default: the one the report names);
    ``output_csv`` and ``labels``: a test output and its labels, for a model dir; ``heatmaps``:
    make the test slides' heatmaps on this machine when no earlier report left them.
    """
    from helpkit.pipeline import PIPELINE_FILE

    run_dir = Path(run_dir)
    if (run_dir / RUN_FILE).is_file():
        return _demo_view(run_dir)
    if (run_dir / "model" / PIPELINE_FILE).is_file() or (run_dir / "output" / "output.csv").is_file():
        return _work_dir_view(run_dir, validation, data, labels, heatmaps)
    if (run_dir / PIPELINE_FILE).is_file():
        return _model_dir_view(run_dir, validation, data, output_csv, labels, heatmaps)
    raise HelpkitError(f"not a run folder: no {RUN_FILE} (helpkit demo), no model/{PIPELINE_FILE} or "
                       f"output/output.csv (helpkit submission validate --work-dir), no {PIPELINE_FILE} (a model dir)",
                       run_dir)


def _folders(data: Path | None) -> tuple[Path | None, Path | None, Path | None]:
    """(train dir, test dir, labels file) of a competition root, each None when absent."""
    from helpkit.layouts import labels_file, platform_folders

    if data is None or not Path(data).is_dir():
        return None, None, None
    train, test = platform_folders(data)
    found = labels_file(data)
    return (train if train.is_dir() else None, test if test.is_dir() else None, found if found.is_file() else None)


def _test_set(name: str, output: Path, final_name: str, data: Path | None, labels_path: Path | None,
              model_dir: Path | None, config: Any, models: list[str], scratch: Path, heatmaps: bool) -> SlideSet | None:
    final = _read_scores(output)
    if final is None:
        return None
    _, test_dir, found_labels = _folders(data)
    labels = _labels(labels_path or found_labels)
    ids = list(final.index)
    features, heatmap_dir, note = (None, None, "")
    if model_dir is not None:
        try:
            features, heatmap_dir, note = _test_features(test_dir, model_dir, config, scratch, ids, heatmaps)
        except HelpkitError as err:
            note = f"no per-model scores or heatmaps: {err}"
    return SlideSet(name=name, final=final, final_name=final_name, labels=labels,
                    model_scores=_model_columns(features, models), heatmap_dir=heatmap_dir,
                    slide_paths=_slide_paths(test_dir, "test"), truth=_test_truth(Path(data) if data else None, ids),
                    note=note)


def _work_dir_view(work: Path, validation: Path | None, data: Path | None, labels: Path | None,
                   heatmaps: bool) -> RunView:
    report = json.loads(Path(validation).read_text()) if validation is not None else _find_validation(work)
    data = data or (Path(report["data"]) if report.get("data") else None)
    model_dir = work / "model"
    config, config_text = _pipeline_config(model_dir)
    models = [m.name for m in config.models] if config is not None else []
    name = config.name if config is not None else Path(report.get("submission", work.name)).name
    view = RunView(title=f"helpkit validation: {name}", source=work, kind="validate --work-dir", model_dir=model_dir,
                   models=models, validation=report, config_text=config_text)
    train_dir = _folders(data)[0]
    scratch = work / "report-inference"
    main = _test_set("test set", work / "output" / "output.csv", f"{name} (output.csv)", data, labels, model_dir,
                     config, models, scratch, heatmaps)
    if main is not None:
        view.sets.append(main)
    for extra, info in (report.get("extra_tests") or {}).items():
        labels_path = Path(info["score"]["labels"]) if (info or {}).get("score") else None
        extra_root = labels_path.parent if labels_path is not None else None
        found = _test_set(f"test set ({extra})", work / f"output-{extra}" / "output.csv", f"{name} (output.csv)",
                          extra_root, labels_path, model_dir, config, models, scratch, heatmaps)
        if found is not None:
            view.sets.append(found)
    if model_dir.is_dir():
        oof = _oof_set(model_dir, models, train_dir)
        if oof is not None:
            view.sets.append(oof)
    if not view.sets:
        view.notes.append("no output.csv and no out-of-fold scores: the stages did not get that far")
    return view


def _model_dir_view(model_dir: Path, validation: Path | None, data: Path | None, output_csv: Path | None,
                    labels: Path | None, heatmaps: bool) -> RunView:
    config, config_text = _pipeline_config(model_dir)
    models = [m.name for m in config.models] if config is not None else []
    name = config.name if config is not None else model_dir.name
    report = json.loads(Path(validation).read_text()) if validation is not None else {}
    view = RunView(title=f"helpkit model: {name}", source=model_dir, kind="model dir", model_dir=model_dir,
                   models=models, validation=report, config_text=config_text)
    if output_csv is not None:
        found = _test_set("test set", output_csv, f"{name} ({output_csv.name})", data, labels, model_dir, config,
                          models, model_dir.parent / f"{model_dir.name}-report-inference", heatmaps)
        if found is not None:
            view.sets.append(found)
    oof = _oof_set(model_dir, models, _folders(data)[0])
    if oof is not None:
        view.sets.append(oof)
    return view


def _demo_view(run_dir: Path) -> RunView:
    run = load_run(run_dir)
    validation: dict[str, Any] = {}
    if run.get("validation") and (run_dir / run["validation"]).is_file():
        validation = json.loads((run_dir / run["validation"]).read_text())
    model_dir = run_dir / Path(run["ensemble_report"]).parent
    name = run["submission"]["name"]
    view = RunView(title=f"helpkit run: {name}", source=run_dir, kind="demo", model_dir=model_dir,
                   models=run.get("models", []), validation=validation, config_text=run["submission"].get("toml", ""),
                   demo=run)
    for phase, info in run.get("test_sets", {}).items():
        predictions = {n: _read_scores(run_dir / rel) for n, rel in info["predictions"].items()}
        final = predictions.get(name)
        if final is None:
            continue
        features = None
        heatmap_dir = run_dir / info["heatmaps"] if info.get("heatmaps") else None
        if heatmap_dir is not None and (heatmap_dir.parent / "features.parquet").is_file():
            features = pd.read_parquet(heatmap_dir.parent / "features.parquet").set_index("slide_id")
        test_dir = run_dir / info["test_dir"]
        view.sets.append(SlideSet(
            name=f"{phase} test set", final=final, final_name=name, labels=_labels(run_dir / info["labels"]),
            model_scores=_model_columns(features, view.models), heatmap_dir=heatmap_dir,
            slide_paths=_slide_paths(test_dir, "test"),
            truth={s: str(p) for s in final.index for p in [_truth_file(run_dir / info["truth_masks"], s)] if p},
            other={n: p for n, p in predictions.items() if n != name and p is not None}))
    oof = _oof_set(model_dir, view.models, None)
    if oof is not None:
        view.sets.append(oof)
    return view


def _truth_file(folder: Path, slide_id: str) -> Path | None:
    return next((folder / f"{slide_id}{s}" for s in (".png", ".xml", ".geojson") if (folder / f"{slide_id}{s}").is_file()), None)


# ---- the per-slide analysis -------------------------------------------------------------

TIES_FRACTION = 0.5
"""Warn when the final score has fewer distinct values than this share of the slides (or at most 3)."""
MISCLASSIFIED_SHOWN = 6


def youden_threshold(labels: np.ndarray, scores: np.ndarray) -> float:
    """The score cut maximising sensitivity + specificity - 1 (slides at or above it called positive)."""
    from sklearn.metrics import roc_curve

    fpr, tpr, thresholds = roc_curve(labels, scores)
    best = int(np.argmax(tpr - fpr))
    return float(min(thresholds[best], 1.0)) if np.isfinite(thresholds[best]) else float(np.max(scores))


def slide_table(slides: SlideSet) -> tuple[pd.DataFrame, float | None]:
    """One row per slide: label, each model's score, final score, rank (1 = highest), correct at the Youden cut."""
    table = pd.DataFrame(index=pd.Index(slides.final.index.astype(str), name="slide_id"))
    table["label"] = slides.labels.reindex(table.index) if slides.labels is not None else np.nan
    if slides.model_scores is not None:
        for model in slides.model_scores.columns:
            table[model] = slides.model_scores[model].reindex(table.index).to_numpy(dtype=float)
    table["final"] = slides.final.reindex(table.index).to_numpy(dtype=float)
    table["rank"] = table["final"].rank(ascending=False, method="min").astype("Int64")
    known = table["label"].isin([0, 1]) & table["final"].notna()
    threshold = None
    table["correct"] = pd.Series(pd.NA, index=table.index, dtype="boolean")
    if known.any() and table.loc[known, "label"].nunique() == 2:
        threshold = youden_threshold(table.loc[known, "label"].to_numpy(int), table.loc[known, "final"].to_numpy())
        called = table["final"] >= threshold
        table.loc[known, "correct"] = (called[known] == table.loc[known, "label"].astype(bool)).to_numpy()
    return table.sort_values(["rank"]), threshold


def ties_warning(scores: pd.Series) -> str:
    """A warning when the final score has few distinct values ('' otherwise)."""
    values = scores.dropna().round(12)
    n, distinct = len(values), values.nunique()
    if n < 4 or (distinct > 3 and distinct >= TIES_FRACTION * n):
        return ""
    largest = int(values.value_counts().iloc[0])
    return (f"The final score takes only {distinct} distinct value(s) over {n} slides (the most common is shared by "
            f"{largest}): the AUC counts each tied positive-negative pair as half, and the order among tied slides "
            "is arbitrary. A stacker with few trees, a high min_child_samples or a coarse feature gives this; "
            "a blend of scores ties less.")


def _distribution_figure(table: pd.DataFrame, columns: list[str]) -> str:
    """Per score column: histograms of the positive and the negative slides on one axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(columns), figsize=(3.4 * len(columns), 2.8), squeeze=False)
    bins = np.linspace(0, 1, 21)
    for ax, column in zip(axes[0], columns):
        for label, colour, name in ((0, "tab:blue", "normal"), (1, "tab:red", "tumour")):
            values = table.loc[table["label"] == label, column].dropna().clip(0, 1)
            ax.hist(values, bins=bins, alpha=0.55, color=colour, label=f"{name} ({len(values)})")
        ax.set(title=column, xlabel="score", xlim=(0, 1))
        ax.legend(fontsize="x-small")
    axes[0][0].set_ylabel("slides")
    fig.tight_layout()
    return _png(fig)


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)) or value is pd.NA:
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "<b>no</b>"
    if isinstance(value, (float, np.floating)):
        return f"{value:.3f}"
    return html.escape(str(value))


def _wrong(table: pd.DataFrame) -> np.ndarray:
    """Rows misclassified at the Youden threshold (unknown labels are not wrong)."""
    return table["correct"].eq(False).fillna(False).to_numpy(dtype=bool)


def _slide_table_html(table: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in ["slide", *table.columns])
    rows = []
    for slide_id, row in table.iterrows():
        wrong = row["correct"] is not pd.NA and not bool(row["correct"])
        label = {1.0: "tumour", 0.0: "normal"}.get(row["label"], "?") if pd.notna(row["label"]) else "?"
        cells = [html.escape(str(slide_id)), label] + [_fmt(row[c]) for c in table.columns[1:]]
        rows.append(f"<tr class=\"{'wrong' if wrong else ''}\">" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f'<table class="slides"><tr>{head}</tr>{"".join(rows)}</table>'


def _slides_to_show(table: pd.DataFrame) -> list[str]:
    """The misclassified slides first (up to ``MISCLASSIFIED_SHOWN``), then a top positive and a top negative."""
    shown = list(table.index[_wrong(table)][:MISCLASSIFIED_SHOWN])
    for label in (1.0, 0.0):
        right = [s for s in table.index[table["label"] == label] if s not in shown]
        shown += right[:1]
    if not shown:
        shown = list(table.index[:HEATMAP_SLIDES])
    return list(dict.fromkeys(shown))


def _set_section(view: RunView, slides: SlideSet) -> str:
    table, threshold = slide_table(slides)
    labelled = table["label"].isin([0, 1])
    n_pos, n_neg = int((table["label"] == 1).sum()), int((table["label"] == 0).sum())
    parts = [f"<h2>{html.escape(slides.name)}: {len(table)} slides"
             + (f", {n_pos} with metastasis, {n_neg} without" if labelled.any() else ", labels unknown") + "</h2>"]
    if slides.note:
        parts.append(f'<p class="muted">{html.escape(slides.note)}</p>')
    warning = ties_warning(table["final"])
    if warning:
        parts.append(f'<p class="warn">⚠ {html.escape(warning)}</p>')
    if labelled.any() and table.loc[labelled, "label"].nunique() == 2:
        from helpkit.scoring import auc_ci

        y = table.loc[labelled, "label"].to_numpy(int)
        result = auc_ci(y, table.loc[labelled, "final"].to_numpy())
        wrong = int(_wrong(table).sum())
        parts.append(f"<p>Final score <b>{html.escape(slides.final_name)}</b>: AUC {result.auc:.3f} "
                     f"[{result.ci_low:.3f}, {result.ci_high:.3f}]; Youden threshold {threshold:.3f}: "
                     f"<b>{wrong}</b> slide(s) misclassified.</p>")
        curves = {slides.final_name: (y, table.loc[labelled, "final"].to_numpy())}
        score_columns = [c for c in table.columns if c not in ("label", "final", "rank", "correct")]
        for column in score_columns:
            values = table.loc[labelled, column].to_numpy(dtype=float)
            if np.isfinite(values).all():
                curves[column] = (y, values)
        for other, scores in slides.other.items():
            values = scores.reindex(table.index[labelled]).to_numpy(dtype=float)
            if np.isfinite(values).all():
                curves[other] = (y, values)
        parts.append('<div class="row">' + _roc_figure(curves, f"ROC, {slides.name}")
                     + _distribution_figure(table, ["final", *score_columns]) + "</div>")
    parts.append("<h3>Per slide</h3><p class=\"muted\">Sorted by the final score's rank (1 = most likely tumour); "
                 "red rows are misclassified at the Youden threshold; model columns are each model's max heatmap "
                 "probability.</p>")
    parts.append(_slide_table_html(table))
    if slides.heatmap_dir is not None and view.models:
        shown = _slides_to_show(table)
        chosen = [{"slide_id": s, "path": slides.slide_paths.get(s), "truth": slides.truth.get(s),
                   "label": int(table.loc[s, "label"]) if pd.notna(table.loc[s, "label"]) else None,
                   "prob": float(table.loc[s, "final"]),
                   "correct": None if table.loc[s, "correct"] is pd.NA else bool(table.loc[s, "correct"])}
                  for s in shown]
        parts.append("<h3>Heatmaps: misclassified slides first</h3>")
        parts.append(_heatmap_figure(chosen, view.models, slides.heatmap_dir))
    return "\n".join(parts)


# ---- model internals: feature importance, training curves ---------------------------------

def _fallback_section(folder: Path) -> str:
    """What a LightGBM stacker fitted on fewer than ``min_slides`` slides used instead of trees
    (``helpkit.ensemble.stack.LGBMStacker``): its logistic model's weights; empty otherwise."""
    from helpkit.ensemble.stack import LGBMStacker

    try:
        if json.loads((folder / "stacker.json").read_text()).get("class") != LGBMStacker.__name__:
            return ""
        stacker = LGBMStacker.load(folder)
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    if stacker.fitted_with_ != "logreg":
        return ""
    names = getattr(stacker, "feature_names_in_", None)
    names = list(names) if names is not None else [f"column {i}" for i in range(stacker.n_features_in_)]
    frame = pd.DataFrame({"score": [names[i] for i in stacker.score_columns_],
                          "weight": stacker.score_model_.coef_[0]})
    min_slides = stacker.min_slides
    return ("<h2>Stacker: the few-slide fallback</h2>"
            f"<p>Fewer training slides than <code>min_slides</code> ({min_slides}): the LightGBM stacker "
            "fitted no trees, and a logistic model of each CNN's max probability gives the slide score "
            "(weights on standardised scores).</p>" + _table(frame))


def _importance_section(model_dir: Path | None) -> str:
    if model_dir is None:
        return ""
    if not (model_dir / "ensemble" / "model.txt").is_file():
        return _fallback_section(model_dir / "ensemble")
    import lightgbm

    booster = lightgbm.Booster(model_file=str(model_dir / "ensemble" / "model.txt"))
    meta = json.loads((model_dir / "ensemble" / "ensemble.json").read_text())
    names = meta.get("columns") or booster.feature_name()
    frame = pd.DataFrame({"feature": names, "gain": booster.feature_importance("gain"),
                          "splits": booster.feature_importance("split")}).sort_values("gain", ascending=False)
    total = frame["gain"].sum()
    frame["share of gain"] = frame["gain"] / total if total > 0 else 0.0
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    top = frame.head(20).iloc[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(top) + 1))
    ax.barh(top["feature"], top["gain"], color="tab:green")
    ax.set(xlabel="total gain", title="LightGBM feature importance (gain)")
    fig.tight_layout()
    unused = int((frame["splits"] == 0).sum())
    return ("<h2>LightGBM feature importance</h2>"
            f"<p>{len(frame)} features, {unused} never used in a split.</p>"
            + '<div class="row">' + _png(fig) + _table(frame.head(20)) + "</div>")


def _training_logs(model_dir: Path | None) -> dict[str, dict[str, pd.DataFrame]]:
    """{model: {fold: log.csv}} of the runs the pipeline trained or shipped."""
    from helpkit.pipeline import PIPELINE_FILE

    if model_dir is None or not (model_dir / PIPELINE_FILE).is_file():
        return {}
    runs = json.loads((model_dir / PIPELINE_FILE).read_text()).get("runs", {})
    logs: dict[str, dict[str, pd.DataFrame]] = {}
    for model, rel in runs.items():
        run_dir = Path(rel) if Path(rel).is_absolute() else model_dir / rel
        for log_csv in sorted(run_dir.glob("fold_*/log.csv")):
            try:
                logs.setdefault(model, {})[log_csv.parent.name] = pd.read_csv(log_csv)
            except (OSError, ValueError):
                continue
    return logs


def _curves_section(model_dir: Path | None) -> str:
    logs = _training_logs(model_dir)
    if not logs:
        return ""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(logs), 2, figsize=(10, 3 * len(logs)), squeeze=False)
    for (model, folds), (loss_ax, auc_ax) in zip(logs.items(), axes):
        for i, (fold, log) in enumerate(folds.items()):
            colour = f"C{i}"
            epoch = log["epoch"] + 1 if "epoch" in log.columns else np.arange(1, len(log) + 1)
            for ax, metric in ((loss_ax, "loss"), (auc_ax, "auc")):
                if metric in log.columns:
                    ax.plot(epoch, log[metric], color=colour, lw=1.2, label=f"{fold} train")
                if f"val_{metric}" in log.columns:
                    ax.plot(epoch, log[f"val_{metric}"], color=colour, lw=1.2, ls="--", label=f"{fold} val")
        loss_ax.set(title=f"{model}: loss", xlabel="epoch")
        auc_ax.set(title=f"{model}: patch AUC", xlabel="epoch", ylim=(0, 1.02))
        loss_ax.legend(fontsize="x-small", ncol=2)
    fig.tight_layout()
    return ("<h2>Training curves per fold</h2><p class=\"muted\">From each fold's log.csv: solid train, dashed "
            "held-out slides of that fold.</p>" + _png(fig))


# ---- provenance, validation ----------------------------------------------------------------

def _git_commit() -> str:
    """The commit of the helpkit source this report ran from, when it is a git checkout ('' otherwise)."""
    import subprocess

    source = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "-C", str(source), "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, timeout=5)
        dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "--", "."], capture_output=True,
                               text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return ""
    if out.returncode != 0:
        return ""
    return out.stdout.strip() + (" (uncommitted changes)" if dirty.stdout.strip() else "")


def _image_labels(image_id: str) -> dict[str, str]:
    """The image's labels (helpkit version, commit, lock hash) when a Docker engine is reachable."""
    if not image_id:
        return {}
    try:
        import docker

        engine = docker.from_env(timeout=5)
        labels = engine.images.get(image_id).labels or {}
    except Exception:  # noqa: BLE001  no engine, image gone: the report goes on without them
        return {}
    return {k: v for k, v in labels.items() if "helpkit" in k or k.startswith("org.opencontainers")}


def _provenance_section(view: RunView) -> str:
    from helpkit import __version__

    validation = view.validation
    rows = [("report made by helpkit", __version__), ("helpkit git commit (report)", _git_commit() or "not a git checkout"),
            ("run folder", str(view.source.resolve())), ("kind", view.kind)]
    if validation.get("image"):
        rows.append(("image", validation["image"]))
    if validation.get("image_id"):
        rows.append(("image digest (id)", validation["image_id"]))
    for key, value in sorted(_image_labels(validation.get("image_id", "")).items()):
        rows.append((f"image label {key}", value))
    body = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>" for k, v in rows)
    return f'<table class="kv">{body}</table>'


def _share(used: float | None, limit: float | None) -> str:
    if not used or not limit:
        return "–"
    share = used / limit
    colour = "#c00" if share > 0.8 else "#e90" if share > 0.5 else "#0a0"
    return (f'<div class="bar"><span style="width:{min(share, 1) * 100:.1f}%;background:{colour}"></span></div>'
            f"{share:.1%}")


def _stages_table(validation: dict[str, Any]) -> str:
    from helpkit.config import size_bytes

    rows = []
    for stage in validation.get("stages", []):
        peak = stage.get("peak_memory_bytes")
        memory = stage.get("memory_limit")
        try:
            memory_bytes = size_bytes(memory) if memory else None
        except HelpkitError:
            memory_bytes = None
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in (
            html.escape(stage.get("label", stage["stage"])), _fmt(stage.get("exit_code")),
            f"{stage.get('duration_s', 0):.1f} s of {stage.get('timeout_s', 0):g} s",
            _share(stage.get("duration_s"), stage.get("timeout_s")),
            f"{peak / 2**20:.0f} MiB of {html.escape(str(memory))}" if peak else "not sampled",
            _share(peak, memory_bytes))) + "</tr>")
    if not rows:
        return ""
    head = "".join(f"<th>{h}</th>" for h in ("stage", "exit", "time", "share of time limit", "peak memory",
                                              "share of memory limit"))
    return f"<table><tr>{head}</tr>{''.join(rows)}</table>"


def _validation_section(validation: dict[str, Any]) -> str:
    """Failures, warnings, the container settings and each stage's log tail."""
    parts = []
    for key in ("failures", "warnings"):
        if validation.get(key):
            items = "".join(f"<li>{html.escape(str(v))}</li>" for v in validation[key])
            parts.append(f"<p>{key}:</p><ul>{items}</ul>")
    emulation = validation.get("emulation")
    if emulation:
        parts.append("<details><summary>container settings</summary><pre>"
                     + html.escape(json.dumps(emulation, indent=2)) + "</pre></details>")
    for stage in validation.get("stages", []):
        tail = "\n".join(stage.get("log_tail", [])[-40:])
        parts.append(f"<details><summary>log tail: {html.escape(stage.get('label', stage['stage']))}</summary>"
                     f"<pre>{html.escape(tail)}</pre></details>")
    return "\n".join(parts)


def _demo_sections(run: dict[str, Any], run_dir: Path) -> list[str]:
    """The demo's own sections: AUC of each submission per phase, and the drop under the shift."""
    scores = run.get("scores", {})
    summary_rows = [
        {"submission": name, **{f"{phase} AUC": scores[phase][name]["auc"] for phase in scores if name in scores[phase]},
         **{f"{phase} 95% CI": f"{scores[phase][name]['ci_low']:.3f}–{scores[phase][name]['ci_high']:.3f}"
            for phase in scores if name in scores[phase]}}
        for name in sorted({n for p in scores.values() for n in p})
    ]
    sections = ["<h2>Summary</h2>", _table(pd.DataFrame(summary_rows)) if summary_rows else "<p>no scores</p>"]
    if run["submission"].get("image"):
        sections.append(f"<p>Image <code>{html.escape(run['submission']['image'])}</code> "
                        f"({run['submission'].get('image_size_bytes', 0) / 2**20:.0f} MiB)</p>")
    if scores:
        sections += ["<h2>Phase 1 vs phase 2: the drop under the phase-2 shift (stain, scanner, case mix)</h2>", _shift_figure(scores)]
    return sections


def _candidates_section(model_dir: Path | None) -> str:
    report_dir = model_dir / "ensemble_report" if model_dir is not None else None
    if report_dir is None or not (report_dir / "report.csv").is_file():
        return ""
    table = pd.read_csv(report_dir / "report.csv")
    keep = ["candidate", "auc", "ci_low", "ci_high", "auc_repeat_std", "p_vs_best_single", "n"]
    from helpkit.ensemble.methods import REGISTRY

    described = "".join(f"<li><b>{html.escape(m.name)}</b>: {html.escape(m.description)}</li>" for m in REGISTRY.values())
    return ("<h2>Candidate ensembles (out-of-fold, training slides)</h2>"
            "<p>Each row's AUC comes from slide-level cross-validation on out-of-fold heatmap features; p is the "
            "paired DeLong test against the best single model.</p>"
            + _table(table[[c for c in keep if c in table.columns]]) + _png_file(report_dir / "roc.png")
            + f"<details><summary>the methods</summary><ul>{described}</ul></details>")


def render(view: RunView) -> str:
    """The report's HTML page for ``view``."""
    validation = view.validation
    verdict = validation.get("verdict") or (view.demo or {}).get("verdict") or "NOT RUN"
    css = "pass" if verdict == "PASS" else "fail"
    sections = [f"<h1>{html.escape(view.title)}</h1>",
                f'<p>Verdict: <span class="{css}">{html.escape(str(verdict))}</span></p>',
                "<h2>Provenance</h2>", _provenance_section(view)]
    stages = _stages_table(validation)
    if stages:
        sections += ["<h2>Stages: time and memory against their limits</h2>", stages]
    for note in view.notes:
        sections.append(f'<p class="warn">{html.escape(note)}</p>')
    if view.demo is not None:
        sections += _demo_sections(view.demo, view.source)
    for slides in view.sets:
        sections.append(_set_section(view, slides))
    sections += [_importance_section(view.model_dir), _curves_section(view.model_dir),
                 _candidates_section(view.model_dir)]
    if validation:
        sections += ["<h2>Validation under the platform contract</h2>", _validation_section(validation)]
    timings = (view.demo or {}).get("timings_s", {})
    if timings:
        sections += ["<h2>Timings</h2>",
                     _table(pd.DataFrame({"step": list(timings), "seconds": list(timings.values())}), "{:.1f}")]
    sections += ["<h2>Configuration</h2>", "<pre>" + html.escape(view.config_text) + "</pre>"]
    if view.demo is not None:
        sections.append("<pre>" + html.escape(json.dumps(view.demo.get("settings", {}), indent=2)) + "</pre>")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(view.title)}</title>"
            f"<style>{_CSS}</style></head><body>{''.join(s for s in sections if s)}</body></html>")


def build_report(run_dir: str | Path, out: str | Path | None = None, **options: Any) -> Path:
    """Write the HTML report of a run folder (demo, ``validate --work-dir`` or model dir) to ``out``
    (default ``RUN_DIR/report.html``); ``options`` go to ``load_view``. Returns its path."""
    view = load_view(run_dir, **options)
    out = Path(out) if out is not None else Path(run_dir) / "report.html"
    write_text(out, render(view))
    return out
