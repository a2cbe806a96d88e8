"""The synthetic competition in the CAMELYON16 and CAMELYON17 layouts (see ``helpkit.layouts``).

Slides are drawn exactly as for the HeLP layout (the same presets and quotas); the annotations are ASAP XML polygons traced
from the generator's tumour mask (level-0 coordinates), every other annotated slide with an
``Exclusion`` square cut out of its largest deposit. Each slide's largest deposit gives its
size class (ITC <= 0.2 mm < micro <= 2 mm < macro, longest side of its box; ``make_slide``).

CAMELYON16::

    training/{tumor,normal}/{tumor,normal}_NNN.tif, training/lesion_annotations/tumor_NNN.xml
    testing/images/test_NNN.tif, testing/reference.csv (no header: slide,Tumor|Normal[,size class]),
    testing/lesion_annotations/test_NNN.xml (held out, the tumour test slides)

CAMELYON17 (patients of up to ``NODES`` slides, centre = patient modulo 5)::

    training/center_K/patient_NNN_node_M.tif, training/stage_labels.csv (patient,stage),
    training/lesion_annotations/patient_NNN_node_M.xml (positive slides)
    testing/center_K/patient_1NN_node_M.tif, test_stage_labels.csv (held out),
    truth/lesion_annotations/*.xml (held out)

and ``synth.json`` as for the HeLP layout, with ``layout``, each slide's ``size_class`` and
``annotation`` and, for CAMELYON17, its ``patient`` and the patients' ``stages``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage

from helpkit.io import write_json, write_text
from helpkit.layouts import pn_stage
from helpkit.progress import track
from helpkit.slide.polygons import Polygon, trace_mask, write_asap_xml
from helpkit.synth.presets import SplitSpec

if TYPE_CHECKING:
    from helpkit.synth.competition import Drawn

NODES = 5
"""CAMELYON17 slides (lymph nodes) per patient."""

CENTRES = 5

def truth_folder(root: str | Path, layout: str) -> Path:
    """Where a synthetic competition keeps its test slides' held-out annotations."""
    root = Path(root)
    return {"help": root / "truth/mask", "camelyon16": root / "testing/lesion_annotations"}.get(
        layout, root / "truth/lesion_annotations")


def _exclusion_square(mask: np.ndarray, polygon_mask: np.ndarray, downsample: int) -> Polygon | None:
    """An Exclusion square deep inside ``polygon_mask`` (a tumour region), or None if it is too thin."""
    depth = ndimage.distance_transform_edt(np.pad(polygon_mask & mask, 1))[1:-1, 1:-1]
    r, c = np.unravel_index(int(np.argmax(depth)), depth.shape)
    half = int(depth[r, c] * 0.5)
    if half < 2:
        return None
    x0, y0 = (c - half + 1) * downsample, (r - half + 1) * downsample
    x1, y1 = (c + half) * downsample, (r + half) * downsample
    square = np.array([(x0, y0), (x1, y0), (x1, y1), (x0, y1)], dtype=np.float64)
    return Polygon(square, (), "exclusion", "Exclusion", "Exclusion 0")


def _annotate(path: Path, mask: np.ndarray, layout: str, with_exclusion: bool, downsample: int) -> dict[str, Any]:
    """Trace the slide's tumour ``mask`` (at ``downsample``) into ASAP XML at ``path``; returns what
    synth.json records."""
    group = "Tumor" if layout == "camelyon16" else "metastases"
    polygons = trace_mask(mask, downsample, group=group, tolerance=0.01)
    exclusion = None
    if with_exclusion and polygons:
        largest = max(polygons, key=lambda p: p.area)
        from helpkit.slide.polygons import fill_polygons

        inside = fill_polygons([largest], mask.shape, (downsample, downsample))
        exclusion = _exclusion_square(mask, inside, downsample)
    write_asap_xml(path, polygons + ([exclusion] if exclusion is not None else []),
                   hole_group="Exclusion" if layout == "camelyon16" else "normal")
    return {"polygons": len(polygons),
            "exclusion": [float(v) for v in exclusion.bounds] if exclusion is not None else None}


def make_layout_competition(out: Path, layout: str, order: list[Drawn], specs: dict[str, SplitSpec], *,
                            params: dict[str, Any], progress: bool) -> Path:
    """Write the slides of ``order`` (``specs`` per split) in the ``layout`` ('camelyon16' or
    'camelyon17') layout into ``out``, which ``helpkit.synth.competition.make_competition`` has
    checked the arguments of and cleared (call that, with ``layout``)."""
    from helpkit.synth.competition import make_slide, slide_plan

    out = Path(out)
    size, mask_downsample = params["size"], params["mask_downsample"]
    slide_seeds = np.random.SeedSequence(params["seed"]).generate_state(len(order))
    counters: dict[str, int] = {}
    annotated = 0
    slides = []
    items = enumerate(order)
    for k, drawn in track(items, "synth", total=len(order)) if progress else items:
        split, label, spec = drawn.split, drawn.label, specs[drawn.split]
        if layout == "camelyon16":
            kind = ("tumor" if label else "normal") if split == "train" else "test"
            counters[kind] = counters.get(kind, 0) + 1
            slide_id = f"{kind}_{counters[kind]:03d}"
            image = Path("training") / kind / f"{slide_id}.tif" if split == "train" else \
                Path("testing/images") / f"{slide_id}.tif"
            notes = Path("training/lesion_annotations") if split == "train" else Path("testing/lesion_annotations")
            patient = None
        else:
            n = counters[split] = counters.get(split, 0) + 1
            patient_no = (n - 1) // NODES + (0 if split == "train" else 100)
            patient = f"patient_{patient_no:03d}"
            slide_id = f"{patient}_node_{(n - 1) % NODES}"
            folder = "training" if split == "train" else "testing"
            image = Path(folder) / f"center_{patient_no % CENTRES}" / f"{slide_id}.tif"
            notes = Path("training/lesion_annotations") if split == "train" else Path("truth/lesion_annotations")
        seed = int(slide_seeds[k])
        truth = make_slide(out / image, size, seed, bool(label), shift=params["shift"] if split == "test" else 0.0,
                           mask_downsample=mask_downsample, spec=spec, deposit=drawn.deposit, mimics=drawn.mimics)
        annotation = None
        if label:
            annotation = notes / f"{slide_id}.xml"
            mask = slide_plan(truth["width"], truth["height"], seed, True, spec, drawn.deposit,
                              drawn.mimics).tumour_mask(mask_downsample)
            drawn_xml = _annotate(out / annotation, mask, layout, with_exclusion=annotated % 2 == 0,
                                  downsample=mask_downsample)
            annotated += 1
            truth = {**truth, **drawn_xml}
        slides.append({"slide_id": slide_id, "split": split, "label": label, "path": image.as_posix(),
                       "mask_path": annotation.as_posix() if annotation else None,
                       "annotation": annotation.as_posix() if annotation else None,
                       "patient": patient, **truth})

    stages = _write_labels(out, layout, slides)
    write_json(out / "synth.json", {"params": {"layout": layout, **params}, "slides": slides, "stages": stages})
    return out


def _write_labels(out: Path, layout: str, slides: list[dict[str, Any]]) -> dict[str, str]:
    """reference.csv (CAMELYON16) or the stage CSVs (CAMELYON17); returns the patients' pN stages."""
    if layout == "camelyon16":
        rows = [f"{s['slide_id']},Tumor,{_class_word(s['size_class'])}" if s["label"] else f"{s['slide_id']},Normal"
                for s in slides if s["split"] == "test"]
        write_text(out / "testing/reference.csv", "\n".join(rows) + "\n")
        return {}
    stages: dict[str, str] = {}
    for split, path in (("train", out / "training/stage_labels.csv"), ("test", out / "test_stage_labels.csv")):
        mine = [s for s in slides if s["split"] == split]
        patients: dict[str, list[dict[str, Any]]] = {}
        for s in mine:
            patients.setdefault(s["patient"], []).append(s)
        rows = ["patient,stage"]
        for patient, nodes in patients.items():
            stages[patient] = pn_stage(n["size_class"] for n in nodes)
            rows.append(f"{patient}.zip,{stages[patient]}")
            rows += [f"{n['slide_id']}.tif,{n['size_class']}" for n in nodes]
        write_text(path, "\n".join(rows) + "\n")
    return stages


def _class_word(size: str) -> str:
    return {"itc": "ITC", "micro": "Micro", "macro": "Macro"}.get(size, "None")
