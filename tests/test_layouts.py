"""CAMELYON16 and CAMELYON17 layouts: detection, records, held-out labels, bad input.

Slide files here are empty: discovery never opens a slide."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpkit.data import discover, read_labels
from helpkit.errors import HelpkitError
from helpkit.layouts import (
    detect_layout,
    layout_parts,
    pn_stage,
    read_reference,
    read_stage_csv,
    size_class,
)


def _touch(root: Path, *names: str) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"")


@pytest.fixture
def c16(tmp_path: Path) -> Path:
    root = tmp_path / "CAMELYON16"
    _touch(root, "training/tumor/tumor_001.tif", "training/tumor/tumor_002.tif", "training/normal/normal_001.tif",
           "training/lesion_annotations/tumor_001.xml", "training/lesion_annotations/tumor_002.xml",
           "testing/images/test_001.tif", "testing/images/test_002.tif", "testing/lesion_annotations/test_001.xml")
    (root / "testing/reference.csv").write_text("Test_001,Tumor,Micro,Primary\ntest_002,Normal,None\n")
    return root


@pytest.fixture
def c17(tmp_path: Path) -> Path:
    root = tmp_path / "CAMELYON17"
    _touch(root, *[f"training/center_{p // 2}/patient_{p:03d}_node_{n}.tif" for p in range(3) for n in range(2)],
           "training/lesion_annotations/patient_000_node_1.xml", "testing/centre_3/patient_100_node_0.tif")
    rows = ["patient,stage", "patient_000.zip,pN1mi", "patient_000_node_0.tif,negative",
            "patient_000_node_1.tif,micro", "patient_001.zip,pN0(i+)", "patient_001_node_0.tif,itc",
            "patient_001_node_1.tif,negative", "patient_002.zip,pN0", "patient_002_node_0.tif,negative",
            "patient_002_node_1.tif,negative", "patient_003.zip,pN1", "patient_003_node_0.tif,macro"]
    (root / "training/stage_labels.csv").write_text("\n".join(rows) + "\n")
    return root


def test_camelyon16_root_gives_records_with_annotations(c16: Path) -> None:
    slides = discover(c16).set_index("slide_id")
    assert list(slides.index) == ["tumor_001", "tumor_002", "normal_001", "test_001", "test_002"]
    assert slides["label"].to_dict() == {"tumor_001": 1, "tumor_002": 1, "normal_001": 0, "test_001": -1,
                                         "test_002": -1}
    assert slides.loc["tumor_001", "mask_path"] == c16 / "training/lesion_annotations/tumor_001.xml"
    assert slides.loc["normal_001", "mask_path"] is None
    assert slides.loc["test_001", "mask_path"] is None  # test annotations are held out
    assert list(discover(c16, "test")["slide_id"]) == ["test_001", "test_002"]
    assert detect_layout(c16) == "camelyon16"


def test_camelyon16_folders_work_on_their_own(c16: Path) -> None:
    # the platform mounts training/ as /data/train and testing/images as /data/test
    train = discover(c16 / "training", "train")
    assert list(train["slide_id"]) == ["tumor_001", "tumor_002", "normal_001"]
    assert set(discover(c16 / "testing/images", "test")["slide_id"]) == {"test_001", "test_002"}
    assert set(discover(c16 / "testing/images", layout="camelyon16")["slide_id"]) == {"test_001", "test_002"}
    assert list(discover(c16 / "testing")["split"]) == ["test", "test"]
    parts = layout_parts(c16)
    assert (parts.train, parts.test, parts.labels) == (c16 / "training", c16 / "testing/images",
                                                        c16 / "testing/reference.csv")


def test_reference_csv_is_the_held_out_labels(c16: Path) -> None:
    reference = read_reference(c16 / "testing/reference.csv")
    assert reference["size_class"].to_dict() == {"test_001": "micro", "test_002": "negative"}
    assert read_labels(c16 / "testing/reference.csv").to_dict() == {"test_001": 1, "test_002": 0}


def test_camelyon17_records_and_stages(c17: Path) -> None:
    slides = discover(c17).set_index("slide_id")
    assert slides["label"].to_dict() == {
        "patient_000_node_0": 0, "patient_000_node_1": 1, "patient_001_node_0": 1, "patient_001_node_1": 0,
        "patient_002_node_0": 0, "patient_002_node_1": 0, "patient_100_node_0": -1}
    assert slides.loc["patient_000_node_1", "mask_path"].name == "patient_000_node_1.xml"
    assert list(discover(c17 / "testing")["split"]) == ["test"]
    assert len(discover(c17 / "training", "train")) == 6
    stages = read_stage_csv(c17 / "training/stage_labels.csv")
    assert stages.patients["patient_001"] == "pN0(i+)" and stages.slides["patient_001_node_0"] == "itc"
    assert read_labels(c17 / "training/stage_labels.csv")["patient_000_node_1"] == 1


def test_pn_stage_and_size_class() -> None:
    assert pn_stage(["negative"] * 5) == "pN0"
    assert pn_stage(["itc", "negative"]) == "pN0(i+)"
    assert pn_stage(["micro", "itc"]) == "pN1mi"
    assert pn_stage(["macro", "micro", "micro", "itc"]) == "pN1"
    assert pn_stage(["macro", "micro", "micro", "micro"]) == "pN2"
    assert [size_class(mm) for mm in (0, 0.1, 0.2, 0.5, 2.0, 2.1)] == \
        ["negative", "itc", "itc", "micro", "micro", "macro"]


def test_forced_layout_and_unknown_layout(c16: Path, tmp_path: Path) -> None:
    with pytest.raises(HelpkitError, match="camelyon17: center_K"):
        discover(c16, layout="camelyon17")
    (tmp_path / "empty").mkdir()
    with pytest.raises(HelpkitError) as info:
        discover(tmp_path / "empty")
    message = str(info.value)
    assert "help: train/" in message and "camelyon16: training/" in message and "camelyon17: center_K" in message
    with pytest.raises(HelpkitError, match="unknown layout 'camelyon18'"):
        discover(c16, layout="camelyon18")


def test_reference_naming_a_missing_slide_is_one_line(c16: Path) -> None:
    reference = c16 / "testing/reference.csv"
    reference.write_text(reference.read_text() + "test_003,Tumor,Macro\n")
    with pytest.raises(HelpkitError) as info:
        discover(c16)
    assert info.value.path == reference and "'test_003'" in str(info.value)
    reference.write_text("test_001,Maybe\n")
    with pytest.raises(HelpkitError, match=r"row 1: expected slide,Tumor\|Normal"):
        read_reference(reference)


def test_camelyon17_missing_slides_skip_and_unnamed_slides_fail(c17: Path) -> None:
    # patient_003_node_0 is in the CSV but not on disk: skipped (the other centres go on)
    assert "patient_003_node_0" not in set(discover(c17)["slide_id"])
    _touch(c17, "training/center_1/patient_009_node_0.tif")
    with pytest.raises(HelpkitError, match="no row in the stage CSV, first 'patient_009_node_0'"):
        discover(c17)
    (c17 / "training/stage_labels.csv").write_text("slide,label\n")
    with pytest.raises(HelpkitError, match="expected header patient,stage"):
        discover(c17 / "training")


def test_help_layout_unchanged(tiny_competition: Path) -> None:
    assert detect_layout(tiny_competition) == "help"
    assert len(discover(tiny_competition, layout="help")) == 6
    with pytest.raises(HelpkitError, match="camelyon16"):
        discover(tiny_competition, layout="camelyon16")


def test_validator_mounts_the_camelyon_folders(c16: Path, c17: Path) -> None:
    from helpkit.layouts import labels_file, platform_folders
    from helpkit.submission.contract import stage_mounts
    from helpkit.submission.paths import PLATFORM
    from helpkit.submission.validate import expected_test_ids

    assert platform_folders(c16) == (c16 / "training", c16 / "testing/images")
    assert stage_mounts("train", c16, Path("/m"), Path("/o"))[PLATFORM.train] == (c16 / "training", "ro")
    assert stage_mounts("inference", c16, Path("/m"), Path("/o"))[PLATFORM.test] == (c16 / "testing/images", "ro")
    assert labels_file(c16) == c16 / "testing/reference.csv"
    assert platform_folders(c17) == (c17 / "training", c17 / "testing")
    assert expected_test_ids(c17 / "testing") == ["patient_100_node_0"]
    assert expected_test_ids(c16 / "testing/images") == ["test_001", "test_002"]
