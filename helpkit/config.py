"""A submission's configuration: ``submissions/NAME/submission.toml``, validated on load.

One file says everything a submission is: which models to train (or which shipped weights
to use), which slide features, which ensemble, which base image, and the resource limits of
the platform it targets. Unknown keys are errors, so a typo never silently becomes a default.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from helpkit import defaults
from helpkit.ensemble import methods as ensemble_methods  # the registry only: no scikit-learn, no LightGBM
from helpkit.errors import HelpkitError
from helpkit.slide.geometry import GEOMETRY_FIELDS, PatchGeometry
from helpkit.heatmap.tta_spec import DEFAULT_TTA, TTA_HELP, TTAS
from helpkit.slide.slide_defaults import TUMOUR_THRESHOLD, TUMOUR_THRESHOLD_HELP
from helpkit.slide.stain_spec import DEFAULT_NORMALISE, NORMALISE_HELP, NORMALISERS
from helpkit.train.augment_spec import AUGMENT_HELP, AUGMENTATIONS, DEFAULT_AUGMENT, augment_config

SUBMISSIONS_DIR = Path(__file__).resolve().parent / "submissions"
"""The example submissions shipped as package data; ``load_submission(NAME)`` looks in the
project's ``submissions/NAME`` first (``helpkit.project``), then here."""

ENSEMBLE_METHODS = ensemble_methods.NAMES
_SIZE = re.compile(r"^[1-9][0-9]*[bkmg]?$")
_USER = re.compile(r"^(?P<uid>[0-9]+)(:(?P<gid>[0-9]+))?$")


class _Strict(BaseModel):
    """Base of every config section: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _geometry_field(name: str, **constraints: Any) -> Any:
    """A model field of the patch geometry, its default and help from ``GEOMETRY_FIELDS``."""
    _, default, help_ = GEOMETRY_FIELDS[name]
    return Field(default=default, description=help_, **constraints)


class ModelSpec(_Strict):
    """One patch model: trained from /data/train inside the train stage, or shipped in the image."""

    architecture: Literal["simple", "unet", "inception"] | None = Field(
        default=None,
        description="Which builder of helpkit.models to train; may be left out when weights ships a run folder "
        "(helpkit train --export, or your own model through helpkit import-model).",
    )
    name: str = Field(
        default="",
        pattern=r"^[A-Za-z0-9_-]*$",
        description="Name in heatmap folders and feature columns (<name>__max); defaults to the architecture.",
    )
    width: float = Field(default=1.0, gt=0, description="Channel-width multiplier of the architecture.")
    folds: int = Field(default=3, ge=1, description="Folds split by slide; each fold trains one model.")
    epochs: int = Field(default=10, ge=1, description="Upper bound on epochs per fold.")
    time_budget_min: float | None = Field(
        default=None, gt=0, description="Wall-clock budget in minutes for all folds of this model (patch caching included); "
        "training stops and saves in time."
    )
    mpp: float = _geometry_field("mpp", gt=0)
    patch_size: int = _geometry_field("patch_size", ge=8)
    stride: int | None = _geometry_field("stride", ge=1)
    tissue_mpp: float = _geometry_field("tissue_mpp", gt=0)
    batch: int = Field(default=64, ge=1, description="Training batch size.")
    augment: Literal[tuple(AUGMENTATIONS)] = Field(  # type: ignore[valid-type]
        default=DEFAULT_AUGMENT, description=AUGMENT_HELP + " Registry: helpkit.train.augment_spec.AUGMENTATIONS.",
    )
    augment_params: dict[str, float | bool] = Field(
        default_factory=dict, description="Overrides of single parameters of the augment preset, e.g. "
        "{ hed_scale = 0.05, jpeg = 0 } (fields of helpkit.train.augment_spec.AugmentConfig).",
    )
    normalise: Literal[tuple(NORMALISERS)] = Field(  # type: ignore[valid-type]
        default=DEFAULT_NORMALISE, description=NORMALISE_HELP + " The reference is fitted on the training "
        "slides and saved in the run folder; each slide's stains are estimated once, from its tissue.",
    )
    tta: Literal[tuple(TTAS)] = Field(  # type: ignore[valid-type]
        default=DEFAULT_TTA, description=TTA_HELP + " Applies to every heatmap of this model (train and inference stages).",
    )
    tumour_threshold: float = Field(
        default=TUMOUR_THRESHOLD, gt=0.0, le=1.0, description=TUMOUR_THRESHOLD_HELP + " Each threshold has its "
        "own patch index file (index_<geometry>_tumour<t>.parquet).",
    )
    hard_negatives: float = Field(
        default=0.0, ge=0.0, le=0.5, description="Hard-negative mining: when above 0, a second training round "
        "whose sample adds the highest-scoring normal patches of the training slides (scored out of fold by the "
        "first round), as this share of the sample's normal patches.",
    )
    mixed_precision: bool = Field(
        default=False, description="Train and infer in mixed_float16 (float32 output and variables): faster on a "
        "GPU with tensor cores (device = \"gpu\"), slower on a CPU; probabilities within 0.02 of float32.",
    )
    xla: bool | None = Field(
        default=None, description="XLA-compile the train step and the inference forward pass; unset: Keras' choice "
        "in training (XLA on a GPU only), none in inference.",
    )
    max_patches_per_slide: int = Field(default=2000, ge=1, description="Cap on patches sampled from one slide (half per class).")
    weights: str | None = Field(
        default=None,
        description="A run folder (relative to the submission folder) shipped in the image; "
        "when set the train stage skips this model.",
    )

    @property
    def geometry(self) -> PatchGeometry:
        """The patch geometry this model trains and infers at."""
        return PatchGeometry(mpp=self.mpp, patch_size=self.patch_size, stride=self.stride, tissue_mpp=self.tissue_mpp)

    @field_validator("augment_params")
    @classmethod
    def _augment_params(cls, value: dict[str, float | bool], info: ValidationInfo) -> dict[str, float | bool]:
        augment_config(info.data.get("augment", DEFAULT_AUGMENT), value)  # ValueError naming the key
        return value

    @field_validator("weights")
    @classmethod
    def _relative(cls, value: str | None) -> str | None:
        if value is not None and (Path(value).is_absolute() or ".." in Path(value).parts or not value.strip()):
            raise ValueError(f"{value!r} must be a folder inside the submission folder (relative, no '..')")
        return value

    @model_validator(mode="before")
    @classmethod
    def _default_name(cls, data: Any) -> Any:
        if isinstance(data, dict) and not data.get("name") and "architecture" in data:
            data = {**data, "name": data["architecture"]}
        elif isinstance(data, dict) and not data.get("name") and isinstance(data.get("weights"), str):
            data = {**data, "name": Path(data["weights"]).name}
        if isinstance(data, dict) and data.get("architecture") is None and data.get("weights") is None:
            raise ValueError("architecture is required (simple, unet, inception) unless weights ships a run folder")
        return data


class EnsembleSpec(_Strict):
    """How slide features become one probability per slide (methods: ``helpkit.ensemble.methods.REGISTRY``)."""

    method: Literal[ENSEMBLE_METHODS] = Field(  # type: ignore[valid-type]
        default="single", description=ensemble_methods.describe() + ".",
    )
    params: dict[str, Any] = Field(
        default_factory=dict,
        description="Parameters of the method's estimator, checked on load (name and type); "
        "`helpkit ensemble fit --help` lists them.",
    )

    @field_validator("params")
    @classmethod
    def _known_params(cls, params: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        method = info.data.get("method")
        if method is None:  # the method itself is wrong: that error is reported
            return params
        try:
            return ensemble_methods.check_params(method, params)
        except ValueError as err:  # one line naming the key, before anything trains
            raise ValueError(f"{err} (method {method!r})") from None


class Limits(_Strict):
    """The platform's resources, which the validator enforces on each stage container."""

    memory: str = Field(default="8g", description="Memory limit, swap included (docker --memory / --memory-swap).")
    cpus: float = Field(default=2.0, gt=0, description="CPU limit (docker --cpus).")
    shm_size: str = Field(default="1g", description="Size of /dev/shm (docker --shm-size).")
    pids_limit: int = Field(default=512, ge=8, description="Maximum number of processes and threads.")
    tmp_size: str = Field(default="1g", description="Size of the tmpfs mounted at /tmp (the root is read-only).")
    train_timeout_s: float = Field(default=3600.0, gt=0, description="Wall-clock limit of the train stage.")
    infer_timeout_s: float = Field(default=1800.0, gt=0, description="Wall-clock limit of the inference stage.")
    model_writable_in_inference: bool = Field(
        default=False,
        description="Mount /data/model read-write in the inference stage (only where the platform allows it; "
        "many freeze the train stage's output, so the default is read-only).",
    )
    model_max_size: str = Field(
        default="10g", description="Cap on what /data/model holds after each stage; above it the stage fails."
    )
    output_max_size: str = Field(
        default="1g", description="Cap on what /data/output holds after the inference stage; above it the stage fails."
    )
    user: str | None = Field(
        default=None,
        description="Run both stages as this non-root 'uid' or 'uid:gid' (docker --user), as platforms "
        "that never run containers as root do; unset runs as the image's user.",
    )

    @field_validator("memory", "shm_size", "tmp_size", "model_max_size", "output_max_size")
    @classmethod
    def _size(cls, value: str) -> str:
        value = value.strip().lower()
        if not _SIZE.match(value):
            raise ValueError(f"{value!r} is not a size like '512m' or '4g'")
        return value

    @field_validator("user")
    @classmethod
    def _user(cls, value: str | None) -> str | None:
        if value is None:
            return None
        match = _USER.match(value.strip())
        if not match:
            raise ValueError(f"{value!r} is not a numeric 'uid' or 'uid:gid' like '1000:1000'")
        if int(match["uid"]) == 0:
            raise ValueError("user 0 is root; leave user unset to run as the image's user")
        return value.strip()

    @property
    def user_ids(self) -> tuple[int, int] | None:
        """(uid, gid) of ``user`` (gid defaults to uid), or None when unset."""
        if self.user is None:
            return None
        uid, _, gid = self.user.partition(":")
        return int(uid), int(gid or uid)


def size_bytes(size: str) -> int:
    """Bytes in a limit size as docker reads it: '512m' = 512 MiB, '4g' = 4 GiB, '100' = 100 bytes."""
    size = size.strip().lower()
    if not _SIZE.match(size):
        raise HelpkitError(f"{size!r} is not a size like '512m' or '4g'")
    units = {"b": 1, "k": 2**10, "m": 2**20, "g": 2**30}
    return int(size[:-1]) * units[size[-1]] if size[-1] in units else int(size)


def format_bytes(n: int) -> str:
    """A byte count for people: '5.0 GiB', '12.3 MiB', '512 bytes'."""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


class SubmissionConfig(_Strict):
    """Everything one submission is; see submissions/*/submission.toml for examples."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$", description="Image name and build folder (lowercase).")
    description: str = Field(default="", description="One line on what this submission is for.")
    base_image: str = Field(
        default="helpkit/base:bookworm",
        description="FROM image: helpkit/base:bookworm (built locally), python:3.11-slim, or a TensorFlow GPU image.",
    )
    device: Literal["cpu", "gpu"] = Field(
        default="cpu",
        description="cpu: the image ships tensorflow-cpu; gpu: TensorFlow with CUDA (pip's tensorflow[and-cuda]), "
        "and the validator gives the stages the host's GPUs (`helpkit submission build NAME --device` overrides).",
    )
    seed: int = Field(default=0, description="Seed of sampling, fold splits and training.")
    kind: Literal["helpkit", "custom"] = Field(
        default="helpkit",
        description="helpkit: the image runs helpkit's pipeline on [[models]] and [ensemble]; custom: the image "
        "runs the submission folder's own train.sh and inference.sh (no [[models]], no [ensemble]), "
        "with helpkit, TensorFlow and LightGBM installed.",
    )
    ship: list[str] = Field(
        default_factory=list,
        description="Files or folders (relative to the submission folder) copied into the image's /app as they "
        "are: weights, code, tables. Declared here, they pass the static check whatever their extension "
        "(.h5, .npy, .npz); undeclared data is still refused.",
    )
    models: list[ModelSpec] = Field(default_factory=list, description="Patch models, in order.")
    ensemble: EnsembleSpec = Field(default_factory=EnsembleSpec, description="From features to one probability.")
    fallback_probability: float = Field(
        default=defaults.FALLBACK_PROBABILITY,
        ge=0.0,
        le=1.0,
        description="Written for a test slide that cannot be read, so every slide still gets a row.",
    )
    limits: Limits = Field(default_factory=Limits, description="The platform's resources, enforced by the validator.")

    @model_validator(mode="after")
    def _consistent(self) -> SubmissionConfig:
        names = [m.name for m in self.models]
        if len(set(names)) != len(names):
            raise ValueError(f"models: names must be unique, got {names}")
        if self.kind == "custom":
            if self.models:
                raise ValueError("kind 'custom' runs its own train.sh/inference.sh: leave out [[models]] "
                                 "(ship your weights with ship = [...])")
            if "ensemble" in self.model_fields_set:
                raise ValueError("kind 'custom' runs its own train.sh/inference.sh: leave out [ensemble]")
            return self
        if self.ensemble.method == "single" and len(self.models) != 1:
            raise ValueError(f"ensemble.method 'single' needs exactly one model, got {len(self.models)}")
        return self

    @field_validator("ship")
    @classmethod
    def _ship_relative(cls, value: list[str]) -> list[str]:
        for item in value:
            parts = Path(item).parts
            if not item.strip() or Path(item).is_absolute() or ".." in parts or parts[:1] in (("train.sh",),
                                                                                                ("inference.sh",)):
                raise ValueError(f"{item!r} must be a file or folder inside the submission folder (relative, "
                                 "no '..'; the entry points are shipped anyway)")
        return value


def _location(loc: tuple[int | str, ...]) -> str:
    """A pydantic error location as a TOML key path: ``models[1].epochs``."""
    key = ""
    for part in loc:
        key += f"[{part}]" if isinstance(part, int) else (f".{part}" if key else str(part))
    return key or "(top level)"


def resolve_submission_path(path_or_name: str | Path) -> Path:
    """The submission.toml meant by a file, a folder holding one, or a name: the project's
    ``submissions/NAME`` first, then the shipped examples."""
    from helpkit.project import submissions_dir

    path = Path(path_or_name)
    own = submissions_dir()
    candidates = [path, path / "submission.toml", own / str(path_or_name) / "submission.toml",
                  SUBMISSIONS_DIR / str(path_or_name) / "submission.toml"]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise HelpkitError(f"no submission.toml here, nor under {own}/{path_or_name}/, nor a shipped example "
                       f"(helpkit init makes a project with one)", path)


def load_submission(path_or_name: str | Path) -> SubmissionConfig:
    """Read and validate a submission; errors name the file and the key at fault."""
    path = resolve_submission_path(path_or_name)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as err:
        raise HelpkitError(f"not valid TOML ({err})", path) from err
    try:
        return SubmissionConfig.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(f"{_location(e['loc'])}: {e['msg']}" for e in err.errors())
        raise HelpkitError(f"invalid submission: {problems}", path) from err
