"""`make bench` from a fresh clone: the benches that study an earlier run or a trained model dir
say what they need and exit 0 when it is absent, so the loop over bench/bench_*.py goes on."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


def run_bench(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``bench/<script> args`` run from ``cwd``, the project importable, output captured."""
    env = {**os.environ, "PYTHONPATH": str(BENCH.parent)}
    return subprocess.run([sys.executable, str(BENCH / script), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.parametrize(("script", "needs"), [("bench_scale.py", "--stacked-run"),
                                                ("bench_stacker.py", "bench_quality.py"),
                                                ("bench_shift.py", "make demo")])
def test_bench_without_its_inputs_says_so_and_exits_0(tmp_path: Path, script: str, needs: str) -> None:
    # Run from an empty folder: every default input path (build/..., demo-run/...) is absent.
    result = run_bench(script, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "skipped" in result.stdout and needs in result.stdout
    assert not any(tmp_path.iterdir())  # nothing written


def test_bench_augment_prints_a_row_per_case_with_ratio_1_for_the_first(tmp_path: Path) -> None:
    result = run_bench("bench_augment.py", "--presets", "light", "--parallel", "1", "2", "--intra", "1",
                       "--batch", "16", "--patches", "64", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line.split() for line in result.stdout.splitlines() if line.startswith("light")]
    assert [row[2] for row in rows] == ["1", "2"]  # parallel calls, in the order asked
    assert rows[0][4] == "1.00" and all(float(row[3]) > 0 for row in rows)


def test_bench_augment_rejects_an_unknown_preset_in_one_line(tmp_path: Path) -> None:
    result = run_bench("bench_augment.py", "--presets", "sepia", cwd=tmp_path)
    assert result.returncode == 2 and "invalid choice: 'sepia'" in result.stderr
    assert "Traceback" not in result.stderr and "tensorflow" not in result.stderr.lower()


def test_bench_augment_parts_times_each_parameter_the_preset_switches_on(tmp_path: Path) -> None:
    from dataclasses import fields

    from helpkit.train.augment_spec import AUGMENTATIONS

    result = run_bench("bench_augment.py", "--presets", "medium", "--parts", "--parallel", "1", "--intra", "1",
                       "--batch", "8", "--patches", "16", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [line.split() for line in result.stdout.splitlines() if line.startswith("medium")]
    medium = AUGMENTATIONS["medium"]
    switched_on = [f.name for f in fields(medium) if getattr(medium, f.name) and f.name != "symmetries"]
    assert [row[0] for row in rows] == ["medium", "medium:symmetries", *(f"medium:{name}" for name in switched_on)]
    assert "medium:noise" not in {row[0] for row in rows}  # medium leaves noise off
    assert all(float(row[3]) > 0 for row in rows)
