"""One self-contained HTML page that judges a whole run: scores, ROC curves, heatmaps, verdict.

It reads what ``helpkit demo`` leaves in its run folder (``demo.json`` says where each piece
is) and embeds every image as a data URI, so the page can be mailed or archived alone.
"""

from __future__ import annotations

import base64
import html
import io
import json
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
.muted{color:#777}
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
    ax.set(ylabel="AUC (95% CI)", ylim=(0, 1.05), title="Test AUC: phase 1 vs phase 2 (shifted)")
    ax.axhline(0.5, color="grey", lw=0.8, ls="--")
    ax.legend(fontsize="small", loc="lower left")
    return _png(fig)


def _heatmap_figure(slides: list[dict[str, Any]], models: list[str], heatmap_dir: Path) -> str:
    """Per slide: its thumbnail with the true tumour outline, then each model's heatmap over it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from helpkit.heatmap.overlay import draw_heatmap, thumbnail
    from helpkit.heatmap.store import heatmap_path, read_heatmap
    from helpkit.slide import SlideReader

    fig, axes = plt.subplots(len(slides), len(models) + 1, figsize=(3.2 * (len(models) + 1), 3.2 * len(slides)),
                             squeeze=False)
    for row, slide in zip(axes, slides):
        try:
            with SlideReader(slide["path"]) as reader:
                thumb, downsample = thumbnail(reader, 512)
                dimensions = reader.dimensions
        except HelpkitError as err:
            row[0].set_title(f"{slide['slide_id']}: {err.message}", fontsize=7)
            for ax in row:
                ax.axis("off")
            continue
        outline = None
        if slide.get("truth") and Path(slide["truth"]).is_file():
            from helpkit.slide.annotation import read_annotation  # PNG mask, ASAP XML or GeoJSON

            try:
                outline = read_annotation(slide["truth"], dimensions).tumour(shape=thumb.shape[:2])
            except HelpkitError:
                outline = None
        title = f"{slide['slide_id']} ({'tumour' if slide['label'] == 1 else 'normal'}, p={slide['prob']:.2f})"
        for ax, model in zip(row, [None, *models]):
            ax.imshow(thumb)
            if model is not None:
                path = heatmap_path(heatmap_dir, model, slide["slide_id"])
                if path.is_file():
                    draw_heatmap(ax, read_heatmap(path), downsample)
                ax.set_title(model, fontsize=9)
            else:
                ax.set_title(title, fontsize=9)
            if outline is not None and outline.any():
                ax.contour(outline, levels=[0.5], colors="lime", linewidths=1.0)
            ax.set_xlim(0, thumb.shape[1])
            ax.set_ylim(thumb.shape[0], 0)
            ax.axis("off")
    fig.suptitle("Heatmaps (jet: tumour probability) · green: true tumour outline", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    return _png(fig)


def _test_set_section(run: dict[str, Any], run_dir: Path, phase: str, info: dict[str, Any]) -> str:
    from helpkit.scoring import read_labels, read_predictions

    labels = read_labels(run_dir / info["labels"])
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, rel in info["predictions"].items():
        path = run_dir / rel
        if path.is_file():
            preds = read_predictions(path, expected_ids=list(labels.index)).scores
            curves[name] = (labels.to_numpy(dtype=int), preds.reindex(labels.index).to_numpy())
    parts = [f"<h3>{html.escape(phase)}: {len(labels)} test slides, {int(labels.sum())} with metastasis</h3>"]
    if curves and labels.nunique() == 2:
        parts.append(_roc_figure(curves, f"ROC on the {phase} test set"))
    stacked = info["predictions"].get(run["submission"]["name"])
    if stacked and (run_dir / stacked).is_file() and "heatmaps" in info:
        preds = read_predictions(run_dir / stacked).scores
        chosen = _heatmap_slides(labels, preds, run_dir / info["test_dir"], run_dir / info["truth_masks"])
        if chosen:
            parts.append(_heatmap_figure(chosen, run["models"], run_dir / info["heatmaps"]))
    return "\n".join(parts)


def _heatmap_slides(labels: pd.Series, preds: pd.Series, test_dir: Path, truth_dir: Path) -> list[dict[str, Any]]:
    """A few test slides to show: the positives the ensemble ranks highest and lowest, a negative."""
    from helpkit.data import discover

    paths = discover(test_dir).set_index("slide_id")["path"]
    ranked = preds.reindex(labels.index).sort_values(ascending=False)
    positives = [s for s in ranked.index if labels[s] == 1]
    negatives = [s for s in ranked.index if labels[s] == 0]
    chosen = list(dict.fromkeys(positives[:2] + positives[-1:] + negatives[:1]))[:HEATMAP_SLIDES]
    def truth(slide_id: str) -> str:
        found = [truth_dir / f"{slide_id}{suffix}" for suffix in (".png", ".xml", ".geojson")]
        return str(next((p for p in found if p.is_file()), found[0]))

    return [{"slide_id": s, "path": paths[s], "label": int(labels[s]), "prob": float(preds[s]),
             "truth": truth(s)} for s in chosen if s in paths.index]


def _validation_section(validation: dict[str, Any]) -> str:
    verdict = validation.get("verdict", "NOT RUN")
    css = "pass" if verdict == "PASS" else "fail"
    rows = []
    for stage in validation.get("stages", []):
        peak = stage.get("peak_memory_bytes")
        rows.append({"stage": stage.get("label", stage["stage"]), "exit code": stage.get("exit_code"),
                     "duration (s)": stage.get("duration_s"),
                     "peak memory (MiB)": peak / 2**20 if peak else float("nan"),
                     "memory limit": stage.get("memory_limit"), "time limit (s)": stage.get("timeout_s")})
    parts = [f'<p>Verdict: <span class="{css}">{html.escape(verdict)}</span></p>']
    if rows:
        parts.append(_table(pd.DataFrame(rows), "{:.1f}"))
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


def build_report(run_dir: str | Path, out: str | Path) -> Path:
    """Write the HTML report of a demo run folder to ``out``; return its path."""
    run_dir = Path(run_dir)
    run = load_run(run_dir)
    validation = {}
    if run.get("validation") and (run_dir / run["validation"]).is_file():
        validation = json.loads((run_dir / run["validation"]).read_text())
    scores = run.get("scores", {})
    summary_rows = [
        {"submission": name, **{f"{phase} AUC": scores[phase][name]["auc"] for phase in scores if name in scores[phase]},
         **{f"{phase} 95% CI": f"{scores[phase][name]['ci_low']:.3f}–{scores[phase][name]['ci_high']:.3f}"
            for phase in scores if name in scores[phase]}}
        for name in sorted({n for p in scores.values() for n in p})
    ]
    sections = [
        f"<h1>helpkit run: {html.escape(run['submission']['name'])}</h1>",
        f'<p class="muted">{html.escape(str(run_dir.resolve()))} · {html.escape(run.get("finished", ""))} · '
        f'total {run.get("timings_s", {}).get("total", float("nan")):.0f} s</p>',
        "<h2>Summary</h2>",
        _table(pd.DataFrame(summary_rows)) if summary_rows else "<p>no scores</p>",
        f"<p>Image <code>{html.escape(run['submission'].get('image', ''))}</code> "
        f"({run['submission'].get('image_size_bytes', 0) / 2**20:.0f} MiB) · validator verdict "
        f"<b>{html.escape(validation.get('verdict', 'NOT RUN'))}</b></p>",
    ]
    if scores:
        sections += ["<h2>Phase 1 vs phase 2: the drop under the stain/scanner shift</h2>", _shift_figure(scores)]
    report_dir = run_dir / run["ensemble_report"]
    if (report_dir / "report.csv").is_file():
        table = pd.read_csv(report_dir / "report.csv")
        keep = ["candidate", "auc", "ci_low", "ci_high", "auc_repeat_std", "p_vs_best_single", "n"]
        sections += ["<h2>Candidate ensembles (out-of-fold, training slides)</h2>",
                     "<p>Each row's AUC comes from slide-level cross-validation on out-of-fold heatmap "
                     "features; p is the paired DeLong test against the best single model.</p>",
                     _table(table[[c for c in keep if c in table.columns]]), _png_file(report_dir / "roc.png")]
    sections.append("<h2>Test sets</h2>")
    for phase, info in run.get("test_sets", {}).items():
        sections.append(_test_set_section(run, run_dir, phase, info))
    sections += ["<h2>Validation under the platform contract</h2>", _validation_section(validation)]
    timings = run.get("timings_s", {})
    if timings:
        sections += ["<h2>Timings</h2>",
                     _table(pd.DataFrame({"step": list(timings), "seconds": list(timings.values())}), "{:.1f}")]
    sections += ["<h2>Configuration</h2>", "<pre>" + html.escape(run["submission"].get("toml", "")) + "</pre>",
                 "<pre>" + html.escape(json.dumps(run.get("settings", {}), indent=2)) + "</pre>"]
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>helpkit report</title>"
            f"<style>{_CSS}</style></head><body>{''.join(sections)}</body></html>")
    out = Path(out)
    write_text(out, page)
    return out
