"""Render a submission's build context (``<project>/build/NAME``) from the packaged templates
(``helpkit/templates``) and its submission.toml; see ``helpkit.project`` for where things live."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from helpkit.config import SubmissionConfig, load_submission, resolve_submission_path
from helpkit.errors import HelpkitError
from helpkit.submission.paths import PLATFORM
from helpkit.project import TEMPLATES_DIR, build_dir, is_packaged
from helpkit.submission.wheelhouse import vendor

TEMPLATES = ("Dockerfile", "train.sh", "inference.sh", ".dockerignore")
EXECUTABLE = ("train.sh", "inference.sh")


def render_templates(config: SubmissionConfig, out_dir: Path, device: str | None = None) -> None:
    """Write the rendered templates into ``out_dir`` (entry points executable) for ``device``
    (the config's when None)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    weights = [m.weights for m in config.models if m.weights]
    context = {"name": config.name, "base_image": config.base_image, "paths": PLATFORM, "weights": weights,
               "ship": [item.rstrip("/") for item in config.ship], "device": device or config.device}
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in TEMPLATES:
        if config.kind == "custom" and name in EXECUTABLE:
            continue  # the submission's own entry points (_copy_shipped)
        try:
            text = env.get_template(name).render(context)
        except jinja2.TemplateError as err:
            raise HelpkitError(f"cannot render template ({err})", TEMPLATES_DIR / name) from err
        (out_dir / name).write_text(text, encoding="utf-8")
        if name in EXECUTABLE:
            os.chmod(out_dir / name, 0o755)


def _copy_weights(config: SubmissionConfig, source_dir: Path, out_dir: Path) -> None:
    """Copy each model's shipped weights folder to the same relative place in the context."""
    for model in config.models:
        if model.weights is None:
            continue
        src = source_dir / model.weights
        if not src.is_dir():
            raise HelpkitError(f"models '{model.name}': weights folder {model.weights!r} does not exist", src)
        shutil.copytree(src, out_dir / model.weights, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def _copy_shipped(config: SubmissionConfig, source_dir: Path, out_dir: Path) -> None:
    """Copy the ``ship`` files and folders, and a custom submission's own entry points."""
    own = EXECUTABLE if config.kind == "custom" else ()
    for item in [*own, *config.ship]:
        src = source_dir / item
        if not src.exists():
            what = "its own entry point" if item in own else "ship"
            raise HelpkitError(f"{what}: {item!r} does not exist in the submission folder", src)
        dest = out_dir / item.rstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        if src.is_dir():
            shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"), dirs_exist_ok=True)
        else:
            shutil.copy2(src, dest)
        if item in own:
            os.chmod(dest, 0o755)


def lock_path(toml_path: Path, name: str, device: str = "cpu") -> Path:
    """Where a submission's lock lives: beside its submission.toml, or, for an example shipped
    inside helpkit's package (never written), ``<project>/build/locks/NAME.lock``; a GPU
    image's lock (other wheels: TensorFlow with CUDA) is ``submission.gpu.lock``, ``NAME.gpu.lock``."""
    suffix = "" if device == "cpu" else f".{device}"
    if is_packaged(toml_path):
        return build_dir() / "locks" / f"{name}{suffix}.lock"
    return toml_path.parent / f"submission{suffix}.lock"


def render(name_or_path: str | Path, out_dir: Path | None = None, wheels: bool = True,
           update_lock: bool = False, device: str | None = None) -> Path:
    """Render the build context of a submission; return its folder.

    The folder is rebuilt from scratch; ``wheels=True`` fills its ``wheels/`` from the
    wheelhouse cache, exactly the submission's lock when it has one (written on this first
    build; ``update_lock`` resolves again), and ``wheels=False`` leaves it out, for static checks.
    ``device`` (``cpu``/``gpu``) overrides the config's: which TensorFlow the wheelhouse holds.
    """
    toml_path = resolve_submission_path(name_or_path)
    config = load_submission(toml_path)
    out_dir = out_dir or build_dir() / config.name
    if out_dir.exists():
        shutil.rmtree(out_dir)
    device = device or config.device
    render_templates(config, out_dir, device)
    shutil.copy2(toml_path, out_dir / "submission.toml")
    _copy_weights(config, toml_path.parent, out_dir)
    _copy_shipped(config, toml_path.parent, out_dir)
    if wheels:
        lock = lock_path(toml_path, config.name, device)
        lock.parent.mkdir(parents=True, exist_ok=True)
        vendor(out_dir / "wheels", lock=lock, update_lock=update_lock, device=device)
    return out_dir
