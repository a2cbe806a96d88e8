"""The CAMELYON16 and CAMELYON17 layouts: their slide records, held-out labels and stage CSVs.

``helpkit.data.discover`` hands a folder here first; a folder in neither CAMELYON layout
goes on to the HeLP layout. Every root the platform can mount works on its own:

CAMELYON16 (``camelyon16``)::

    training/tumor/tumor_NNN.tif            train, label 1, annotation lesion_annotations/<id>.xml
    training/normal/normal_NNN.tif          train, label 0
    training/lesion_annotations/*.xml       ASAP XML, level-0 polygons
    testing/images/test_NNN.tif             test, label -1 (held out)
    testing/reference.csv (or reference.csv at the root): no header, ``slide,Tumor|Normal[,size class]``
    testing/lesion_annotations/*.xml        test tumours' annotations (held out, for FROC)

  Accepted roots: the competition root (``training/`` and/or ``testing/``), the training folder
  (``tumor/``, ``normal/``), the testing folder (``images/``) and ``testing/images`` itself
  (a folder of slides, as the HeLP test layout reads it).

CAMELYON17 (``camelyon17``)::

    training/center_K/patient_NNN_node_M.tif   (``centre_K`` too) train when the folder has a stage CSV
    training/stage_labels.csv               header ``patient,stage``: ``patient_020.zip,pN1`` rows for
                                            patients, ``patient_020_node_0.tif,negative|itc|micro|macro``
                                            rows for slides; slide label 1 unless negative
    training/lesion_annotations/*.xml       ASAP XML (``metastases``, ``normal`` groups)
    testing/center_K/*.tif                  test, label -1

  A folder of centre folders with a stage CSV is a training folder; without one, a test folder.
  Slides the CSV names that are not on disk are skipped with a count (CAMELYON17 ships per
  centre); a training slide the CSV does not name is an error.

Slide ids are the file stems as the challenges name them (``tumor_001``, ``test_001``,
``patient_020_node_0``). Test labels are never read by discovery; ``read_layout_labels``
(used by ``helpkit.data.read_labels``) reads ``reference.csv`` and stage CSVs for scoring.
"""

from __future__ import annotations

import csv
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from helpkit.errors import HelpkitError

LAYOUTS = ("help", "camelyon16", "camelyon17")
"""Names for ``--layout``; ``auto`` (or None) detects."""

EXPECTED = {
    "help": "train/ and/or test/, a train folder with image/{positive,negative}/, or slide files",
    "camelyon16": "training/ (tumor/, normal/, lesion_annotations/) and/or testing/ (images/, reference.csv), "
                  "or one of those folders",
    "camelyon17": "center_K/ (or centre_K/) folders of patient_NNN_node_M slides, with a stage CSV "
                  "(patient,stage) for training, or training/ and/or testing/ holding them",
}

ANNOTATION_FOLDER = "lesion_annotations"
ANNOTATION_SUFFIXES = (".xml", ".geojson", ".json")
SIZE_CLASSES = ("negative", "itc", "micro", "macro")
"""CAMELYON17 slide labels (and CAMELYON16 size classes, lower case, 'negative' for Normal)."""
PN_STAGES = ("pN0", "pN0(i+)", "pN1mi", "pN1", "pN2")

log = logging.getLogger("helpkit.layouts")

_CENTRE = re.compile(r"^cent(er|re)_?\d+$", re.IGNORECASE)


def _sub(folder: Path, name: str) -> Path | None:
    """The sub-folder ``name`` in any case (the exact spelling first), or None."""
    exact = folder / name
    if exact.is_dir():
        return exact
    if folder.is_dir():
        for path in sorted(folder.iterdir()):
            if path.is_dir() and path.name.lower() == name:
                return path
    return None


def _centres(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and _CENTRE.match(p.name)) if folder.is_dir() else []


def _slides(folder: Path) -> list[tuple[str, Path]]:
    """(slide_id, path) of the slides in ``folder`` by helpkit.data's one rule."""
    from helpkit.data import slide_sources

    return [(s.slide_id, s.paths[0]) for s in slide_sources(folder)]


def _stage_csv(folder: Path) -> Path | None:
    """``stage_labels.csv`` (or another ``*stage*.csv``) in ``folder``."""
    exact = folder / "stage_labels.csv"
    if exact.is_file():
        return exact
    found = sorted(p for p in folder.glob("*.csv") if "stage" in p.name.lower())
    return found[0] if found else None


def _reference_csv(folder: Path) -> Path | None:
    exact = folder / "reference.csv"
    return exact if exact.is_file() else None


# --- detection -----------------------------------------------------------------------------

@dataclass(frozen=True)
class Parts:
    """Where one layout keeps each part: train/test folders (None when absent), held-out labels."""

    layout: str
    train: Path | None
    test: Path | None
    labels: Path | None


def _c16_parts(root: Path) -> Parts | None:
    training, testing = _sub(root, "training"), _sub(root, "testing")
    if training is not None and (_sub(training, "tumor") or _sub(training, "normal")) or (
            testing is not None and _sub(testing, "images")):
        test = _sub(testing, "images") if testing is not None else None
        labels = (_reference_csv(testing) if testing is not None else None) or _reference_csv(root)
        train = training if training is not None and (_sub(training, "tumor") or _sub(training, "normal")) else None
        return Parts("camelyon16", train, test, labels)
    if _sub(root, "tumor") or _sub(root, "normal"):
        return Parts("camelyon16", root, None, None)
    if _sub(root, "images") and not (root / "image").is_dir():
        return Parts("camelyon16", None, _sub(root, "images"), _reference_csv(root))
    return None


def _c17_parts(root: Path) -> Parts | None:
    if _centres(root):
        if _stage_csv(root) is not None:
            return Parts("camelyon17", root, None, None)
        return Parts("camelyon17", None, root, None)
    training, testing = _sub(root, "training"), _sub(root, "testing")
    train = training if training is not None and _centres(training) else None
    test = testing if testing is not None and _centres(testing) else None
    if train is None and test is None:
        return None
    labels = _stage_csv(root) if test is not None else None  # held-out test stages beside the folders
    return Parts("camelyon17", train, test, labels)


def layout_parts(root: str | Path, layout: str | None = None) -> Parts:
    """The layout of ``root`` and where its parts are (``layout`` None or 'auto' detects).

    For the HeLP layout: ``train/``, ``test/`` and ``labels.csv``. A root in no layout (or
    not in the one asked for) is a HelpkitError saying what each layout expects.
    """
    root = Path(root).absolute()
    layout = None if layout in (None, "auto") else layout.lower()
    if layout is not None and layout not in LAYOUTS:
        raise HelpkitError(f"unknown layout {layout!r}: choose auto, {', '.join(LAYOUTS)}")
    if not root.is_dir():
        raise HelpkitError("data folder not found", root)
    for name, find in (("camelyon16", _c16_parts), ("camelyon17", _c17_parts)):
        if layout in (None, name):
            parts = find(root)
            if parts is not None:
                return parts
            if layout == name and _slides(root):  # a bare folder of slides: the test images
                return Parts(name, None, root, None)
    if layout in (None, "help") and _is_help(root):
        train = root / "train" if (root / "train").is_dir() else (root if (root / "image").is_dir() else None)
        test = root / "test" if (root / "test").is_dir() else (root if train is None else None)
        labels = root / "labels.csv" if (root / "labels.csv").is_file() else None
        return Parts("help", train, test, labels)
    wanted = [layout] if layout else list(LAYOUTS)
    raise HelpkitError("unknown layout: expected " + "; or ".join(f"{n}: {EXPECTED[n]}" for n in wanted), root)


def platform_folders(root: str | Path) -> tuple[Path, Path]:
    """(the folder the platform mounts as /data/train, the one it mounts as /data/test) of a
    competition root in any layout: ``train``/``test`` for HeLP, ``training``/``testing/images``
    for CAMELYON16, ``training``/``testing`` for CAMELYON17; ``root/train``, ``root/test`` when
    ``root`` is in no layout (the caller's checks then name what is missing)."""
    root = Path(root)
    try:
        parts = layout_parts(root)
    except HelpkitError:
        return root / "train", root / "test"
    return parts.train or root / "train", parts.test or root / "test"


def labels_file(root: str | Path) -> Path:
    """The held-out test labels of a competition root: ``labels.csv``, ``reference.csv`` or the
    test stage CSV (the HeLP ``labels.csv`` path when there is none)."""
    root = Path(root)
    try:
        labels = layout_parts(root).labels
    except HelpkitError:
        labels = None
    return labels or root / "labels.csv"


def nested_slide_ids(folder: str | Path) -> list[str]:
    """The ids of the slides in a CAMELYON17 folder's centre folders, sorted ([] when it has none)."""
    return sorted(slide_id for slide_id, _ in _c17_slides(Path(folder)))


def _is_help(root: Path) -> bool:
    return (root / "train").is_dir() or (root / "test").is_dir() or (root / "image").is_dir() or bool(_slides(root))


def detect_layout(root: str | Path, layout: str | None = None) -> str:
    """'help', 'camelyon16' or 'camelyon17' (see :func:`layout_parts`)."""
    return layout_parts(root, layout).layout


# --- records -------------------------------------------------------------------------------

def _annotation_for(folder: Path | None, slide_id: str) -> Path | None:
    if folder is None:
        return None
    for suffix in ANNOTATION_SUFFIXES:
        path = folder / f"{slide_id}{suffix}"
        if path.is_file():
            return path
    return None


def _record(slide_id: str, path: Path, split: str, label: int, mask: Path | None) -> dict:
    return {"slide_id": slide_id, "path": path, "split": split, "label": label, "mask_path": mask}


def _c16_train(training: Path) -> list[dict]:
    annotations = _sub(training, ANNOTATION_FOLDER)
    records = []
    for folder, label in (("tumor", 1), ("normal", 0)):
        sub = _sub(training, folder)
        for slide_id, path in _slides(sub) if sub is not None else []:
            records.append(_record(slide_id, path, "train", label, _annotation_for(annotations, slide_id)))
    if not records:
        raise HelpkitError("empty split: no slides in tumor/ or normal/", training)
    return records


def _test_records(folder: Path, slides: Iterable[tuple[str, Path]], required: bool) -> list[dict]:
    """Test slide records; an empty test folder is an error only when the test split was asked for."""
    records = [_record(slide_id, path, "test", -1, None) for slide_id, path in slides]
    if not records and required:
        raise HelpkitError("empty split: no slide files in the test folder", folder)
    return records


def _c17_slides(folder: Path) -> list[tuple[str, Path]]:
    return [s for centre in _centres(folder) for s in _slides(centre)]


def _c17_train(training: Path) -> list[dict]:
    csv_path = _stage_csv(training)
    if csv_path is None:
        raise HelpkitError("no stage CSV (stage_labels.csv: patient,stage) in the training folder", training)
    stages = read_stage_csv(csv_path).slides
    annotations = _sub(training, ANNOTATION_FOLDER)
    slides = dict(_c17_slides(training))
    unnamed = sorted(set(slides) - set(stages.index))
    if unnamed:
        raise HelpkitError(f"{len(unnamed)} slides have no row in the stage CSV, first {unnamed[0]!r}", csv_path)
    missing = sorted(set(stages.index) - set(slides))
    if missing:
        log.warning("%s: %d slides named in the stage CSV are not on disk (skipped), first %s",
                    csv_path, len(missing), missing[0])
    records = [_record(slide_id, path, "train", int(stages[slide_id] != "negative"),
                       _annotation_for(annotations, slide_id)) for slide_id, path in sorted(slides.items())]
    if not records:
        raise HelpkitError("empty split: no slides in the centre folders", training)
    return records


def _check_reference(reference: Path, test: Path) -> None:
    """Every slide reference.csv names is in the test folder, or a HelpkitError naming the file."""
    present = {slide_id.lower() for slide_id, _ in _slides(test)}
    named = read_reference(reference)
    missing = [s for s in named.index if s not in present]
    if missing:
        raise HelpkitError(f"names {len(missing)} slides that are not in {test.name}/, first {missing[0]!r}",
                           reference)


def layout_records(root: str | Path, split: str | None = None, layout: str | None = None) -> list[dict] | None:
    """Slide records of a CAMELYON folder (``helpkit.data.discover`` columns), or None when
    ``root`` is in the HeLP layout (and ``layout`` allows it)."""
    parts = layout_parts(root, layout)
    if parts.layout == "help":
        return None
    folders = {"train": parts.train, "test": parts.test}
    if split is not None:
        if folders.get(split) is None:
            raise HelpkitError(f"no {split} slides found ({parts.layout} layout)", Path(root).absolute())
        folders = {split: folders[split]}
    records: list[dict] = []
    if folders.get("train") is not None:
        records += _c16_train(folders["train"]) if parts.layout == "camelyon16" else _c17_train(folders["train"])
    if folders.get("test") is not None:
        test, required = folders["test"], split == "test" or folders.get("train") is None
        if parts.layout == "camelyon16":
            if parts.labels is not None:
                _check_reference(parts.labels, test)
            records += _test_records(test, _slides(test), required)
        else:
            records += _test_records(test, _c17_slides(test) if _centres(test) else _slides(test), required)
    return records


# --- labels --------------------------------------------------------------------------------

def _rows(path: Path) -> list[list[str]]:
    try:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            return [[c.strip() for c in row] for row in csv.reader(handle) if any(c.strip() for c in row)]
    except FileNotFoundError as err:
        raise HelpkitError("labels file not found", path) from err
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise HelpkitError(f"cannot read labels ({err})", path) from err


def _stem(name: str) -> str:
    return re.sub(r"\.(tif|tiff|zip|svs|ndpi|mrxs)$", "", name.strip(), flags=re.IGNORECASE)


def read_reference(path: str | Path) -> pd.DataFrame:
    """CAMELYON16 ``reference.csv``: no header, ``slide,Tumor|Normal[,size class[,...]]``.

    Returns a DataFrame indexed by slide id (lower case, no suffix) with ``label`` (1/0,
    int8) and ``size_class`` (lower case: itc, micro, macro; 'negative' for Normal; '' when
    the row has none). A header row ``slide,...``/``image,...`` is skipped.
    """
    path = Path(path)
    rows = _rows(path)
    if rows and rows[0][0].lower() in ("slide", "slide_id", "image", "name", "id"):
        rows = rows[1:]
    ids, labels, sizes = [], [], []
    for n, row in enumerate(rows, start=1):
        if len(row) < 2 or row[1].lower() not in ("tumor", "tumour", "normal"):
            raise HelpkitError(f"row {n}: expected slide,Tumor|Normal[,size class], got {','.join(row)!r}", path)
        slide_id = _stem(row[0]).lower()
        if slide_id in ids:
            raise HelpkitError(f"row {n}: duplicate slide {slide_id!r}", path)
        tumour = row[1].lower() != "normal"
        size = row[2].lower() if len(row) > 2 and row[2].lower() not in ("", "none", "nan") else ""
        if size and size not in SIZE_CLASSES:
            raise HelpkitError(f"row {n}: size class {row[2]!r} is not one of ITC, Micro, Macro", path)
        ids.append(slide_id)
        labels.append(int(tumour))
        sizes.append(size if tumour else "negative")
    if not ids:
        raise HelpkitError("no rows", path)
    return pd.DataFrame({"label": labels, "size_class": sizes},
                        index=pd.Index(ids, name="slide_id")).astype({"label": "int8"})


@dataclass(frozen=True)
class Stages:
    """A CAMELYON17 stage CSV: ``slides`` (slide id -> negative|itc|micro|macro) and
    ``patients`` (patient id -> pN stage)."""

    slides: pd.Series
    patients: pd.Series


def read_stage_csv(path: str | Path) -> Stages:
    """CAMELYON17 stage CSV: header ``patient,stage``; ``patient_NNN.zip,pN1`` rows for patients and
    ``patient_NNN_node_M.tif,micro`` rows for slides (suffixes dropped; any case)."""
    path = Path(path)
    rows = _rows(path)
    if not rows or [c.lower() for c in rows[0][:2]] != ["patient", "stage"]:
        raise HelpkitError(f"expected header patient,stage, got {','.join(rows[0]) if rows else 'nothing'}", path)
    slides: dict[str, str] = {}
    patients: dict[str, str] = {}
    stages_lower = {s.lower(): s for s in PN_STAGES}
    for n, row in enumerate(rows[1:], start=2):
        if len(row) < 2:
            raise HelpkitError(f"row {n}: expected name,stage, got {','.join(row)!r}", path)
        name, stage = _stem(row[0]), row[1].strip()
        target = slides if re.search(r"_node_\d+$", name, re.IGNORECASE) else patients
        if target is slides:
            if stage.lower() not in SIZE_CLASSES:
                raise HelpkitError(f"row {n}: slide stage {stage!r} is not negative, itc, micro or macro", path)
            stage = stage.lower()
        else:
            if stage.lower() not in stages_lower:
                raise HelpkitError(f"row {n}: patient stage {stage!r} is not one of {', '.join(PN_STAGES)}", path)
            stage = stages_lower[stage.lower()]
        if name in target:
            raise HelpkitError(f"row {n}: duplicate {name!r}", path)
        target[name] = stage
    return Stages(pd.Series(slides, dtype=object, name="stage").rename_axis("slide_id"),
                  pd.Series(patients, dtype=object, name="stage").rename_axis("patient"))


def read_layout_truth(path: str | Path) -> pd.DataFrame | None:
    """``label`` (1 tumour / 0 normal, int8) and ``size_class`` by slide id from a CAMELYON16
    ``reference.csv`` or a CAMELYON17 stage CSV; None when ``path`` is neither (``labels.csv``)."""
    path = Path(path)
    rows = _rows(path)[:2]
    if not rows:
        return None
    if [c.lower() for c in rows[0][:2]] == ["patient", "stage"]:
        slides = read_stage_csv(path).slides
        return pd.DataFrame({"label": (slides != "negative").astype("int8"), "size_class": slides})
    if any(len(r) >= 2 and r[1].lower() in ("tumor", "tumour", "normal") for r in rows):
        return read_reference(path)
    return None


def read_layout_labels(path: str | Path) -> pd.Series | None:
    """Binary slide labels (1 tumour / 0 normal, int8, by slide id) of :func:`read_layout_truth`."""
    truth = read_layout_truth(path)
    return None if truth is None else truth["label"]


# --- size classes and pN stage --------------------------------------------------------------

ITC_MAX_MM = 0.2
MICRO_MAX_MM = 2.0


def size_class(longest_mm: float) -> str:
    """CAMELYON size class of a deposit by its longest diameter: itc (<= 0.2 mm), micro
    (<= 2 mm), macro; 'negative' for no deposit (0)."""
    if longest_mm <= 0:
        return "negative"
    if longest_mm <= ITC_MAX_MM:
        return "itc"
    return "micro" if longest_mm <= MICRO_MAX_MM else "macro"


def pn_stage(node_classes: Iterable[str]) -> str:
    """A patient's pN stage from its nodes' classes (CAMELYON17 rules): pN0 no metastasis;
    pN0(i+) only ITC; pN1mi micro-metastases, no macro; pN1 1-3 positive nodes (micro or
    macro), at least one macro; pN2 4-9 positive nodes, at least one macro."""
    classes = [c.lower() for c in node_classes]
    macro, micro = classes.count("macro"), classes.count("micro")
    if macro == 0:
        if micro:
            return "pN1mi"
        return "pN0(i+)" if "itc" in classes else "pN0"
    return "pN1" if macro + micro <= 3 else "pN2"
