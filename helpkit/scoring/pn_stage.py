"""CAMELYON17: node labels from per-slide predictions, patient pN stages, quadratic kappa.

Node (slide) labels, in increasing order: ``negative``, ``itc``, ``micro``, ``macro``.
From class probabilities a node takes the most probable class (ties: the lower class);
from a single score and three increasing thresholds t1 < t2 < t3 it is negative below t1,
itc below t2, micro below t3, macro from t3 on.

Patient stage from its nodes (CAMELYON17's rules, ``helpkit.layouts.pn_stage``; ITC nodes are
not counted as positive):

- pN0: no ITC, micro- or macro-metastasis in any node;
- pN0(i+): only ITCs;
- pN1mi: micro-metastases, no macro-metastasis;
- pN1: metastases (micro or macro) in 1-3 nodes, at least one macro;
- pN2: metastases in 4 or more nodes (CAMELYON17's 5 nodes a patient; its stage list
  stops at pN2), at least one macro.

Files use CAMELYON17's stage CSV (read by ``helpkit.layouts.read_stage_csv``): a header, then ``patient,stage`` rows: ``patient_000.zip``
with its pN stage and ``patient_000_node_0.tif`` with its node label. Names are compared
without the ``.zip`` / ``.tif`` suffix and case-insensitively for labels. The score is
Cohen's kappa with quadratic weights over the five stages in the order above
(``sklearn.metrics.cohen_kappa_score(..., labels=STAGES, weights='quadratic')``, what the
challenge's evaluation script calls), over the reference's patients.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from helpkit.errors import HelpkitError
from helpkit.io import atomic_path
from helpkit.layouts import PN_STAGES as STAGES
from helpkit.layouts import SIZE_CLASSES as NODE_LABELS
from helpkit.layouts import pn_stage
from helpkit.layouts import read_stage_csv as read_stages
_NODE = re.compile(r"^(?P<patient>.+?)_node_\d+$", re.IGNORECASE)


def _stem(name: str) -> str:
    name = str(name).strip()
    for suffix in (".zip", ".tif", ".tiff"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def patient_of(slide_id: str) -> str:
    """``patient_004_node_2(.tif)`` -> ``patient_004``; a HelpkitError for another name."""
    match = _NODE.match(_stem(slide_id))
    if match is None:
        raise HelpkitError(f"slide {slide_id!r} is not named <patient>_node_<k>, so its patient is unknown")
    return match.group("patient")


def node_label(value: str) -> str:
    key = str(value).strip().lower()
    if key not in NODE_LABELS:
        raise HelpkitError(f"unknown node label {value!r} (expected one of {', '.join(NODE_LABELS)})")
    return key


def stage_label(value: str) -> str:
    by_key = {s.lower(): s for s in STAGES}
    key = str(value).strip().lower()
    if key not in by_key:
        raise HelpkitError(f"unknown pN stage {value!r} (expected one of {', '.join(STAGES)})")
    return by_key[key]


def patient_stage(nodes: Iterable[str]) -> str:
    """The pN stage of a patient from its node labels (``helpkit.layouts.pn_stage``, after
    checking each label)."""
    return pn_stage([node_label(n) for n in nodes])


def labels_from_probabilities(probabilities: pd.DataFrame) -> pd.Series:
    """Each row's most probable class of ``NODE_LABELS`` columns (ties: the lower class)."""
    missing = [c for c in NODE_LABELS if c not in probabilities.columns]
    if missing:
        raise HelpkitError(f"probability columns {missing} missing (need {', '.join(NODE_LABELS)})")
    try:
        values = probabilities[list(NODE_LABELS)].to_numpy(dtype=float)
    except ValueError as err:
        raise HelpkitError(f"class probabilities must be numbers ({err})") from None
    if not np.isfinite(values).all():
        raise HelpkitError("class probabilities must be finite numbers")
    return pd.Series(np.asarray(NODE_LABELS)[values.argmax(axis=1)], index=probabilities.index)


def labels_from_scores(scores: pd.Series, thresholds: Sequence[float]) -> pd.Series:
    """Node labels from one score per slide and increasing thresholds (t_itc, t_micro, t_macro)."""
    t = np.asarray(thresholds, dtype=float)
    if t.shape != (3,) or not np.all(np.diff(t) > 0) or not np.isfinite(t).all():
        raise HelpkitError(f"thresholds must be three increasing numbers (itc, micro, macro), got {list(thresholds)}")
    try:
        values = scores.to_numpy(dtype=float)
    except ValueError as err:
        raise HelpkitError(f"scores must be numbers ({err})") from None
    if not np.isfinite(values).all():
        raise HelpkitError("scores must be finite numbers")
    return pd.Series(np.asarray(NODE_LABELS)[np.searchsorted(t, values, side="right")], index=scores.index)


def stages_by_patient(node_labels: Mapping[str, str]) -> dict[str, str]:
    """Patient -> pN stage, from slide id -> node label."""
    nodes: dict[str, list[str]] = {}
    for slide, label in node_labels.items():
        nodes.setdefault(patient_of(slide), []).append(label)
    return {patient: patient_stage(labels) for patient, labels in sorted(nodes.items())}


def quadratic_kappa(reference: Sequence[str], predicted: Sequence[str]) -> float:
    """Cohen's kappa with quadratic weights over ``STAGES`` in order."""
    from sklearn.metrics import cohen_kappa_score

    ref = [stage_label(s) for s in reference]
    pred = [stage_label(s) for s in predicted]
    if len(ref) != len(pred) or not ref:
        raise HelpkitError(f"kappa needs two equal, non-empty lists (got {len(ref)} and {len(pred)})")
    return float(cohen_kappa_score(ref, pred, labels=list(STAGES), weights="quadratic"))


def read_stage_csv(path: str | Path) -> tuple[dict[str, str], dict[str, str]]:
    """A CAMELYON17 stage CSV (``helpkit.layouts.read_stage_csv``) as (patient -> pN stage,
    slide -> node label), names without suffix."""
    stages = read_stages(path)
    return stages.patients.to_dict(), stages.slides.to_dict()


def read_node_predictions(path: str | Path, thresholds: Sequence[float] | None = None) -> dict[str, str]:
    """Slide -> node label from a predictions CSV with a header and a first column of slide ids:
    either columns ``negative,itc,micro,macro`` (probabilities), or ``score`` with
    ``thresholds``, or a ``stage``/``label`` column of node labels (a CAMELYON17 stage CSV
    too: patient rows are skipped)."""
    path = Path(path)
    try:
        table = pd.read_csv(path, dtype=str, keep_default_na=False)
    except FileNotFoundError as err:
        raise HelpkitError("predictions file not found", path) from err
    except (OSError, ValueError) as err:
        raise HelpkitError(f"cannot read predictions CSV ({err})", path) from err
    if table.empty:
        raise HelpkitError("no predictions", path)
    slides = table.iloc[:, 0].astype(str).map(_stem)
    table.columns = [str(c).strip().lower() for c in table.columns]
    try:
        if all(c in table.columns for c in NODE_LABELS):
            labels = labels_from_probabilities(table)
        elif "score" in table.columns:
            if thresholds is None:
                raise HelpkitError("a score column needs --thresholds T_ITC,T_MICRO,T_MACRO")
            labels = labels_from_scores(table["score"], thresholds)
        else:
            column = next((c for c in ("stage", "label") if c in table.columns), None)
            if column is None:
                raise HelpkitError(f"need columns {', '.join(NODE_LABELS)}, or score, or stage "
                                   f"(found {', '.join(table.columns)})")
            keep = slides.map(lambda s: bool(_NODE.match(s)))
            slides, labels = slides[keep], table.loc[keep, column].map(node_label)
    except HelpkitError as err:
        raise HelpkitError(err.message, path) from None
    duplicated = slides[slides.duplicated()]
    if len(duplicated):
        raise HelpkitError(f"slide {duplicated.iloc[0]!r} appears twice", path)
    return dict(zip(slides, labels, strict=True))


def write_stage_csv(path: str | Path, stages: Mapping[str, str], node_labels: Mapping[str, str]) -> None:
    """The CAMELYON17 submission: header ``patient,stage``; each patient's ``.zip`` row, then its
    nodes' ``.tif`` rows."""
    by_patient: dict[str, list[str]] = {}
    for slide in node_labels:
        by_patient.setdefault(patient_of(slide), []).append(slide)
    lines = ["patient,stage"]
    for patient in sorted(stages):
        lines.append(f"{patient}.zip,{stages[patient]}")
        lines += [f"{slide}.tif,{node_labels[slide]}" for slide in sorted(by_patient.get(patient, []))]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def score_stages(predictions: str | Path, reference: str | Path, thresholds: Sequence[float] | None = None,
                 out: str | Path | None = None) -> dict:
    """Node labels and patient stages from ``predictions``; kappa against ``reference``'s
    patients (each must have predicted nodes); node accuracy on the nodes both label."""
    node_labels = read_node_predictions(predictions, thresholds)
    predicted = stages_by_patient(node_labels)
    ref_patients, ref_nodes = read_stage_csv(reference)
    if not ref_patients:
        raise HelpkitError("no patient rows (<patient>.zip,<pN stage>) in the reference", reference)
    missing = sorted(set(ref_patients) - set(predicted))
    if missing:
        raise HelpkitError(f"{len(missing)} reference patients have no predicted nodes: "
                           f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}", predictions)
    order = sorted(ref_patients)
    kappa = quadratic_kappa([ref_patients[p] for p in order], [predicted[p] for p in order])
    shared = sorted(set(ref_nodes) & set(node_labels))
    if out is not None:
        write_stage_csv(out, predicted, node_labels)
    confusion = pd.crosstab(pd.Categorical([ref_patients[p] for p in order], STAGES),
                            pd.Categorical([predicted[p] for p in order], STAGES), dropna=False)
    return {
        "predictions": str(predictions), "reference": str(reference), "kappa": kappa,
        "patients": len(order), "patients_not_in_reference": len(set(predicted) - set(ref_patients)),
        "stage_agreement": float(np.mean([ref_patients[p] == predicted[p] for p in order])),
        "nodes_compared": len(shared),
        "node_agreement": float(np.mean([ref_nodes[s] == node_labels[s] for s in shared])) if shared else None,
        "confusion": {"rows_reference_cols_predicted": list(STAGES), "counts": confusion.to_numpy().tolist()},
        "stages": {p: {"reference": ref_patients[p], "predicted": predicted[p]} for p in order},
    }
