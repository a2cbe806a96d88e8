"""Atomic writes: all or nothing, and the file mode a plain write would give."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from helpkit.io import atomic_path, write_json, write_text


def test_failed_write_leaves_old_file_and_no_temp(tmp_path: Path) -> None:
    target = tmp_path / "out.csv"
    write_text(target, "old\n")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed mid-write")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]


def test_temp_name_keeps_suffix_and_final_mode_follows_umask(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "sub" / "table.parquet") as tmp:
            assert tmp.suffix == ".parquet" and tmp.parent == tmp_path / "sub"
            tmp.write_bytes(b"x")
        write_json(tmp_path / "meta.json", {"a": 1})
    finally:
        os.umask(old)
    for name in ("sub/table.parquet", "meta.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644
