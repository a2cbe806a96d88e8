"""Build a context into a tagged image through the Docker SDK, with the build's steps as progress."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from helpkit.errors import HelpkitError
from helpkit.progress import progress_bar
from helpkit.submission.docker_engine import client

if TYPE_CHECKING:
    import docker

_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)")


@dataclass(frozen=True)
class BuiltImage:
    """What a build produced."""

    tag: str
    image_id: str
    size_bytes: int
    seconds: float

    def summary(self) -> str:
        """One line for people: tag, id, size, time."""
        return f"{self.tag}  {self.image_id}  {self.size_bytes / 1e6:.0f} MB  built in {self.seconds:.1f} s"


def image_tag(name: str, device: str = "cpu") -> str:
    """The tag of a submission's image: ``:latest``, or ``:gpu`` for its GPU build."""
    return f"helpkit-submission/{name}:{'latest' if device == 'cpu' else device}"


def _git_commit(folder: Path) -> str | None:
    """The commit checked out in ``folder``'s git repository (``-dirty`` with uncommitted changes), or None."""
    import subprocess

    try:
        head = subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                              timeout=10)
        if head.returncode != 0:
            return None
        status = subprocess.run(["git", "-C", str(folder), "status", "--porcelain", "--", "."],
                                capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return head.stdout.strip() + ("-dirty" if status.stdout.strip() else "")


def image_labels(context: Path) -> dict[str, str]:
    """The labels every submission image carries: helpkit's version, the project's git commit
    (when it is a git checkout), the sha256 of the lock the image installed, the submission."""
    import hashlib

    from helpkit import __version__
    from helpkit.project import project_dir
    from helpkit.submission.wheelhouse import LOCK_NAME

    labels = {"helpkit.version": __version__}
    commit = _git_commit(project_dir())
    if commit:
        labels["helpkit.commit"] = commit
    lock = context / "wheels" / "deps" / LOCK_NAME
    if lock.is_file():
        labels["helpkit.lock-sha256"] = hashlib.sha256(lock.read_bytes()).hexdigest()
    toml = context / "submission.toml"
    if toml.is_file():
        labels["helpkit.submission-sha256"] = hashlib.sha256(toml.read_bytes()).hexdigest()
    return labels


def _build_lines(engine: docker.DockerClient, context: Path, tag: str) -> Iterator[str]:
    """The build's output lines; a build error raises HelpkitError with the last lines."""
    tail: list[str] = []
    image_id = None
    for chunk in engine.api.build(
        path=str(context), tag=tag, rm=True, forcerm=True, pull=False, network_mode="host", decode=True,
        labels=image_labels(context),
    ):
        if "error" in chunk:
            raise HelpkitError(
                f"docker build failed: {chunk['error'].strip()}; last output: " + " | ".join(tail[-8:]), context
            )
        image_id = chunk.get("aux", {}).get("ID", image_id)
        line = str(chunk.get("stream", "")).rstrip()
        if line:
            tail = (tail + [line])[-8:]
            yield line
    if image_id is None:
        raise HelpkitError("docker build finished without an image id; last output: " + " | ".join(tail), context)


def _image_id(engine: docker.DockerClient, tag: str) -> str | None:
    """The id ``tag`` points at now, or None."""
    from docker.errors import ImageNotFound

    try:
        return str(engine.images.get(tag).id)
    except ImageNotFound:
        return None


def _remove_replaced(engine: docker.DockerClient, image_id: str) -> None:
    """Remove the image a rebuild untagged (its layers that the new image shares stay)."""
    from docker.errors import APIError

    try:
        engine.images.remove(image_id)
    except APIError:  # still used by a container or another tag: leave it
        pass


def build_image(context: Path, tag: str, quiet: bool = False) -> BuiltImage:
    """Build ``context`` (host networking, never a pull) and tag it; errors carry the build log tail.

    Progress shows the Dockerfile step being run and prints each step; ``quiet`` prints nothing.
    """
    engine = client()
    start = time.monotonic()
    previous = _image_id(engine, tag)
    if quiet:
        for _ in _build_lines(engine, context, tag):
            pass
    else:
        with progress_bar(transient=True) as bar:
            task = bar.add_task(f"building {tag}", total=None)
            for line in _build_lines(engine, context, tag):
                step = _STEP.match(line)
                if step:
                    bar.update(task, completed=int(step[1]) - 1, total=int(step[2]), description=step[3][:60])
                    bar.console.print(line, style="dim", markup=False, highlight=False)
    image = engine.images.get(tag)
    if previous not in (None, image.id):
        _remove_replaced(engine, previous)
    return BuiltImage(tag, str(image.id), int(image.attrs.get("Size", 0)), time.monotonic() - start)


def build_submission(name_or_path: str | Path, quiet: bool = False, update_lock: bool = False,
                     device: str | None = None) -> BuiltImage:
    """Render ``<project>/build/NAME`` (wheelhouse included: the submission's lock, written on its
    first build, ``update_lock`` to resolve again) and build the submission's image; ``device``
    (``cpu``/``gpu``) overrides the config's, a GPU build tagged ``:gpu``."""
    from helpkit.config import load_submission
    from helpkit.submission.render import render
    from helpkit.submission.static import check_context

    client()  # fail fast, before the wheelhouse, when no engine is reachable
    start = time.monotonic()
    context = render(name_or_path, update_lock=update_lock, device=device)
    check_context(context).raise_errors()
    config = load_submission(context / "submission.toml")
    built = build_image(context, image_tag(config.name, device or config.device), quiet=quiet)
    return BuiltImage(built.tag, built.image_id, built.size_bytes, time.monotonic() - start)
