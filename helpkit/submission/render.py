"""Render a submission's build context (``build/NAME``) from ``templates/`` and its submission.toml."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from helpkit.config import SubmissionConfig, load_submission, resolve_submission_path
from helpkit.errors import HelpkitError
from helpkit.submission.paths import PLATFORM
from helpkit.submission.wheelhouse import REPO_ROOT, vendor

TEMPLATES_DIR = REPO_ROOT / "templates"
BUILD_DIR = REPO_ROOT / "build"
TEMPLATES = ("Dockerfile", "train.sh", "inference.sh", ".dockerignore")
EXECUTABLE = ("train.sh", "inference.sh")


def render_templates(config: SubmissionConfig, out_dir: Path) -> None:
    """Write the rendered templates into ``out_dir`` (entry points executable)."""
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )
    weights = [m.weights for m in config.models if m.weights]
    context = {"name": config.name, "base_image": config.base_image, "paths": PLATFORM, "weights": weights}
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in TEMPLATES:
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


def render(name_or_path: str | Path, out_dir: Path | None = None, wheels: bool = True) -> Path:
    """Render the build context of a submission; return its folder.

    The folder is rebuilt from scratch except the ``wheels/`` folder, which ``wheels=True``
    refreshes from the wheelhouse cache (``wheels=False`` leaves it out, for static checks).
    """
    toml_path = resolve_submission_path(name_or_path)
    config = load_submission(toml_path)
    out_dir = out_dir or BUILD_DIR / config.name
    if out_dir.exists():
        shutil.rmtree(out_dir)
    render_templates(config, out_dir)
    shutil.copy2(toml_path, out_dir / "submission.toml")
    _copy_weights(config, toml_path.parent, out_dir)
    if wheels:
        vendor(out_dir / "wheels")
    return out_dir
