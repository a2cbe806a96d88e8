"""Competition layout discovery and labels.csv."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from helpkit.data import check_labels, discover, read_labels, read_size_classes, slide_ids
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


def test_positive_slide_without_mask_is_found_then_checked(layout: Path, caplog: pytest.LogCaptureFixture) -> None:
    (layout / "train/mask/positive/Slide002.png").unlink()
    slides = discover(layout, "train")
    assert slides.set_index("slide_id").loc["Slide002", "mask_path"] is None
    kept = check_labels(slides)
    assert "Slide002" not in set(kept["slide_id"])
    assert "Slide002.svs: positive slide has no tumour mask" in caplog.text
    assert "slide excluded from training" in caplog.text
    with pytest.raises(HelpkitError, match="positive slide has no tumour mask"):
        check_labels(slides, strict=True)


def test_same_id_in_train_and_test(layout: Path) -> None:
    touch(layout / "test/Slide003.svs")
    with pytest.raises(HelpkitError, match="duplicate slide id 'Slide003' in train and test") as info:
        discover(layout)
    assert info.value.path == layout / "test/Slide003.svs"
    assert "Slide003" in set(discover(layout, "test")["slide_id"])  # one split alone is fine


def test_same_id_in_both_classes(layout: Path) -> None:
    touch(layout / "train/image/negative/Slide001.tiff")
    with pytest.raises(HelpkitError, match="'Slide001' is in both positive and negative"):
        discover(layout, "train")


@pytest.mark.parametrize("folder", ["train", "test"])
def test_empty_split(tmp_path: Path, folder: str) -> None:
    (tmp_path / folder / "image/positive").mkdir(parents=True)
    with pytest.raises(HelpkitError, match="empty split") as info:
        discover(tmp_path)
    assert info.value.path == tmp_path / folder


def test_empty_test_folder_beside_train_is_no_test_slides(layout: Path) -> None:
    """A competition whose test/ is still empty trains (the platform mounts it empty in phase 1)."""
    shutil.rmtree(layout / "test")
    (layout / "test").mkdir()
    slides = discover(layout)
    assert set(slides["split"]) == {"train"} and len(slides) == 4
    assert len(discover(layout, "train")) == 4
    with pytest.raises(HelpkitError, match="empty split: no slide files in the test folder"):
        discover(layout, "test")


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


def test_labels_with_size_classes(tmp_path: Path) -> None:
    path = touch(tmp_path / "labels.csv", "slide_id,label,size_class\nA,1,micro\nB,0,negative\nC,1,itc\n")
    assert read_labels(path).to_dict() == {"A": 1, "B": 0, "C": 1}
    assert read_size_classes(path).to_dict() == {"A": "micro", "B": "negative", "C": "itc"}
    assert read_size_classes(touch(tmp_path / "plain.csv", "slide_id,label\nA,1\n")).empty
    reference = touch(tmp_path / "reference.csv", "test_001,Tumor,Macro\ntest_002,Normal\n")
    assert read_size_classes(reference).to_dict() == {"test_001": "macro", "test_002": "negative"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("id,label\nSlide1,1\n", "expected header slide_id,label"),
        ("slide_id,label,size_class\nSlide1,1,huge\n", "row 2: size_class must be one of negative"),
        ("slide_id,label\nSlide1,\n", "row 2: label must be 0 or 1"),
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


# ---- the one rule for what a slide is, on real (small) slide files -----------------------

@pytest.fixture(scope="module")
def real_slide(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A 1024-pixel positive synthetic slide (pyramidal TIFF) and its tumour mask."""
    from helpkit.synth import make_slide

    out = tmp_path_factory.mktemp("real_slide")
    make_slide(out / "slide.tiff", 1024, seed=3, positive=True, mask_path=out / "mask.png")
    return out / "slide.tiff", out / "mask.png"


def copy(source: Path, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(source, target)
    return target


def dicom_image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)


def test_duplicate_stems_keep_the_first_file_that_opens(
    tmp_path: Path, real_slide: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    test = tmp_path / "test"
    touch(test / "Slide018.svs", "not a slide")  # first by name, but OpenSlide can't open it
    copy(real_slide[0], test / "Slide018.tiff")
    copy(real_slide[0], test / "Slide019.svs")  # both open: the first by name wins
    copy(real_slide[0], test / "Slide019.tiff")
    slides = discover(test, "test")
    assert list(slides["slide_id"]) == ["Slide018", "Slide019"] == slide_ids(test)
    assert list(slides["path"]) == [test / "Slide018.tiff", test / "Slide019.svs"]
    assert "duplicate slide id 'Slide018': using Slide018.tiff, ignoring Slide018.svs (could not open" in caplog.text
    assert "duplicate slide id 'Slide019': using Slide019.svs, ignoring Slide019.tiff" in caplog.text


def test_duplicate_stems_none_opens_still_one_record(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    touch(tmp_path / "x.svs", "garbage")
    touch(tmp_path / "x.tif", "garbage")
    slides = discover(tmp_path)
    assert list(slides["slide_id"]) == ["x"] and slides["path"][0] == tmp_path / "x.svs"
    assert "none of its files opens" in caplog.text


def test_dicom_folder_and_loose_series_are_one_slide_each(tmp_path: Path, real_slide: tuple[Path, Path]) -> None:
    from helpkit.slide import SlideReader
    from helpkit.synth.dicom import write_dicom_slide

    test = tmp_path / "test"
    copy(real_slide[0], test / "Slide001.tiff")
    write_dicom_slide(test / "Slide002", dicom_image(), levels=2)  # a folder: one slide
    write_dicom_slide(test, dicom_image(), levels=2, stem="Slide003")  # loose files of one series
    write_dicom_slide(test, dicom_image()[:200], levels=2, stem="Slide004")  # another series
    touch(test / "Slide005.dcm", "not DICOM")  # a slide of its own, that will not open
    (test / "Slide001").mkdir()  # a folder without .dcm files: not a slide
    touch(test / "Slide001/Data0000.dat")
    slides = discover(test, "test")
    assert list(slides["slide_id"]) == ["Slide001", "Slide002", "Slide003_0", "Slide004_0", "Slide005"]
    assert list(slides["slide_id"]) == slide_ids(test)
    by_id = slides.set_index("slide_id")["path"]
    assert by_id["Slide002"] == test / "Slide002/level_0.dcm"
    for slide_id, height in (("Slide002", 300), ("Slide003_0", 300), ("Slide004_0", 200)):
        with SlideReader(by_id[slide_id]) as reader:
            assert reader.level_count == 2 and reader.dimensions == (400, height)
            assert reader.mpp == (0.25, 0.25)
    with SlideReader(test / "Slide002") as reader:  # the folder itself opens too
        assert reader.slide_id == "Slide002" and reader.level_count == 2
        assert np.array_equal(reader.read_region((0, 0), 0, (400, 300)), dicom_image())


def make_train(root: Path, real_slide: tuple[Path, Path], layout: dict[str, tuple[str, str | None]]) -> Path:
    """train/image/<folder>/<id>.tiff with masks: layout maps id -> (class folder, mask kind)."""
    from PIL import Image

    slide, mask = real_slide
    size = Image.open(mask).size
    for slide_id, (folder, kind) in layout.items():
        copy(slide, root / "train/image" / folder / f"{slide_id}.tiff")
        target = root / "train/mask" / folder / f"{slide_id}.png"
        if kind == "tumour":
            copy(mask, target)
        elif kind == "empty":
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.new("L", size, 0).save(target)
    return root / "train"


def test_label_checks_warn_exclude_and_strict(
    tmp_path: Path, real_slide: tuple[Path, Path], caplog: pytest.LogCaptureFixture
) -> None:
    train = make_train(tmp_path, real_slide, {
        "Slide001": ("positive", "tumour"),  # fine
        "Slide002": ("positive", "empty"),  # positive, mask all zero: excluded
        "Slide003": ("negative", "tumour"),  # negative, mask marks tumour: excluded
        "Slide004": ("negative", None),  # fine
        "Slide005": ("Positive", "tumour"),  # wrong case: trained as positive, warned once
        "Slide006": ("Positive", "tumour"),
    })
    slides = discover(train)
    assert list(slides["slide_id"]) == [f"Slide00{k}" for k in (1, 2, 5, 6, 3, 4)]
    assert list(slides["label"]) == [1, 1, 1, 1, 0, 0]
    assert slides.set_index("slide_id").loc["Slide005", "mask_path"] == train / "mask/Positive/Slide005.png"
    kept = check_labels(slides)
    assert list(kept["slide_id"]) == ["Slide001", "Slide005", "Slide006", "Slide004"]
    lines = [r.getMessage() for r in caplog.records if r.name == "helpkit.data"]
    assert len(lines) == 3
    assert any(line.startswith(f"{train / 'image/Positive'}: class folder 'Positive' is not lower case")
               and "trained as positive" in line for line in lines)
    assert any(line.startswith(f"{train / 'mask/positive/Slide002.png'}: the mask of positive slide Slide002 "
                               "marks no tumour; slide excluded") for line in lines)
    assert any(line.startswith(f"{train / 'mask/negative/Slide003.png'}: the mask of negative slide Slide003 "
                               "marks tumour; slide excluded") for line in lines)
    with pytest.raises(HelpkitError, match=r"3 training label problem\(s\) \(--strict\)"):
        check_labels(slides, strict=True)
    clean = slides[slides["slide_id"].isin(["Slide001", "Slide004"])]
    assert check_labels(clean, strict=True).equals(clean.reset_index(drop=True))


def test_a_folder_without_dicom_is_not_a_slide(tmp_path: Path) -> None:
    from helpkit.slide import SlideReader

    touch(tmp_path / "Slide001/Data0000.dat")
    with pytest.raises(HelpkitError, match="a folder is one only when it holds a DICOM series") as info:
        SlideReader(tmp_path / "Slide001")
    assert info.value.path == tmp_path / "Slide001"
    assert slide_ids(tmp_path) == []
