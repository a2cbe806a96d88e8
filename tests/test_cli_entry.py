"""The two ways in: the console script and ``python -m helpkit``, both with --version."""

from __future__ import annotations

import subprocess
import sys

import helpkit


def test_python_m_helpkit_prints_the_package_version() -> None:
    out = subprocess.run([sys.executable, "-m", "helpkit", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == f"helpkit {helpkit.__version__}"


def test_python_m_helpkit_reports_helpkit_errors_in_one_line(tmp_path) -> None:
    out = subprocess.run([sys.executable, "-m", "helpkit", "index", str(tmp_path / "nope"), "--out", str(tmp_path / "i.parquet")],
                         capture_output=True, text=True)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("helpkit: error:") and "nope" in lines[0]
