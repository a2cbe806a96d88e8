"""Competition layout discovery and labels.csv."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpkit.data import discover, read_labels
from helpkit.errors import HelpkitError


def touch(path: Path, text: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    """A HeLP layout of empty files: discovery never opens a slide."""
    train = tmp_path / "train"
    touch(train / "image/positive/Slide001.mrxs")
    touch(train / "image/positive/Slide001/Data0000.dat")  # MRXS companion folder
    touch(train / "mask/positive/Slide001.png")
    touch(train / "image/positive/Slide002.svs")
    touch(train / "mask/positive/Slide002.png")
    touch(train / "image/negative/Slide003.tiff")
    touch(train / "mask/negative/Slide003.png")
    touch(train / "image/negative/Slide004.ndpi")  # negative without a mask: fine
    touch(train / "image/negative/.Slide005.tiff")  # hidden
    touch(train / "image/negative/notes.txt")
    touch(tmp_path / "test/Slide010.mrxs")
    (tmp_path / "test/Slide010").mkdir()
    touch(tmp_path / "test/Slide011.TIF")
    touch(tmp_path / "labels.csv", "slide_id,label\nSlide010,1\nSlide011,0\n")
    return tmp_path


def test_full_layout(layout: Path) -> None:
    slides = discover(layout)
    assert list(slides.columns) == ["slide_id", "path", "split", "label", "mask_path"]
    assert list(slides["slide_id"]) == ["Slide001", "Slide002", "Slide003", "Slide004", "Slide010", "Slide011"]
    assert list(slides["split"]) == ["train"] * 4 + ["test"] * 2
    assert list(slides["label"]) == [1, 1, 0, 0, -1, -1]
    by_id = slides.set_index("slide_id")
    assert by_id.loc["Slide001", "path"] == layout / "train/image/positive/Slide001.mrxs"
    assert by_id.loc["Slide003", "mask_path"] == layout / "train/mask/negative/Slide003.png"
    assert by_id.loc["Slide004", "mask_path"] is None
    assert by_id.loc["Slide011", "path"] == layout / "test/Slide011.TIF"


def test_train_or_test_folder_as_root(layout: Path) -> None:
    train = discover(layout / "train")
    assert set(train["split"]) == {"train"} and len(train) == 4
    test = discover(layout / "test")
    assert list(test["slide_id"]) == ["Slide010", "Slide011"] and set(test["label"]) == {-1}


def test_one_split_and_a_root_without_it(layout: Path) -> None:
    test = discover(layout, "test")
    assert list(test["slide_id"]) == ["Slide010", "Slide011"] and list(test.index) == [0, 1]
    assert list(discover(layout, "train")["slide_id"]) == ["Slide001", "Slide002", "Slide003", "Slide004"]
    with pytest.raises(HelpkitError, match="no train slides found") as err:
        discover(layout / "test", "train")
    assert err.value.path == (layout / "test").absolute()


def test_positive_slide_without_mask(layout: Path) -> None:
    (layout / "train/mask/positive/Slide002.png").unlink()
    with pytest.raises(HelpkitError, match="positive slide has no mask") as info:
        discover(layout)
    assert info.value.path == layout / "train/image/positive/Slide002.svs"


def test_duplicate_slide_id(layout: Path) -> None:
    touch(layout / "test/Slide003.svs")
    with pytest.raises(HelpkitError, match="duplicate slide id 'Slide003'") as info:
        discover(layout)
    assert info.value.path == layout / "test/Slide003.svs"


@pytest.mark.parametrize("folder", ["train", "test"])
def test_empty_split(tmp_path: Path, folder: str) -> None:
    (tmp_path / folder / "image/positive").mkdir(parents=True)
    with pytest.raises(HelpkitError, match="empty split") as info:
        discover(tmp_path)
    assert info.value.path == tmp_path / folder


def test_unknown_layout(tmp_path: Path) -> None:
    touch(tmp_path / "slides/Slide001.tiff")
    with pytest.raises(HelpkitError, match="unknown layout") as info:
        discover(tmp_path)
    assert info.value.path == tmp_path
    with pytest.raises(HelpkitError, match="not found"):
        discover(tmp_path / "missing")


def test_read_labels(layout: Path) -> None:
    labels = read_labels(layout / "labels.csv")
    assert labels.to_dict() == {"Slide010": 1, "Slide011": 0}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("id,label\nSlide1,1\n", "expected header slide_id,label"),
        ("slide_id,label\nSlide1,1\nSlide2,2\n", "row 3: label must be 0 or 1"),
        ("slide_id,label\nSlide1,1\nSlide1,0\n", "duplicate slide id 'Slide1'"),
    ],
)
def test_bad_labels(tmp_path: Path, text: str, message: str) -> None:
    path = touch(tmp_path / "labels.csv", text)
    with pytest.raises(HelpkitError, match=message) as info:
        read_labels(path)
    assert info.value.path == path


def test_paths_are_absolute(layout: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(layout)
    slides = discover("test")
    assert all(Path(p).is_absolute() for p in slides["path"])
    assert slides["path"].iloc[0] == layout / "test/Slide010.mrxs"
