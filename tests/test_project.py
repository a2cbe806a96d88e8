"""A user's project (helpkit init, where builds go), custom submissions, declared shipped files,
submission locks and the pip the wheelhouse needs: no Docker, no network."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from helpkit.config import SUBMISSIONS_DIR, load_submission, resolve_submission_path
from helpkit.errors import HelpkitError
from helpkit.project import INIT_EXAMPLE, build_dir, cache_dir, init_project, project_dir
from helpkit.submission import wheelhouse
from helpkit.submission.render import lock_path, render
from helpkit.submission.static import check_context


@pytest.fixture
def in_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh project made by init_project, as the current directory (no env overrides)."""
    monkeypatch.delenv("HELPKIT_PROJECT", raising=False)
    monkeypatch.delenv("HELPKIT_CACHE_DIR", raising=False)
    project = init_project(tmp_path / "proj")
    monkeypatch.chdir(project)
    return project.resolve()


def test_init_makes_a_project_with_one_example(in_project: Path) -> None:
    assert sorted(p.name for p in in_project.iterdir()) == [".gitignore", "README.md", "submissions"]
    assert [p.name for p in (in_project / "submissions").iterdir()] == [INIT_EXAMPLE]
    assert "build/" in (in_project / ".gitignore").read_text().splitlines()
    assert load_submission(INIT_EXAMPLE).name == INIT_EXAMPLE
    with pytest.raises(HelpkitError, match="not an empty folder"):
        init_project(in_project)


def test_builds_and_cache_live_in_the_project_not_the_package(in_project: Path, monkeypatch) -> None:
    (in_project / "submissions" / "nested").mkdir()
    monkeypatch.chdir(in_project / "submissions" / "nested")  # from a sub-folder: the same project
    assert project_dir() == in_project
    assert build_dir() == in_project / "build" and cache_dir() == in_project / "build" / "wheelhouse-cache"
    monkeypatch.setenv("HELPKIT_CACHE_DIR", str(in_project / "shared-cache"))
    assert cache_dir() == in_project / "shared-cache"
    context = render(INIT_EXAMPLE, wheels=False)
    assert context == in_project / "build" / INIT_EXAMPLE and (context / "Dockerfile").is_file()
    assert lock_path(resolve_submission_path(INIT_EXAMPLE), INIT_EXAMPLE) == \
        in_project / "submissions" / INIT_EXAMPLE / "submission.lock"
    # a shipped example outside the project: read from the package, its lock in the project's build/
    shipped = resolve_submission_path("simple-maxprob")
    assert shipped.parent.parent == SUBMISSIONS_DIR
    assert lock_path(shipped, "simple-maxprob") == in_project / "build" / "locks" / "simple-maxprob.lock"


def test_the_package_is_never_a_project(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from helpkit.project import PACKAGE_DIR

    monkeypatch.delenv("HELPKIT_PROJECT", raising=False)
    monkeypatch.chdir(PACKAGE_DIR)
    assert project_dir() != PACKAGE_DIR and not str(build_dir()).startswith(str(PACKAGE_DIR) + os.sep)


def test_the_project_submission_shadows_the_shipped_example(in_project: Path) -> None:
    own = in_project / "submissions" / "simple-maxprob"
    own.mkdir()
    (own / "submission.toml").write_text('name = "simple-maxprob"\n[[models]]\narchitecture = "simple"\n')
    assert resolve_submission_path("simple-maxprob") == own / "submission.toml"


def test_cli_init(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from helpkit.cli import app

    result = CliRunner().invoke(app, ["init", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "p" / "submissions" / "example" / "submission.toml").is_file()


def _custom(folder: Path, toml_extra: str = "") -> Path:
    sub = folder / "submissions" / "mine"
    (sub / "weights").mkdir(parents=True)
    for script in ("train.sh", "inference.sh"):
        (sub / script).write_text("#!/bin/sh\necho own script\n")
    (sub / "weights" / "model.h5").write_bytes(b"h5")
    (sub / "weights" / "mean.npy").write_bytes(b"npy")
    (sub / "predict.py").write_text("print('hello')\n")
    (sub / "submission.toml").write_text(
        'name = "mine"\nkind = "custom"\nship = ["weights/", "predict.py"]\n' + toml_extra)
    return sub


def test_custom_submission_ships_its_own_scripts_and_declared_weights(in_project: Path) -> None:
    sub = _custom(in_project)
    context = render("mine", wheels=False)
    assert (context / "train.sh").read_text() == (sub / "train.sh").read_text()
    assert os.access(context / "inference.sh", os.X_OK)
    assert (context / "weights" / "model.h5").read_bytes() == b"h5"
    dockerfile = (context / "Dockerfile").read_text()
    assert "COPY weights ./weights" in dockerfile and "COPY predict.py ./predict.py" in dockerfile
    assert check_context(context).errors == []
    # undeclared data is still refused
    (context / "weights" / "../stray.npz").write_bytes(b"npz")
    errors = check_context(context).errors
    assert [(e.check, e.path) for e in errors] == [("data", "stray.npz")]
    assert "ship = [...]" in errors[0].message


@pytest.mark.parametrize(("extra", "reason"), [
    ('[[models]]\narchitecture = "simple"\n', "leave out \\[\\[models\\]\\]"),
    ('[ensemble]\nmethod = "mean"\n', "leave out \\[ensemble\\]"),
])
def test_custom_submission_refuses_helpkit_models_and_ensembles(in_project: Path, extra: str, reason: str) -> None:
    _custom(in_project, extra)
    with pytest.raises(HelpkitError, match=reason):
        load_submission("mine")


def test_missing_shipped_file_is_named(in_project: Path) -> None:
    sub = _custom(in_project)
    (sub / "predict.py").unlink()
    with pytest.raises(HelpkitError, match="ship: 'predict.py' does not exist"):
        render("mine", wheels=False)


# ---- locks ---------------------------------------------------------------------------------


def fake_wheel(folder: Path, name: str, version: str, requires: list[str] = ()) -> Path:  # type: ignore[assignment]
    """A minimal valid pure-Python wheel (pip reads its metadata to resolve)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-{version}-py3-none-any.whl"
    info = f"{name}-{version}.dist-info"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(f"Requires-Dist: {r}\n" for r in requires)
    files = {f"{name}/__init__.py": f"VERSION = {version!r}\n", f"{info}/METADATA": meta,
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    with zipfile.ZipFile(path, "w") as zf:
        for rel, text in files.items():
            zf.writestr(rel, text)
        zf.writestr(f"{info}/RECORD", "".join(f"{rel},,\n" for rel in [*files, f"{info}/RECORD"]))
    return path


@pytest.fixture
def fake_helpkit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """helpkit's wheel replaced by one that needs ``tinydep`` only; returns the wheelhouse cache."""
    source = fake_wheel(tmp_path / "src", "helpkit", "0.1.0", ["tinydep>=1"])

    def build(out_dir: Path, *_: object) -> Path:
        out_dir.mkdir(parents=True, exist_ok=True)
        return Path(shutil_copy(source, out_dir / source.name))

    monkeypatch.setattr(wheelhouse, "build_helpkit_wheel", build)
    cache = tmp_path / "cache"
    fake_wheel(cache, "tinydep", "1.0")
    return cache


def shutil_copy(src: Path, dest: Path) -> Path:
    dest.write_bytes(src.read_bytes())
    return dest


def test_first_build_writes_the_lock_and_later_builds_install_exactly_it(tmp_path: Path, fake_helpkit: Path) -> None:
    lock = tmp_path / "submission.lock"
    placed = wheelhouse.vendor(tmp_path / "w1", cache=fake_helpkit, lock=lock)
    assert [p.name for p in placed] == ["helpkit-0.1.0-py3-none-any.whl", "tinydep-1.0-py3-none-any.whl"]
    sha = hashlib.sha256((fake_helpkit / "tinydep-1.0-py3-none-any.whl").read_bytes()).hexdigest()
    assert f"tinydep==1.0 --hash=sha256:{sha}  # tinydep-1.0-py3-none-any.whl" in lock.read_text().splitlines()
    assert (tmp_path / "w1" / "deps" / "requirements.lock").read_text() == lock.read_text()

    fake_wheel(fake_helpkit, "tinydep", "2.0")  # the index serves a newer release a week later
    placed = wheelhouse.vendor(tmp_path / "w2", cache=fake_helpkit, lock=lock)
    assert sorted(p.name for p in (tmp_path / "w2" / "deps").iterdir()) == [
        "requirements.lock", "tinydep-1.0-py3-none-any.whl"]

    wheelhouse.vendor(tmp_path / "w3", cache=fake_helpkit, lock=lock, update_lock=True)
    assert "tinydep==2.0 " in lock.read_text()


def test_a_changed_wheel_or_a_broken_lock_is_an_error(tmp_path: Path, fake_helpkit: Path) -> None:
    lock = tmp_path / "submission.lock"
    wheelhouse.vendor(tmp_path / "w1", cache=fake_helpkit, lock=lock)
    wheel = fake_helpkit / "tinydep-1.0-py3-none-any.whl"
    wheel.write_bytes(wheel.read_bytes() + b"tampered")
    with pytest.raises(HelpkitError, match="does not match the lock's sha256"):
        wheelhouse.vendor(tmp_path / "w2", cache=fake_helpkit, lock=lock)
    lock.write_text("tinydep>=1\n")
    with pytest.raises(HelpkitError, match="line 1 is not"):
        wheelhouse.vendor(tmp_path / "w3", cache=fake_helpkit, lock=lock)


def test_a_lock_that_no_longer_satisfies_helpkit_says_update_it(tmp_path: Path, fake_helpkit: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    lock = tmp_path / "submission.lock"
    wheelhouse.vendor(tmp_path / "w1", cache=fake_helpkit, lock=lock)
    newer = fake_wheel(tmp_path / "src2", "helpkit", "0.2.0", ["tinydep>=2"])
    monkeypatch.setattr(wheelhouse, "build_helpkit_wheel",
                        lambda out, *_: shutil_copy(newer, (out.mkdir(parents=True, exist_ok=True), out)[1] / newer.name))
    with pytest.raises(HelpkitError, match="--update-lock.*pip says: ERROR"):
        wheelhouse.vendor(tmp_path / "w2", cache=fake_helpkit, lock=lock)


def test_old_pip_is_named_with_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    monkeypatch.setattr(importlib.metadata, "version", lambda name: "23.2.1")
    with pytest.raises(HelpkitError, match=r"pip 23.2.1 is too old .* install --upgrade 'pip>=23.3'"):
        wheelhouse.check_pip()


def test_pips_own_error_reaches_the_user(tmp_path: Path) -> None:
    with pytest.raises(HelpkitError) as err:
        wheelhouse._pip(["download", "--no-index", f"--find-links={tmp_path}", "--dest", str(tmp_path),
                         "no-such-package-xyz==1.0"], "downloading")
    assert "pip says: ERROR: Could not find a version that satisfies the requirement no-such-package-xyz" in \
        err.value.message


def test_pip_is_a_declared_dependency_at_the_version_the_wheelhouse_needs() -> None:
    import tomllib

    deps = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["project"]["dependencies"]
    assert "pip>=23.3" in deps
    proc = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True, text=True, check=True)
    assert wheelhouse.check_pip() in proc.stdout


def test_platform_stages_refuse_a_custom_submission(in_project: Path, tmp_path: Path) -> None:
    from helpkit import pipeline

    _custom(in_project)
    config = load_submission("mine")
    with pytest.raises(HelpkitError, match="kind 'custom': its own train.sh and inference.sh run"):
        pipeline.train(tmp_path / "data", tmp_path / "model", config)
    with pytest.raises(HelpkitError, match="kind 'custom'"):
        pipeline.infer(tmp_path / "test", tmp_path / "model", tmp_path / "out.csv", config)


def test_image_labels_name_the_version_the_commit_and_the_lock(in_project: Path) -> None:
    from helpkit import __version__
    from helpkit.submission.docker_build import image_labels

    context = render(INIT_EXAMPLE, wheels=False)
    assert "helpkit.commit" not in image_labels(context)  # not a git checkout: no commit label
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(in_project)]
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "."], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "project"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    (context / "wheels" / "deps").mkdir(parents=True)
    (context / "wheels" / "deps" / "requirements.lock").write_text("tinydep==1.0 --hash=sha256:00  # x.whl\n")
    labels = image_labels(context)
    assert labels["helpkit.version"] == __version__ and labels["helpkit.commit"] == head
    assert labels["helpkit.lock-sha256"] == hashlib.sha256(b"tinydep==1.0 --hash=sha256:00  # x.whl\n").hexdigest()
    (in_project / "submissions" / INIT_EXAMPLE / "submission.toml").write_text("# changed\n", encoding="utf-8")
    assert image_labels(context)["helpkit.commit"] == head + "-dirty"
