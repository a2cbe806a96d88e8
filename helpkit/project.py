"""A user's project: where submissions, build contexts and the wheelhouse cache live.

helpkit ships its Dockerfile templates and example submissions as package data
(``helpkit/templates``, ``helpkit/submissions``), read in place and never written. What a
build writes goes to the user's project, never next to the installed package:

- the project is ``$HELPKIT_PROJECT`` when set, else the nearest folder at or above the
  current directory that holds a ``submissions/`` folder, else the current directory;
- build contexts go to ``<project>/build/NAME``;
- the wheelhouse cache (every dependency wheel the images install, gigabytes) goes to
  ``$HELPKIT_CACHE_DIR`` when set, else ``<project>/build/wheelhouse-cache``; point
  several projects at one cache to download once.

``helpkit init DIR`` makes a project: ``submissions/example/``, a README stub and a
``.gitignore`` that keeps ``build/`` out of version control.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from helpkit.errors import HelpkitError

PACKAGE_DIR = Path(__file__).resolve().parent
TEMPLATES_DIR = PACKAGE_DIR / "templates"
"""The Dockerfile and entry-point templates (package data)."""
EXAMPLES_DIR = PACKAGE_DIR / "submissions"
"""The example submissions shipped with helpkit (package data, read-only)."""
INIT_EXAMPLE = "example"
"""The example ``helpkit init`` copies into a new project."""
PROJECT_ENV, CACHE_ENV = "HELPKIT_PROJECT", "HELPKIT_CACHE_DIR"


def project_dir(start: Path | None = None) -> Path:
    """The current project: ``$HELPKIT_PROJECT``, else the nearest folder with ``submissions/``, else cwd."""
    if os.environ.get(PROJECT_ENV):
        return Path(os.environ[PROJECT_ENV]).resolve()
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "submissions").is_dir() and (folder / "submissions").resolve() != EXAMPLES_DIR:
            return folder  # (the package's own examples folder never makes a project)
    return PACKAGE_DIR.parent if is_packaged(here) else here


def submissions_dir() -> Path:
    """The project's own submissions folder (it may not exist)."""
    return project_dir() / "submissions"


def build_dir() -> Path:
    """Where build contexts are rendered: ``<project>/build``."""
    return project_dir() / "build"


def cache_dir() -> Path:
    """The wheelhouse cache: ``$HELPKIT_CACHE_DIR``, else ``<project>/build/wheelhouse-cache``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).resolve()
    return build_dir() / "wheelhouse-cache"


def is_packaged(path: Path) -> bool:
    """Whether ``path`` lies inside helpkit's installed package (never written to)."""
    try:
        path.resolve().relative_to(PACKAGE_DIR)
    except ValueError:
        return False
    return True


def example_names() -> list[str]:
    """The example submissions shipped with helpkit."""
    return sorted(p.name for p in EXAMPLES_DIR.iterdir() if (p / "submission.toml").is_file())


GITIGNORE = """\
# helpkit: build contexts, wheelhouse cache, run folders and scratch
build/
*.egg-info/
__pycache__/
.ipynb_checkpoints/
"""

README = """\
# {name}

A helpkit project: each folder under `submissions/` is one Docker submission
(`submission.toml`, plus `submission.lock` once built: the exact wheels its image installs).

    helpkit submission build example                     # image helpkit-submission/example
    helpkit synth data --train 8 --test 4                # a small synthetic competition
    helpkit submission validate example --data data      # both stages under the platform's limits

Build contexts and the wheelhouse cache go to `build/` (or `$HELPKIT_CACHE_DIR` for the cache).
Commit `submissions/` with its lock files; `build/` is ignored. `helpkit init --help`,
`helpkit submission --help` and helpkit's docs (`docs/own-data-model-scripts.md`) say more.
"""


def init_project(folder: str | Path, example: str = INIT_EXAMPLE) -> Path:
    """Make a helpkit project in ``folder`` (created; an existing non-empty folder is refused)."""
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise HelpkitError("exists and is not an empty folder; helpkit init makes a new project", folder)
    source = EXAMPLES_DIR / example
    if not (source / "submission.toml").is_file():
        raise HelpkitError(f"no example submission {example!r} (shipped: {', '.join(example_names())})")
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, folder / "submissions" / example,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "submission.lock"))
    (folder / ".gitignore").write_text(GITIGNORE, encoding="utf-8")
    (folder / "README.md").write_text(README.format(name=folder.resolve().name), encoding="utf-8")
    return folder
