"""Crash hygiene: what a killed run leaves behind is removed by the next one, and a resumed
fold says so."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpkit.io import TEMP_NAME, atomic_path, remove_stale_temps


def dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    return int(proc.stdout)


def touch(path: Path, size: int = 10) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * size)
    return path


def test_temp_names_carry_the_writer_and_match_the_pattern(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "checkpoint.keras") as tmp:
        match = TEMP_NAME.match(tmp.name)
        assert match and match["stem"] == "checkpoint" and match["suffix"] == ".keras"
        assert int(match["pid"]) == os.getpid()
        tmp.write_bytes(b"model")
        assert remove_stale_temps(tmp_path) == []  # being written: not stale
        assert tmp.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.keras"]


def test_only_helpkit_temps_of_gone_writers_are_removed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    gone = dead_pid()
    stale = [
        touch(tmp_path / f".checkpoint.{gone}-ab12cd34.tmp.keras", 2_000_000),  # a killed writer
        touch(tmp_path / ".patches.k2j9x0qa.tmp.npy"),  # helpkit before temp names carried the pid
        touch(tmp_path / f".state.{os.getpid()}-zz99yy88.tmp.json"),  # this pid, but not being written
    ]
    kept = [
        touch(tmp_path / f".model.{os.getppid()}-ab12cd34.tmp.keras"),  # a live writer (our parent)
        touch(tmp_path / "checkpoint.keras"),
        touch(tmp_path / ".checkpoint.keras"),  # not a temp name
        touch(tmp_path / ".notes.ab12cd34.tmp.txt.bak"),
        touch(tmp_path / "sub" / f".checkpoint.{gone}-ab12cd34.tmp.keras"),  # only the folder itself
    ]
    assert remove_stale_temps(tmp_path) == sorted(stale)
    assert not any(p.exists() for p in stale) and all(p.exists() for p in kept)
    assert f"{stale[0]}: removed a temporary file left by a killed run (2.0 MB)" in caplog.text
    assert remove_stale_temps(tmp_path / "missing") == []


def test_kill_9_mid_write_then_the_next_run_cleans_up(tmp_path: Path) -> None:
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from helpkit.io import atomic_path\n"
        "with atomic_path(Path(sys.argv[1]) / 'checkpoint.keras') as tmp:\n"
        "    tmp.write_bytes(b'x' * 100000)\n"
        "    print('writing', flush=True)\n"
        "    time.sleep(60)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    left = [p.name for p in tmp_path.iterdir()]
    assert len(left) == 1 and left[0].startswith(f".checkpoint.{proc.pid}-") and left[0].endswith(".tmp.keras")
    assert [p.name for p in remove_stale_temps(tmp_path)] == left
    assert list(tmp_path.iterdir()) == []


class ArraySource:
    """Patches from memory (a PatchSource without slides)."""

    patch_size = 32

    def __init__(self, n: int) -> None:
        self.patches = np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)

    def read(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.patches[rows], np.ones(len(rows), bool)


def test_resumed_fold_says_so_and_clears_a_killed_save(tmp_path: Path, capfd: pytest.CaptureFixture) -> None:
    import keras

    from helpkit.train.fit import FoldData, TrainConfig, train_fold

    class Kill(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            raise KeyboardInterrupt

    n = 64
    labels = (np.arange(n) % 2).astype(np.int8)
    rows = np.arange(n)
    data = FoldData(ArraySource(n), rows[: n // 2], labels[: n // 2], rows[n // 2:], labels[n // 2:])
    config = TrainConfig(model="simple", width=0.25, folds=2, epochs=2, batch_size=16)
    folder = tmp_path / "fold_1"
    with pytest.raises(KeyboardInterrupt):
        train_fold(data, folder, config, patch_size=32, extra_callbacks=[Kill()])
    assert "resuming" not in capfd.readouterr().err
    leftover = touch(folder / f".checkpoint.{dead_pid()}-ab12cd34.tmp.keras", 1000)  # the kill hit a save
    train_fold(data, folder, config, patch_size=32)
    err = capfd.readouterr().err
    assert f"fold 1: resuming from epoch 2 (1 done, from {folder / 'checkpoint.keras'})" in err
    assert not leftover.exists()
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []


def test_patch_cache_build_clears_a_killed_build(tmp_path: Path, tiny_competition: Path) -> None:
    from helpkit.data import discover
    from helpkit.slide.index import index_dataset
    from helpkit.train.cache import index_key, open_cache

    slides = discover(tiny_competition, "train")
    index = index_dataset(slides.iloc[:1], progress=False).patches.iloc[:40].reset_index(drop=True)
    cache_dir = tmp_path / "cache"
    gone = dead_pid()
    this_key = touch(cache_dir / index_key(index) / f".patches.{gone}-ab12cd34.tmp.npy", 50_000)
    other_key = touch(cache_dir / "0123456789abcdef" / f".patches.{gone}-ab12cd34.tmp.npy", 50_000)
    cache = open_cache(index, cache_dir, progress=False)
    assert cache.ok.all() and not this_key.exists() and not other_key.exists()
    assert sorted(p.name for p in cache.path.iterdir()) == ["cache.json", "ok.npy", "patches.npy"]
