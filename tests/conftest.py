"""Fixtures shared by every part's tests: small generated competitions, never real data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def tiny_competition(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-train (2 positive) / 2-test synthetic competition of 2048-pixel slides."""
    from helpkit.synth import make_competition

    out = tmp_path_factory.mktemp("tiny_competition")
    return make_competition(out, n_train=4, n_test=2, size=2048, seed=0, shift=0.0)
