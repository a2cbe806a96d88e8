"""The competition layout: which slides there are, their split, label and mask.

Accepted roots (the platform mounts ``/data/train`` and ``/data/test`` separately):

* a competition root holding ``train/`` and/or ``test/`` (the HeLP layout below);
* a train folder: it holds ``image/`` (``image/{positive,negative}/*``, masks in
  ``mask/{positive,negative}/<slide_id>.png``);
* a test folder: it holds slide files directly.

Anything else is an unknown layout. A slide is a visible file with a suffix OpenSlide
opens; folders (an ``.mrxs`` slide's companion data folder) and hidden files are not.
Test labels are never read here: ``read_labels`` reads ``labels.csv`` (next to ``test/``)
for local scoring only.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from helpkit.errors import HelpkitError
from helpkit.slide.reader import is_slide_file

SLIDE_COLUMNS = ["slide_id", "path", "split", "label", "mask_path"]
CLASS_FOLDERS = {"positive": 1, "negative": 0}


def _slides_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if is_slide_file(p)) if folder.is_dir() else []


def _train_records(train: Path) -> list[dict]:
    image = train / "image"
    if not image.is_dir():
        raise HelpkitError("unknown layout: a train folder must hold image/{positive,negative}/", train)
    records = []
    for folder, label in CLASS_FOLDERS.items():
        for path in _slides_in(image / folder):
            mask = train / "mask" / folder / f"{path.stem}.png"
            if not mask.is_file():
                if label == 1:
                    raise HelpkitError(f"positive slide has no mask (expected {mask})", path)
                mask = None
            records.append({"slide_id": path.stem, "path": path, "split": "train", "label": label,
                            "mask_path": mask})
    if not records:
        raise HelpkitError("empty split: no slides in image/positive or image/negative", train)
    return records


def _test_records(test: Path) -> list[dict]:
    records = [{"slide_id": p.stem, "path": p, "split": "test", "label": -1, "mask_path": None}
               for p in _slides_in(test)]
    if not records:
        raise HelpkitError("empty split: no slide files in the test folder", test)
    return records


def discover(root: str | Path, split: str | None = None) -> pd.DataFrame:
    """Slide records under ``root``: slide_id, path, split ('train'|'test'), label, mask_path.

    With ``split``, only that split's records, and a HelpkitError if ``root`` has none.

    label is 1 (positive), 0 (negative) or -1 (unknown, every test slide); mask_path is
    None where there is no mask. Paths are absolute, so a patch index written from them
    reads the same from any working directory. Raises HelpkitError naming the file for a positive slide
    without a mask, duplicate slide ids, an empty split or an unknown layout.
    """
    root = Path(root).absolute()
    if not root.is_dir():
        raise HelpkitError("data folder not found", root)
    if (root / "train").is_dir() or (root / "test").is_dir():
        records = []
        if (root / "train").is_dir():
            records += _train_records(root / "train")
        if (root / "test").is_dir():
            records += _test_records(root / "test")
    elif (root / "image").is_dir():
        records = _train_records(root)
    elif _slides_in(root):
        records = _test_records(root)
    else:
        raise HelpkitError(
            "unknown layout: expected train/ or test/, a train folder with image/, or slide files", root
        )
    seen: dict[str, Path] = {}
    for record in records:
        first = seen.setdefault(record["slide_id"], record["path"])
        if first != record["path"]:
            raise HelpkitError(f"duplicate slide id {record['slide_id']!r} (also {first})", record["path"])
    table = pd.DataFrame.from_records(records, columns=SLIDE_COLUMNS).astype({"label": "int8"})
    if split is None:
        return table
    table = table[table["split"] == split].reset_index(drop=True)
    if table.empty:
        raise HelpkitError(f"no {split} slides found", root)
    return table


def read_labels(path: str | Path) -> pd.Series:
    """``labels.csv`` (header ``slide_id,label``; labels 0 or 1) as a Series indexed by slide_id."""
    path = Path(path)
    try:
        table = pd.read_csv(path, dtype={"slide_id": str})
    except FileNotFoundError as err:
        raise HelpkitError("labels file not found", path) from err
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise HelpkitError(f"cannot parse labels ({err})", path) from err
    if list(table.columns) != ["slide_id", "label"]:
        raise HelpkitError(f"expected header slide_id,label, got {','.join(map(str, table.columns))}", path)
    duplicated = table["slide_id"][table["slide_id"].duplicated()]
    if len(duplicated):
        raise HelpkitError(f"duplicate slide id {duplicated.iloc[0]!r}", path)
    bad = ~table["label"].isin([0, 1])
    if bad.any():
        row = int(bad.to_numpy().argmax())
        raise HelpkitError(f"row {row + 2}: label must be 0 or 1, got {table['label'].iloc[row]!r}", path)
    return table.set_index("slide_id")["label"].astype("int8")
