"""Bring your own, in a real Docker engine: a pip-installed helpkit builds and validates from a
project that is not the repository, a locked submission rebuilds to the same packages, and a
custom submission around a Keras model made outside helpkit validates PASS.

Images are built through the wheelhouse cache of this checkout (``HELPKIT_CACHE_DIR``, the
documented shared cache), so nothing is downloaded twice; each test removes the images it made.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_CACHE = REPO / "build" / "wheelhouse-cache"

pytestmark = [pytest.mark.docker, pytest.mark.slow]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project made by ``helpkit init`` as the current directory, sharing this checkout's cache."""
    from helpkit.project import init_project

    monkeypatch.delenv("HELPKIT_PROJECT", raising=False)
    monkeypatch.setenv("HELPKIT_CACHE_DIR", str(SHARED_CACHE))
    folder = init_project(tmp_path / "proj")
    monkeypatch.chdir(folder)
    return folder


def _remove_image(tag: str) -> None:
    from docker.errors import APIError, ImageNotFound

    from helpkit.submission.docker_engine import client

    try:
        client().images.remove(tag, force=True)
    except (ImageNotFound, APIError):
        pass


def _freeze(tag: str) -> list[str]:
    from helpkit.submission.docker_engine import client

    out = client().containers.run(tag, ["pip", "freeze", "--all"], remove=True, network_disabled=True)
    return sorted(out.decode().split())


def _decoy_wheel(folder: Path, name: str, version: str) -> Path:
    """A newer release of ``name`` as the index might serve it a week later (metadata only)."""
    path = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
        zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{info}/RECORD", "")
    return path


def test_locked_rebuild_installs_the_same_packages(engine, project: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from helpkit.submission.docker_build import build_submission
    from helpkit.submission.docker_engine import client

    sub = project / "submissions" / "example"
    toml = sub / "submission.toml"
    toml.write_text(toml.read_text().replace('name = "example"', 'name = "lock-check"'))
    tag = "helpkit-submission/lock-check:latest"
    try:
        first = build_submission(sub, quiet=True)
        lock = sub / "submission.lock"
        assert lock.is_file()
        frozen = _freeze(tag)
        labels = client().images.get(tag).labels
        assert labels["helpkit.version"] and len(labels["helpkit.lock-sha256"]) == 64

        # A week later the index serves a newer rich: a cache of hard links to the shared one plus it.
        later = tmp_path / "later-cache"
        later.mkdir()
        for wheel in SHARED_CACHE.glob("*.whl"):
            os.link(wheel, later / wheel.name)
        _decoy_wheel(later, "rich", "99.0.0")
        monkeypatch.setenv("HELPKIT_CACHE_DIR", str(later))
        lock_text = lock.read_text()
        second = build_submission(sub, quiet=True)
        assert lock.read_text() == lock_text
        assert _freeze(tag) == frozen and not any(line.startswith("rich==99") for line in frozen)
        assert client().images.get(tag).labels["helpkit.lock-sha256"] == labels["helpkit.lock-sha256"]
        assert second.image_id == first.image_id  # the same inputs: the same image

        # --update-lock resolves again, and would take the newer release
        from helpkit.submission.render import render

        render(sub, out_dir=tmp_path / "ctx", update_lock=True)
        assert "rich==99.0.0 " in lock.read_text()
    finally:
        _remove_image(tag)


INFERENCE_SH = """#!/bin/sh
# My own inference: heatmaps of my imported Keras model, its slide features, max probability.
set -e
helpkit heatmap -m runs/mine --data /data/test --out /tmp/heatmaps
helpkit features /tmp/heatmaps --out /tmp/features.parquet
python3 predict.py /tmp/features.parquet /data/output/output.csv
"""
TRAIN_SH = """#!/bin/sh
# Nothing to train: the model ships in the image.
echo "shipped weights: $(ls runs/mine)"
"""
PREDICT_PY = """import sys
import pandas as pd
from helpkit.scoring.predictions import write_predictions

features = pd.read_parquet(sys.argv[1])
write_predictions(sys.argv[2], features.set_index("slide_id")["mine__max"])
"""


def test_custom_submission_with_an_imported_keras_model_passes(engine, project: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from helpkit.cli import app
    from helpkit.submission.validate import validate
    from helpkit.synth import make_competition
    from test_own_model import own_model

    sub = project / "submissions" / "mine"
    sub.mkdir()
    model = own_model(tmp_path / "mine.keras")
    result = CliRunner().invoke(app, ["import-model", str(model), "--patch-size", "32", "--mpp", "1.0",
                                      "--out", str(sub / "runs" / "mine")])
    assert result.exit_code == 0, result.output
    (sub / "weights.npy").write_bytes(b"\x93NUMPY declared, so shipped")
    for name, text in (("inference.sh", INFERENCE_SH), ("train.sh", TRAIN_SH), ("predict.py", PREDICT_PY)):
        (sub / name).write_text(text)
    (sub / "submission.toml").write_text(
        'name = "own-model"\nkind = "custom"\nship = ["runs/", "predict.py", "weights.npy"]\n'
        "[limits]\nmemory = \"4g\"\ntrain_timeout_s = 300\ninfer_timeout_s = 600\n")
    data = make_competition(tmp_path / "competition", n_train=2, n_test=3, size=2048, seed=0, shift=0.0)
    try:
        report = validate("mine", data, report_path=tmp_path / "report.json", work_dir=tmp_path / "work", quiet=True)
        assert report.verdict == "PASS", json.dumps(report.to_dict(), indent=1)[-3000:]
        rows = (tmp_path / "work" / "output" / "output.csv").read_text().split()
        assert sorted(r.split(",")[0] for r in rows) == sorted(p.stem for p in (data / "test").iterdir())
    finally:
        _remove_image("helpkit-submission/own-model:latest")


def test_pip_installed_wheel_builds_and_validates_from_a_new_project(engine, tmp_path: Path) -> None:
    """The issue's acceptance: a fresh venv (no system site-packages), pip install of the wheel,
    then init + build + validate in an empty folder outside the repository."""
    from helpkit.submission.wheelhouse import build_helpkit_wheel

    wheel = build_helpkit_wheel(tmp_path / "dist")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([venv / "bin" / "pip", "install", "-q", str(wheel)], check=True)
    work = tmp_path / "empty"
    work.mkdir()
    env = {**os.environ, "PATH": f"{venv / 'bin'}:{os.environ['PATH']}", "HELPKIT_CACHE_DIR": str(SHARED_CACHE)}
    env.pop("HELPKIT_PROJECT", None)
    script = ("helpkit synth data --train 6 --test 4 --size 2048 --seed 0 && helpkit init proj && cd proj && "
              "helpkit submission build example -q && helpkit submission validate example --data ../data --quiet")
    try:
        proc = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True)
        assert proc.returncode == 0 and proc.stdout.strip().splitlines()[-1] == "PASS", proc.stdout + proc.stderr
        assert (work / "proj" / "submissions" / "example" / "submission.lock").is_file()
        assert (work / "proj" / "build" / "example" / "Dockerfile").is_file()
        assert not (Path(str(venv)) / "build").exists()
    finally:
        _remove_image("helpkit-submission/example:latest")
