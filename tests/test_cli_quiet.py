"""The CLI's host logs and JSON: TensorFlow's start-up lines hidden unless -v; --json is strict JSON on stdout."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

IMPORT_TF = ("import sys\nfrom helpkit.cli.quiet import quiet_host_logs\nquiet_host_logs(sys.argv[1] == 'verbose')\n"
             "import keras\nprint('kept line', file=sys.stderr)\n")


@pytest.mark.parametrize("mode", ["quiet", "verbose"])
def test_tensorflow_start_up_lines_hidden_unless_verbose(mode: str) -> None:
    err = subprocess.run([sys.executable, "-c", IMPORT_TF, mode], capture_output=True, text=True, timeout=300).stderr
    assert "kept line" in err
    noisy = "absl::InitializeLog" in err or "oneDNN custom operations" in err
    assert noisy == (mode == "verbose"), err[-2000:]


def test_noise_filter_keeps_other_lines() -> None:
    from helpkit.cli.quiet import NOISE

    assert NOISE.match(b"I0000 00:00:1795773152.881420    7229 port.cc:153] oneDNN custom operations are on.")
    assert NOISE.match(b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR")
    assert not NOISE.match(b"E0000 00:00:1795773152.881420    7229 cuda.cc:1] failed call to cuInit")
    assert not NOISE.match(b"[helpkit] training simple")


def _strict(text: str) -> object:
    def refuse(constant: str) -> None:
        raise ValueError(f"not JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def test_json_output_is_strict_even_with_nan(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from helpkit.cli import app
    from helpkit.io import json_text, write_json

    assert _strict(json_text({"auc": math.nan, "hi": math.inf, "list": [1.0, -math.inf]})) == {
        "auc": None, "hi": None, "list": [1.0, None]}
    write_json(tmp_path / "x.json", {"v": float("nan")})
    assert _strict((tmp_path / "x.json").read_text()) == {"v": None}
    (tmp_path / "labels.csv").write_text("slide_id,label\na,1\nb,0\nc,1\nd,0\n")
    (tmp_path / "p.csv").write_text("a,0.9\nb,0.1\nc,0.8\nd,0.2\n")
    result = CliRunner().invoke(app, ["score", str(tmp_path / "p.csv"), "--labels", str(tmp_path / "labels.csv"),
                                      "--json"])
    assert result.exit_code == 0, result.output
    assert _strict(result.stdout)["auc"]["auc"] == 1.0
