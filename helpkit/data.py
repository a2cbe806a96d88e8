"""The competition layout: which slides there are, their split, label and mask.

Accepted roots (the platform mounts ``/data/train`` and ``/data/test`` separately):

* a competition root holding ``train/`` and/or ``test/`` (the HeLP layout below);
* a train folder: it holds ``image/`` (``image/{positive,negative}/*``, masks in
  ``mask/{positive,negative}/<slide_id>.png``; class folders are matched in any case, and
  ``check_labels`` warns about one not in lower case);
* a test folder: it holds slide files directly.

Anything else is an unknown layout. Test labels are never read here: ``read_labels`` reads
``labels.csv`` (next to ``test/``) for local scoring only.

What counts as a slide in a folder is one rule, :func:`slide_sources` (its ids:
:func:`slide_ids`), used by discovery, so by the inference stage, and by the validator for
the ids it expects in ``output.csv``:

1. a visible file whose suffix OpenSlide opens (``SLIDE_EXTENSIONS``), other than ``.dcm``,
   is the slide named by its stem;
2. a visible sub-folder holding visible ``.dcm`` files is one DICOM slide named by the
   folder: OpenSlide opens the series from its first ``.dcm`` by name, the others beside it;
3. loose ``.dcm`` files sharing a DICOM Series Instance UID are one slide named by the stem
   of the first of them by name; a ``.dcm`` whose header names no series is a slide of its own;
4. nothing else is: hidden files, other files, folders without ``.dcm`` files (an ``.mrxs``
   slide's data folder).

Several sources with one id (``Slide018.svs`` and ``Slide018.tiff``) are one slide:
discovery keeps the first in name order that OpenSlide opens (the first, when none does)
and logs the others. So every id the rule names gets exactly one record, and an inference
stage exactly one row.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from helpkit.errors import HelpkitError
from helpkit.slide.reader import SlideReader, dicom_folder_file, is_slide_file

SLIDE_COLUMNS = ["slide_id", "path", "split", "label", "mask_path"]
CLASS_FOLDERS = {"positive": 1, "negative": 0}

log = logging.getLogger("helpkit.data")


@dataclass(frozen=True)
class SlideSource:
    """One slide of a folder by the rule of :func:`slide_sources`: its id and the files that
    may hold it (each one OpenSlide would be given), in name order of the entries they came from."""

    slide_id: str
    paths: tuple[Path, ...]


def _dicom_series(path: Path) -> str | None:
    """The Series Instance UID in a DICOM file's header, or None (no series, not DICOM)."""
    import pydicom

    try:
        header = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID"])
    except Exception:  # noqa: BLE001 - any unreadable header only means the file is a slide of its own
        return None
    uid = header.get("SeriesInstanceUID")
    return str(uid) if uid else None


def slide_sources(folder: str | Path) -> list[SlideSource]:
    """The slides directly in ``folder`` by the one rule (module docstring), sorted by id.

    Opens no slide; reads only the headers of loose ``.dcm`` files. A missing folder has none.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found: dict[str, list[tuple[str, Path]]] = {}
    series: dict[str, list[Path]] = {}
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.startswith("."):
            continue
        if entry.is_dir():
            first = dicom_folder_file(entry)
            if first is not None:
                found.setdefault(entry.name, []).append((entry.name, first))
        elif is_slide_file(entry):
            if entry.suffix.lower() == ".dcm":
                series.setdefault(_dicom_series(entry) or f"file:{entry.name}", []).append(entry)
            else:
                found.setdefault(entry.stem, []).append((entry.name, entry))
    for files in series.values():
        found.setdefault(files[0].stem, []).append((files[0].name, files[0]))
    return [SlideSource(slide_id, tuple(path for _, path in sorted(entries)))
            for slide_id, entries in sorted(found.items())]


def slide_ids(folder: str | Path) -> list[str]:
    """The ids of the slides directly in ``folder`` (a test folder, a class folder), sorted:
    the ids an inference stage must write one row each for. Opens no slide."""
    return [source.slide_id for source in slide_sources(folder)]


def _pick(source: SlideSource) -> Path:
    """The file a record of ``source`` reads: the first that OpenSlide opens; duplicates logged."""
    if len(source.paths) == 1:
        return source.paths[0]
    failed: list[str] = []
    chosen = None
    for path in source.paths:
        try:
            SlideReader(path).close()
        except HelpkitError as err:
            failed.append(f"{path.name} ({err.message})")
            continue
        chosen = path
        break
    if chosen is None:
        chosen = source.paths[0]
        log.warning("%s: duplicate slide id %r and none of its files opens: %s; using %s",
                    chosen.parent, source.slide_id, "; ".join(failed), chosen.name)
        return chosen
    others = [p.name for p in source.paths if p != chosen]
    log.warning("%s: duplicate slide id %r: using %s, ignoring %s%s", chosen.parent, source.slide_id, chosen.name,
                ", ".join(others), f" (could not open: {'; '.join(failed)})" if failed else "")
    return chosen


def _folders_named(parent: Path, name: str) -> list[Path]:
    """The sub-folders of ``parent`` named ``name`` in any case, the exact spelling first."""
    if not parent.is_dir():
        return []
    return sorted((p for p in parent.iterdir() if p.is_dir() and p.name.lower() == name),
                  key=lambda p: (p.name != name, p.name))


def _find_mask(train: Path, folder: str, slide_id: str) -> Path | None:
    """``mask/<folder>/<slide_id>.png``, the folder and the file name matched in any case."""
    want = f"{slide_id}.png".lower()
    for masks in _folders_named(train / "mask", folder):
        exact = masks / f"{slide_id}.png"
        if exact.is_file():
            return exact
        for path in sorted(masks.iterdir()):
            if path.name.lower() == want and path.is_file():
                return path
    return None


def _train_records(train: Path) -> list[dict]:
    image = train / "image"
    if not image.is_dir():
        raise HelpkitError("unknown layout: a train folder must hold image/{positive,negative}/", train)
    by_class: dict[str, dict[str, list[Path]]] = {}
    for folder in CLASS_FOLDERS:
        sources = by_class.setdefault(folder, {})
        for class_dir in _folders_named(image, folder):  # positive/ and Positive/ are one class
            for source in slide_sources(class_dir):
                sources.setdefault(source.slide_id, []).extend(source.paths)
    both = sorted(set(by_class["positive"]) & set(by_class["negative"]))
    if both:
        raise HelpkitError(f"slide id {both[0]!r} is in both positive and negative "
                           f"({by_class['positive'][both[0]][0]}, {by_class['negative'][both[0]][0]})", image)
    records = []
    for folder, label in CLASS_FOLDERS.items():
        for slide_id, paths in sorted(by_class[folder].items()):
            records.append({"slide_id": slide_id, "path": _pick(SlideSource(slide_id, tuple(paths))),
                            "split": "train", "label": label, "mask_path": _find_mask(train, folder, slide_id)})
    if not records:
        raise HelpkitError("empty split: no slides in image/positive or image/negative", train)
    return records


def _test_records(test: Path, required: bool) -> list[dict]:
    """Test slide records; an empty test folder is an error only when the test split was asked
    for (a competition whose test/ is still empty trains fine)."""
    records = [{"slide_id": s.slide_id, "path": _pick(s), "split": "test", "label": -1, "mask_path": None}
               for s in slide_sources(test)]
    if not records and required:
        raise HelpkitError("empty split: no slide files in the test folder", test)
    return records


def _split_folders(root: Path) -> dict[str, Path]:
    """Which folder holds each split under ``root`` (the layouts of the module docstring)."""
    if (root / "train").is_dir() or (root / "test").is_dir():
        return {split: root / split for split in ("train", "test") if (root / split).is_dir()}
    if (root / "image").is_dir():
        return {"train": root}
    if slide_sources(root):
        return {"test": root}
    raise HelpkitError(
        "unknown layout: expected train/ or test/, a train folder with image/, or slide files", root
    )


def discover(root: str | Path, split: str | None = None, layout: str | None = None) -> pd.DataFrame:
    """Slide records under ``root``: slide_id, path, split ('train'|'test'), label, mask_path.

    With ``split``, only that split's records (the other split is not even looked at), and
    a HelpkitError if ``root`` has none.

    label is 1 (positive), 0 (negative) or -1 (unknown, every test slide); mask_path is
    None where there is no mask (a positive slide without one is :func:`check_labels`'
    business, not an error here). Paths are absolute, so a patch index written from them
    reads the same from any working directory. One record per slide id (the rule of the
    module docstring; duplicate files of an id are logged). Raises HelpkitError naming the
    file for an id in both class folders or in both splits, an empty split or an unknown
    layout.
    """
    root = Path(root).absolute()
    if not root.is_dir():
        raise HelpkitError("data folder not found", root)
    from helpkit.layouts import layout_records  # CAMELYON16/17 first; ``layout`` None detects

    found = layout_records(root, split, layout)
    if found is not None:
        return pd.DataFrame.from_records(found, columns=SLIDE_COLUMNS).astype({"label": "int8"})
    folders = _split_folders(root)
    if split is not None:
        if split not in folders:
            raise HelpkitError(f"no {split} slides found", root)
        folders = {split: folders[split]}
    records = []
    if "train" in folders:
        records += _train_records(folders["train"])
    if "test" in folders:
        records += _test_records(folders["test"], required=split == "test" or "train" not in folders)
    seen: dict[str, Path] = {}
    for record in records:
        first = seen.setdefault(record["slide_id"], record["path"])
        if first != record["path"]:
            raise HelpkitError(f"duplicate slide id {record['slide_id']!r} in train and test (also {first})",
                               record["path"])
    return pd.DataFrame.from_records(records, columns=SLIDE_COLUMNS).astype({"label": "int8"})


def _class_folder(path: Path) -> Path | None:
    """The class folder a training slide was found in (``.../image/<class>``, as spelled)."""
    parts = path.parts
    for i in range(len(parts) - 2, 0, -1):
        if parts[i].lower() in CLASS_FOLDERS and parts[i - 1] == "image":
            return Path(*parts[: i + 1])
    return None


def _marks_tumour(mask_path: Path, slide_path: Path) -> bool | None:
    """Whether a mask marks any tumour; None when the slide cannot be opened (the patch index
    skips and reports such a slide itself). A mask that cannot be read raises HelpkitError."""
    from helpkit.slide.annotation import read_annotation

    try:
        with SlideReader(slide_path) as reader:
            dimensions = reader.dimensions
    except HelpkitError:
        return None
    return read_annotation(mask_path, dimensions).has_tumour()


def label_problems(slides: pd.DataFrame) -> tuple[list[str], set[str]]:
    """(warnings, excluded slide ids) of the training records of ``slides``: see :func:`check_labels`."""
    warnings: list[str] = []
    excluded: set[str] = set()
    said: set[Path] = set()
    for record in slides[slides["split"] == "train"].itertuples():
        path, label = Path(record.path), int(record.label)
        folder = _class_folder(path)
        if folder is not None and folder.name != folder.name.lower() and folder not in said:
            said.add(folder)
            warnings.append(f"{folder}: class folder {folder.name!r} is not lower case; its slides are "
                            f"trained as {folder.name.lower()}")
        mask = None if record.mask_path is None or pd.isna(record.mask_path) else Path(record.mask_path)
        if mask is None:
            if label == 1:
                warnings.append(f"{path}: positive slide has no tumour mask (mask/positive/{record.slide_id}.png); "
                                "slide excluded from training")
                excluded.add(record.slide_id)
            continue
        try:
            tumour = _marks_tumour(mask, path)
        except HelpkitError as err:
            warnings.append(f"{mask}: {err.message}; slide {record.slide_id} excluded from training")
            excluded.add(record.slide_id)
            continue
        if tumour is False and label == 1:
            warnings.append(f"{mask}: the mask of positive slide {record.slide_id} marks no tumour; "
                            "slide excluded from training (its tumour would train as normal)")
            excluded.add(record.slide_id)
        elif tumour is True and label == 0:
            warnings.append(f"{mask}: the mask of negative slide {record.slide_id} marks tumour; "
                            "slide excluded from training (a negative slide has none)")
            excluded.add(record.slide_id)
    return warnings, excluded


def check_labels(slides: pd.DataFrame, strict: bool = False) -> pd.DataFrame:
    """The records of ``slides`` (from :func:`discover`) fit to train on, each label problem
    of a training slide logged as a warning naming the file and what was done.

    The one check of ``helpkit index``, ``helpkit train --data`` and the train stage:

    * a class folder not in lower case (``Positive``): its slides are trained as the folder
      says, once warned;
    * a positive slide without a mask, or whose mask marks no tumour: excluded (its tumour
      would train as normal);
    * a negative slide whose mask marks tumour: excluded (it would train as tumour);
    * a mask that cannot be read, or does not fit its slide: excluded.

    Excluded slides are left out of the returned table (so of the patch index and the folds).
    Test records pass unchecked. With ``strict`` any problem is a HelpkitError instead,
    listing them all.
    """
    warnings, excluded = label_problems(slides)
    if strict and warnings:
        raise HelpkitError(f"{len(warnings)} training label problem(s) (--strict): {' | '.join(warnings)}")
    for warning in warnings:
        log.warning("%s", warning)
    return slides[~slides["slide_id"].isin(excluded)].reset_index(drop=True)


LABEL_COLUMNS = ["slide_id", "label"]
"""The header of a HeLP ``labels.csv``; a third column ``size_class`` (CAMELYON's classes of the
largest deposit: negative, itc, micro, macro) is optional, as helpkit's synthetic labels carry it."""


def _labels_table(path: Path) -> pd.DataFrame:
    """``labels.csv`` checked: the header, unique ids, labels 0/1 and, if present, size classes."""
    try:
        table = pd.read_csv(path, dtype={"slide_id": str, "size_class": str}, keep_default_na=False)
    except FileNotFoundError as err:
        raise HelpkitError("labels file not found", path) from err
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise HelpkitError(f"cannot parse labels ({err})", path) from err
    if list(table.columns) not in (LABEL_COLUMNS, [*LABEL_COLUMNS, "size_class"]):
        raise HelpkitError(f"expected header slide_id,label[,size_class], got {','.join(map(str, table.columns))}",
                           path)
    duplicated = table["slide_id"][table["slide_id"].duplicated()]
    if len(duplicated):
        raise HelpkitError(f"duplicate slide id {duplicated.iloc[0]!r}", path)
    label = pd.to_numeric(table["label"], errors="coerce")
    bad = ~label.isin([0, 1])
    if bad.any():
        row = int(bad.to_numpy().argmax())
        raise HelpkitError(f"row {row + 2}: label must be 0 or 1, got {table['label'].iloc[row]!r}", path)
    table["label"] = label.astype("int8")
    if "size_class" in table:
        from helpkit.layouts import SIZE_CLASSES

        bad = ~table["size_class"].isin(SIZE_CLASSES)
        if bad.any():
            row = int(bad.to_numpy().argmax())
            raise HelpkitError(f"row {row + 2}: size_class must be one of {', '.join(SIZE_CLASSES)}, "
                               f"got {table['size_class'].iloc[row]!r}", path)
    return table.set_index("slide_id")


def read_labels(path: str | Path) -> pd.Series:
    """``labels.csv`` (header ``slide_id,label[,size_class]``; labels 0 or 1) as a Series indexed
    by slide_id; a CAMELYON16 ``reference.csv`` or CAMELYON17 stage CSV is read as such
    (helpkit.layouts)."""
    path = Path(path)
    from helpkit.layouts import read_layout_labels

    layout_labels = read_layout_labels(path) if path.is_file() else None
    if layout_labels is not None:
        return layout_labels
    return _labels_table(path)["label"]


def read_size_classes(path: str | Path) -> pd.Series:
    """The size class of each slide's largest deposit (negative, itc, micro, macro) from
    ``labels.csv``'s ``size_class`` column, a CAMELYON16 ``reference.csv`` or a CAMELYON17 stage
    CSV; an empty Series when the file carries none."""
    path = Path(path)
    from helpkit.layouts import read_layout_truth

    truth = read_layout_truth(path) if path.is_file() else None
    if truth is not None:
        return truth["size_class"]
    table = _labels_table(path)
    return table["size_class"] if "size_class" in table else pd.Series(dtype=str, name="size_class")
