"""submission.toml loading: shipped submissions load, and every mistake names its key and file."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpkit import defaults
from helpkit.slide.geometry import PATCH_SIZE
from helpkit.config import (
    SUBMISSIONS_DIR,
    EnsembleSpec,
    Limits,
    ModelSpec,
    SubmissionConfig,
    load_submission,
)
from helpkit.errors import HelpkitError

MINIMAL = 'name = "t"\n[[models]]\narchitecture = "simple"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "submission.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", sorted(p.name for p in SUBMISSIONS_DIR.iterdir() if p.is_dir()))
def test_every_shipped_submission_loads_by_name(name: str) -> None:
    config = load_submission(name)
    assert config.name == name
    assert config.models


def test_shipped_submissions_are_the_two_the_project_promises() -> None:
    simple = load_submission("simple-maxprob")
    assert [m.architecture for m in simple.models] == ["simple"]
    assert simple.ensemble.method == "single"
    stacked = load_submission("stacked-ensemble")
    assert {m.architecture for m in stacked.models} == {"simple", "unet", "inception"}
    assert stacked.ensemble.method == "lgbm"


def test_loads_from_a_file_or_its_folder(tmp_path: Path) -> None:
    path = write(tmp_path, MINIMAL)
    assert load_submission(path) == load_submission(tmp_path)


def test_defaults_fill_what_is_left_out(tmp_path: Path) -> None:
    config = load_submission(write(tmp_path, MINIMAL))
    assert config.base_image == "helpkit/base:bookworm"
    assert config.fallback_probability == defaults.FALLBACK_PROBABILITY
    assert config.models[0].name == "simple"
    assert config.models[0].patch_size == PATCH_SIZE
    assert config.models[0].augment == "light"


def test_augment_names_the_training_augmentation(tmp_path: Path) -> None:
    from helpkit.train.augment_spec import AUGMENTATIONS

    config = load_submission(write(tmp_path, MINIMAL.replace('"simple"', '"simple"\naugment = "flips"')))
    flips = AUGMENTATIONS[config.models[0].augment]
    assert flips.symmetries and not (flips.hed or flips.brightness or flips.contrast)
    assert AUGMENTATIONS["light"].hed > 0


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (MINIMAL.replace('"simple"', '"simple"\nepoch = 3'), "models[0].epoch"),
        (MINIMAL + "[limits]\nmemory = 'lots'\n", "limits.memory"),
        (MINIMAL + "[limits]\ncpus = 0\n", "limits.cpus"),
        (MINIMAL.replace('"simple"', '"resnet"'), "models[0].architecture"),
        (MINIMAL + "fallback_probability = 1.5\n", "fallback_probability"),
        (MINIMAL + "[ensemble]\nmethod = 'vote'\n", "ensemble.method"),
        (MINIMAL + "[features]\nthresholds = [0.5, 0.9]\n", "features"),
        (MINIMAL.replace('"simple"', '"simple"\nweights = "/home/me/run"'), "models[0].weights"),
        (MINIMAL.replace('"simple"', '"simple"\nweights = "../run"'), "models[0].weights"),
        ('name = "Bad Name"\n', "name"),
        (MINIMAL + "typo_key = 1\n", "typo_key"),
        (MINIMAL.replace('"simple"', '"simple"\naugment = "heavy"'), "models[0].augment"),
    ],
)
def test_errors_name_the_key_and_the_file(tmp_path: Path, text: str, key: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(HelpkitError) as caught:
        load_submission(path)
    assert caught.value.path == path
    assert f"{key}:" in caught.value.message


def test_single_needs_exactly_one_model_and_names_are_unique(tmp_path: Path) -> None:
    two = MINIMAL + '[[models]]\narchitecture = "unet"\n'
    with pytest.raises(HelpkitError, match="'single' needs exactly one model, got 2"):
        load_submission(write(tmp_path, two))
    same = two.replace('"unet"', '"simple"') + "[ensemble]\nmethod = 'mean'\n"
    with pytest.raises(HelpkitError, match="names must be unique"):
        load_submission(write(tmp_path, same))


def test_invalid_toml_and_missing_submission_are_helpkit_errors(tmp_path: Path) -> None:
    with pytest.raises(HelpkitError, match="not valid TOML"):
        load_submission(write(tmp_path, "name = \n"))
    with pytest.raises(HelpkitError, match="no submission.toml"):
        load_submission("no-such-submission")


@pytest.mark.parametrize("section", [SubmissionConfig, ModelSpec, EnsembleSpec, Limits])
def test_every_key_is_documented(section: type) -> None:
    undocumented = [name for name, info in section.model_fields.items() if not info.description]
    assert not undocumented
