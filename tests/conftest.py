"""Fixtures shared by every part's tests: small generated competitions, never real data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

BASE_IMAGE = "helpkit/base:bookworm"

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


@pytest.fixture(scope="session")
def tiny_competition(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-train (2 positive) / 2-test synthetic competition of 2048-pixel slides."""
    from helpkit.synth import make_competition

    out = tmp_path_factory.mktemp("tiny_competition")
    return make_competition(out, n_train=4, n_test=2, size=2048, seed=0, shift=0.0)


def missing_engine_action(reachable: bool, base_image_present: bool, ci: str | None) -> str | None:
    """What a docker test does: None to run, else 'skip' or 'fail' (under CI nothing may be missing)."""
    if reachable and base_image_present:
        return None
    return "fail" if ci else "skip"


@pytest.fixture(scope="session")
def engine():
    """A reachable engine with the base image, or a skip (a failure under CI) saying what is missing."""
    from helpkit.submission.docker_engine import START_ENGINE_HINT, client, engine_reachable

    reachable = engine_reachable()
    base = False
    if reachable:
        base = bool(client().images.list(name=BASE_IMAGE))
    action = missing_engine_action(reachable, base, os.environ.get("CI"))
    if action is not None:
        why = START_ENGINE_HINT if not reachable else f"no {BASE_IMAGE} image: run `make base-image`"
        (pytest.fail if action == "fail" else pytest.skip)(why)
    yield
    # Each fixture build re-tags the same name; drop the images it left untagged (ours only).
    client().images.prune(filters={"dangling": True, "label": "helpkit.fixture=validator"})
