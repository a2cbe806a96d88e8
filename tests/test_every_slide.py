"""A row for every slide, always: the inference stage on a test folder with every odd input at
once (duplicate stems, an unopenable file, a comma in a name, a two-file DICOM slide), and the
training-label checks from the CLI."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from helpkit.cli import app


@pytest.fixture(scope="module")
def tiny_pipeline(tiny_competition: Path, tmp_path_factory: pytest.TempPathFactory):
    """The train stage of one small simple CNN (2 folds, 1 epoch) on the tiny competition."""
    from helpkit import pipeline
    from helpkit.config import SubmissionConfig

    config = SubmissionConfig.model_validate({
        "name": "tiny", "seed": 0,
        "models": [{"architecture": "simple", "width": 0.25, "folds": 2, "epochs": 1, "batch": 32,
                    "max_patches_per_slide": 60}],
        "ensemble": {"method": "single"},
    })
    model_dir = tmp_path_factory.mktemp("tiny_model")
    pipeline.train(tiny_competition / "train", model_dir, config)
    return model_dir, config


def odd_test_folder(tiny_competition: Path, folder: Path) -> dict[str, str]:
    """The tiny competition's test slides plus every odd case; returns id -> what it is."""
    from helpkit.data import discover
    from helpkit.slide import SlideReader
    from helpkit.synth.dicom import write_dicom_slide

    test = discover(tiny_competition, "test")
    first = Path(test["path"][0])
    folder.mkdir()
    cases = {}
    for path in test["path"]:
        shutil.copyfile(path, folder / Path(path).name)
        cases[Path(path).stem] = "synthetic"
    shutil.copyfile(first, folder / "Slide,comma.tiff")
    cases["Slide,comma"] = "copy of " + first.stem
    (folder / "Dup.svs").write_bytes(b"not a slide at all")  # first by name; does not open
    shutil.copyfile(first, folder / "Dup.tiff")
    cases["Dup"] = "duplicate stem"
    (folder / "x.svs").write_bytes(np.random.default_rng(0).bytes(4096))
    cases["x"] = "unopenable"
    with SlideReader(first) as reader:
        pixels = reader.read_region((0, 0), 0, reader.dimensions)
    write_dicom_slide(folder / "DicomSlide", pixels, mpp=0.25, levels=2)
    cases["DicomSlide"] = "two-file DICOM"
    import tifffile

    blank = np.full((1024, 1024, 3), 255, np.uint8)  # opens, but holds no tissue
    tifffile.imwrite(folder / "Blank.tif", blank, tile=(256, 256), photometric="rgb",
                     resolution=(1e4 / 0.25,) * 2, resolutionunit="CENTIMETER")
    cases["Blank"] = "no tissue"
    (folder / ".hidden.tiff").write_bytes(b"")  # not a slide
    (folder / "notes.txt").write_text("not a slide")
    return cases


def test_inference_writes_one_real_row_per_slide(
    tiny_competition: Path, tiny_pipeline, tmp_path: Path, capfd: pytest.CaptureFixture, caplog: pytest.LogCaptureFixture
) -> None:
    from helpkit import pipeline
    from helpkit.data import slide_ids
    from helpkit.scoring import read_predictions

    model_dir, config = tiny_pipeline
    test_dir = tmp_path / "test"
    cases = odd_test_folder(tiny_competition, test_dir)
    assert sorted(cases) == slide_ids(test_dir)
    out = tmp_path / "output" / "output.csv"
    proba = pipeline.infer(test_dir, model_dir, out, config, work_dir=tmp_path / "work")

    scores = read_predictions(out, expected_ids=sorted(cases), strict=False).scores
    assert sorted(scores.index) == sorted(cases) and scores.equals(proba.rename_axis("slide_id").rename("probability"))
    assert '"Slide,comma",' in out.read_text()
    err = capfd.readouterr().err
    fallback = config.fallback_probability
    assert "slide x failed (" in err and f"wrote fallback {fallback}" in err
    assert f"slide Blank: no tissue found, nothing to score: wrote fallback {fallback}" in err
    assert scores["Blank"] == fallback
    assert f"wrote {len(cases)} rows to {out} (2 fallback)" in err
    assert "duplicate slide id 'Dup': using Dup.tiff, ignoring Dup.svs (could not open" in caplog.text
    # every readable slide got a real score: the same pixels give the same probability
    first = next(k for k, v in cases.items() if v == "synthetic")
    assert scores["Slide,comma"] == scores[first] == scores["Dup"]
    failed = pd.read_parquet(next((tmp_path / "work").rglob("features.parquet"))).set_index("slide_id")
    assert failed.filter(like="__failed").sum(axis=1).to_dict() == {k: int(k == "x") for k in failed.index}
    assert scores["DicomSlide"] == pytest.approx(scores[first], abs=0.05)


# ---- training-label checks in the three commands ---------------------------------------------

@pytest.fixture(scope="module")
def wrong_labels(tiny_competition: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny competition's train folder with one positive slide whose mask is blank and
    the negative class folder spelled ``Negative``."""
    from PIL import Image

    train = tmp_path_factory.mktemp("wrong_labels") / "train"
    shutil.copytree(tiny_competition / "train", train)
    (train / "image/negative").rename(train / "image/Negative")
    mask = sorted((train / "mask/positive").iterdir())[0]
    size = Image.open(mask).size
    Image.new("L", size, 0).save(mask)
    return train


def test_index_warns_then_strict_refuses(wrong_labels: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    result = CliRunner().invoke(app, ["index", str(wrong_labels), "--out", str(tmp_path / "index.parquet")])
    assert result.exit_code == 0, result.output
    blank = sorted((wrong_labels / "mask/positive").iterdir())[0]
    assert f"{wrong_labels / 'image/Negative'}: class folder 'Negative' is not lower case" in caplog.text
    assert f"{blank}: the mask of positive slide {blank.stem} marks no tumour; slide excluded" in caplog.text
    index = pd.read_parquet(tmp_path / "index.parquet")
    assert blank.stem not in set(index["slide_id"]) and (index["slide_label"] == 0).any()
    strict = CliRunner().invoke(app, ["index", str(wrong_labels), "--out", str(tmp_path / "s.parquet"), "--strict"])
    assert strict.exit_code != 0 and "2 training label problem(s) (--strict)" in str(strict.exception)
    assert not (tmp_path / "s.parquet").exists()


def test_strict_in_train_and_platform_train(wrong_labels: Path, tmp_path: Path) -> None:
    helpkit = [str(Path(sys.executable).parent / "helpkit")]  # the console script, as a user runs it
    runs = {
        "train": [*helpkit, "train", "--data", str(wrong_labels), "--out", str(tmp_path / "run"), "--strict"],
        "platform train": [*helpkit, "platform", "train", "--data", str(wrong_labels), "--model-dir",
                           str(tmp_path / "model"), "--config", "simple-maxprob", "--strict"],
    }
    for what, cmd in runs.items():
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 2, (what, proc.stderr[-2000:])
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith("helpkit: error: 2 training label problem(s) (--strict): "), (what, last)
        assert "class folder 'Negative' is not lower case" in last and "marks no tumour" in last
    assert not (tmp_path / "run" / "run.json").exists()


def test_warnings_reach_stderr_outside_pytest(wrong_labels: Path, tmp_path: Path) -> None:
    """No logging set up (as in the CLI): each warning is still one line on stderr."""
    code = ("import sys; from helpkit.data import check_labels, discover; "
            "print(len(check_labels(discover(sys.argv[1], 'train'))))")
    proc = subprocess.run([sys.executable, "-c", code, str(wrong_labels)], capture_output=True, text=True,
                          timeout=120, check=True)
    lines = [line for line in proc.stderr.splitlines() if "class folder" in line or "marks no tumour" in line]
    assert len(lines) == 2 and proc.stdout.strip() == "3"
