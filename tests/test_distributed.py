"""Per-slide work on a real Dask cluster: a scheduler and two workers on 127.0.0.1, as the
`dask scheduler` / `dask worker` commands start them, stopped by pid."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("distributed")

from helpkit.heatmap.make import Options, make_heatmaps, slide_records  # noqa: E402
from helpkit.heatmap.store import heatmap_path, read_heatmap  # noqa: E402
from helpkit.slide.geometry import PatchGeometry  # noqa: E402
from helpkit.slidemap import Executor, map_slides  # noqa: E402
from helpkit.train import write_run  # noqa: E402

pytestmark = pytest.mark.distributed

BIN = Path(sys.executable).parent
WORKER_ENV = {"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


@contextlib.contextmanager
def cluster(tmp: Path, n_workers: int = 2) -> Iterator[tuple[str, list[subprocess.Popen]]]:
    """`dask scheduler` and ``n_workers`` `dask worker --nthreads 1 --no-nanny` processes."""
    from distributed import Client

    address = f"tcp://127.0.0.1:{free_port()}"
    env = {**os.environ, **WORKER_ENV}
    procs: list[subprocess.Popen] = []
    log = open(tmp / "cluster.log", "ab")
    try:
        procs.append(subprocess.Popen(
            [BIN / "dask", "scheduler", "--host", "127.0.0.1", "--port", address.rsplit(":", 1)[1],
             "--no-dashboard"], stdout=log, stderr=log, env=env))
        workers = [subprocess.Popen(
            [BIN / "dask", "worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard",
             "--host", "127.0.0.1", "--name", f"w{i}", "--local-directory", str(tmp / f"w{i}")],
            stdout=log, stderr=log, env=env) for i in range(n_workers)]
        procs += workers
        with Client(address, timeout="30s") as client:
            client.wait_for_workers(n_workers, timeout=60)
        yield address, workers
    finally:
        for proc in reversed(procs):
            stop(proc)
        log.close()


def seeded_model(seed: int):
    """A small real CNN (helpkit's simple architecture, 32-pixel patches) with seeded weights."""
    import keras

    from helpkit.models import build

    keras.utils.set_random_seed(seed)
    return build("simple", patch_size=32, width=0.25)


@pytest.fixture(scope="module")
def tiny_run(tiny_competition: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from helpkit.data import discover

    train = sorted(discover(tiny_competition, "train")["slide_id"])
    halves = [train[::2], train[1::2]]
    run_dir = tmp_path_factory.mktemp("runs") / "tiny"
    write_run(run_dir, name="tiny", architecture="simple", geometry=PatchGeometry(mpp=0.5, patch_size=32), width=0.25,
              splits=[([s for s in train if s not in val], val) for val in halves], config={})
    for k in range(2):
        (run_dir / f"fold_{k}").mkdir()
        seeded_model(k).save(run_dir / f"fold_{k}" / "model.keras")
    return run_dir


@pytest.fixture(scope="module")
def dask_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[subprocess.Popen]]]:
    """One scheduler and two workers for the module (the last test kills one of them)."""
    with cluster(tmp_path_factory.mktemp("cluster")) as running:
        yield running


def mtimes(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.iterdir())}


def test_cli_on_a_cluster_equals_in_process_and_a_rerun_recomputes_nothing(
    tiny_competition: Path, tiny_run: Path, tmp_path: Path, dask_cluster
) -> None:
    from distributed import Client

    local = tmp_path / "local"
    assert make_heatmaps([tiny_run], slide_records(tiny_competition), local, Options())["written"] == 6
    out = tmp_path / "cluster"
    args = [str(BIN / "helpkit"), "heatmap", "--model", str(tiny_run), "--data", str(tiny_competition),
            "--out", str(out)]
    address, _ = dask_cluster
    first = subprocess.run([*args, "--scheduler", address], capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "6 written" in first.stdout
    for slide in sorted(p.stem for p in (local / "tiny").glob("*.npz")):
        a, b = read_heatmap(heatmap_path(local, "tiny", slide)), read_heatmap(heatmap_path(out, "tiny", slide))
        assert a.key == b.key and not b.error
        np.testing.assert_array_equal(a.prob, b.prob)  # bit for bit, NaN where off tissue
        np.testing.assert_array_equal(a.tissue, b.tissue)
    with Client(address) as client:  # each worker loaded each fold model at most once
        loads = client.run(lambda: __import__("helpkit.slidemap").slidemap.process_cache_stats())
    assert loads and all(n == 1 for stats in loads.values() for n in stats.values())
    assert sum(len(stats) for stats in loads.values()) >= 2
    before = mtimes(out / "tiny")
    again = make_heatmaps([tiny_run], slide_records(tiny_competition), out, Options(),
                          executor=Executor(scheduler=address))
    assert again == {"written": 0, "skipped": 6, "failed": 0}
    assert mtimes(out / "tiny") == before
    import pandas as pd

    from helpkit.features import build_features

    assert build_features([local], tmp_path / "local.parquet")
    assert build_features([out], tmp_path / "cluster.parquet", executor=Executor(scheduler=address))
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "local.parquet"), pd.read_parquet(tmp_path / "cluster.parquet"))


def square(x: int) -> int:
    return x * x


def test_map_slides_same_results_in_process_and_on_a_local_cluster() -> None:
    items = list(range(5))
    keys = [f"s{i}" for i in items]
    assert map_slides(square, items, keys) == {k: i * i for k, i in zip(keys, items)}
    with pytest.raises(Exception, match="key"):
        map_slides(square, items, keys[:-1])
    assert Executor.from_env("tcp://x:1").scheduler == "tcp://x:1"
    # --workers N: a LocalCluster started for the map and stopped after it
    assert map_slides(abs, [-3, 4, -5], ["a", "b", "c"], Executor(workers=2)) == {"a": 3, "b": 4, "c": 5}


def test_index_on_the_cluster_equals_in_process_and_resumes_from_its_parts(
    tiny_competition: Path, tmp_path: Path, dask_cluster
) -> None:
    import pandas as pd

    from helpkit.data import discover
    from helpkit.slide.index import index_dataset

    address, _ = dask_cluster
    slides = discover(tiny_competition, "train")
    local = index_dataset(slides, progress=False)
    parts = tmp_path / "parts"
    remote = index_dataset(slides, progress=False, executor=Executor(scheduler=address), parts_dir=parts)
    pd.testing.assert_frame_equal(local.patches, remote.patches)
    pd.testing.assert_frame_equal(local.summary, remote.summary)
    before = mtimes(parts)
    (parts / "Slide002.parquet").unlink()  # as if the run had been killed before this slide
    again = index_dataset(slides, progress=False, executor=Executor(scheduler=address), parts_dir=parts)
    pd.testing.assert_frame_equal(local.patches, again.patches)
    after = mtimes(parts)
    assert {k: v for k, v in after.items() if k != "Slide002.parquet"} == {
        k: v for k, v in before.items() if k != "Slide002.parquet"}
    assert after["Slide002.parquet"] != before["Slide002.parquet"]


def test_hard_negative_cells_on_the_cluster_equal_in_process(tiny_competition: Path, dask_cluster) -> None:
    """Hard-negative mining labels each slide's cells through the same per-slide map: a cluster gives
    what this process gives, slide for slide."""
    import pandas as pd

    from helpkit.data import discover
    from helpkit.slide.index import index_dataset
    from helpkit.train.hard_negatives import index_cells

    address, _ = dask_cluster
    slides = discover(tiny_competition, "train")
    index = index_dataset(slides, progress=False).patches
    local = index_cells(index, slides)
    remote = index_cells(index, slides, Executor(scheduler=address))
    assert list(remote) == list(local) == list(index["slide_id"].drop_duplicates())
    for slide_id, cells in local.items():
        assert len(cells) > 0
        pd.testing.assert_frame_equal(cells, remote[slide_id])


STARTED = "started-"


def slow_red(marks: str | None):
    """A predictor factory whose first call per slide marks the worker's pid, then takes a while."""

    def factory(run, folds):
        if marks:
            Path(marks, f"{STARTED}{os.getpid()}-{time.time_ns()}").touch()
            time.sleep(0.5)

        def predict(batch):
            return batch[..., 0].mean(axis=(1, 2)).astype(np.float32) / 255.0

        return predict

    return factory


def test_a_worker_killed_mid_run_loses_no_slide(
    tiny_competition: Path, tiny_run: Path, tmp_path: Path, dask_cluster
) -> None:
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import this test module
    try:
        killed_run(tiny_competition, tiny_run, tmp_path, dask_cluster)
    finally:
        cloudpickle.unregister_pickle_by_value(sys.modules[__name__])


def killed_run(tiny_competition: Path, tiny_run: Path, tmp_path: Path, dask_cluster) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    slides = slide_records(tiny_competition)
    expected = make_heatmaps([tiny_run], slides, tmp_path / "local", Options(), slow_red(None))
    assert expected["written"] == 6
    killed: list[int] = []
    address, workers = dask_cluster
    pids = {w.pid for w in workers}

    def killer() -> None:
        deadline = time.time() + 60
        while time.time() < deadline and not killed:
            for mark in marks.glob(f"{STARTED}*"):
                pid = int(mark.name.split("-")[1])
                if pid in pids:
                    os.kill(pid, signal.SIGKILL)  # mid-slide: its task is lost with it
                    killed.append(pid)
                    return
            time.sleep(0.02)

    thread = threading.Thread(target=killer)
    thread.start()
    counts = make_heatmaps([tiny_run], slides, tmp_path / "cluster", Options(), slow_red(str(marks)),
                           executor=Executor(scheduler=address))
    thread.join()
    assert len(killed) == 1 and [w.poll() for w in workers if w.pid == killed[0]] == [-signal.SIGKILL]
    assert counts == {"written": 6, "skipped": 0, "failed": 0}
    for slide in slides:
        a = read_heatmap(heatmap_path(tmp_path / "local", "tiny", slide.slide_id))
        b = read_heatmap(heatmap_path(tmp_path / "cluster", "tiny", slide.slide_id))
        np.testing.assert_array_equal(a.prob, b.prob)
    assert not [p for p in (tmp_path / "cluster" / "tiny").iterdir() if p.name.startswith(".")]
    # the rest of the cluster resumes nothing that is done
    again = make_heatmaps([tiny_run], slides, tmp_path / "cluster", Options(), slow_red(str(marks)),
                          executor=Executor(scheduler=address))
    assert again == {"written": 0, "skipped": 6, "failed": 0}
