"""The one place that connects to a Docker engine, so a missing engine reads the same everywhere."""

from __future__ import annotations

from typing import TYPE_CHECKING

from helpkit.errors import HelpkitError

if TYPE_CHECKING:
    import docker

START_ENGINE_HINT = (
    "no Docker engine is reachable. Start one as root (see docs/docker.md): "
    "apt-get install -y docker.io debootstrap; "
    "setsid dockerd --bridge=none --iptables=false --ip-masq=false >/tmp/dockerd.log 2>&1 & "
    "then wait until `docker info` answers"
)


def client(timeout: int = 600) -> docker.DockerClient:
    """A Docker client that has answered a ping; otherwise a HelpkitError saying how to start one."""
    import docker
    from docker.errors import DockerException

    try:
        engine = docker.from_env(timeout=timeout)
        engine.ping()
    except DockerException as err:
        raise HelpkitError(f"{START_ENGINE_HINT} ({err})") from err
    return engine


def engine_reachable() -> bool:
    """Whether a Docker engine answers right now (no error raised)."""
    try:
        client(timeout=10).close()
    except HelpkitError:
        return False
    return True
