"""Run one stage of a submission in a container, as strictly as the platforms do (docs/platform.md).

Every stage runs with ``--network none``, ``--memory X --memory-swap X``, a CPU limit,
``--shm-size``, ``--pids-limit``, ``--cap-drop ALL``, ``--security-opt no-new-privileges``
and a wall-clock limit. The root filesystem is read-only and ``/tmp`` is a tmpfs, so a
write anywhere but the writable mounts (``/data/model``, ``/data/output``) or scratch
``/tmp`` fails the stage with "Read-only file system" instead of passing here and
silently doing something else on the platform.

Peak memory is the kernel's high-water mark of the container's cgroup (page cache
included), polled every 0.1 s while the stage runs: ``memory.max_usage_in_bytes`` on cgroup
v1 (this project's machines: cgroupfs driver, ``/sys/fs/cgroup/memory/docker/<id>``) or
``memory.peak`` on cgroup v2. Where the engine's cgroups are not visible (a remote engine),
it falls back to the engine's stats stream, one sample a second, so a very short stage may
report none. An out-of-memory kill is read from the container's ``State.OOMKilled``.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from helpkit.config import Limits
from helpkit.submission.paths import PLATFORM

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container

Stage = Literal["train", "inference"]
LOG_TAIL_LINES = 60

HINTS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"Read-only file system"), "it writes outside /data/model and /data/output (the root filesystem is read-only; use /data/model, or /tmp for scratch)"),
    (re.compile(r"Temporary failure in name resolution|Name or service not known|Network is unreachable|No address associated with hostname|getaddrinfo failed"), "it needs the network, which the platform does not have (--network none)"),
    (re.compile(r"No such file or directory: '(?!/)([^']+)'"), "it opens the relative path '{0}', which does not exist in the container's working directory /app (use the platform's absolute paths)"),
    (re.compile(r"No such file or directory: '(/[^']+)'"), "it opens '{0}', which does not exist in the container"),
    (re.compile(r"Permission denied"), "permission denied (the stage runs with --cap-drop ALL and no-new-privileges)"),
)
"""Known failure signatures in a log tail and what they mean for the submission's author."""


@dataclass
class StageResult:
    """How one stage went: the facts the report records and the verdict is drawn from."""

    stage: Stage
    image: str
    exit_code: int | None = None
    duration_s: float = 0.0
    timed_out: bool = False
    oom_killed: bool = False
    peak_memory_bytes: int | None = None
    peak_memory_source: str = ""
    memory_limit: str = ""
    timeout_s: float = 0.0
    log_tail: list[str] = field(default_factory=list)
    command: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """The stage finished in time, was not killed, and exited 0."""
        return self.exit_code == 0 and not self.timed_out and not self.oom_killed

    def failure(self) -> str | None:
        """Why the stage failed, in the author's terms; None when it succeeded."""
        if self.ok:
            return None
        if self.timed_out:
            return f"{self.stage} stage exceeded its time limit of {self.timeout_s:g} s and was killed"
        if self.oom_killed:
            return f"{self.stage} stage exceeded its memory limit of {self.memory_limit} and was killed (out of memory)"
        reason = f"{self.stage} stage exited with code {self.exit_code}"
        hint = explain(self.log_tail)
        last = next((line for line in reversed(self.log_tail) if line.strip()), "")
        return f"{reason}: {hint}" + (f" [last log line: {last.strip()}]" if last else "")

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form, with the failure reason."""
        return {**asdict(self), "ok": self.ok, "failure": self.failure()}


def explain(log_tail: list[str]) -> str:
    """The first known failure signature found in a log tail, latest lines first."""
    for line in reversed(log_tail):
        for pattern, hint in HINTS:
            match = pattern.search(line)
            if match:
                return hint.format(*match.groups())
    return "see the log tail"


CGROUP_PEAK_FILES = (
    "/sys/fs/cgroup/memory/docker/{id}/memory.max_usage_in_bytes",
    "/sys/fs/cgroup/docker/{id}/memory.peak",
    "/sys/fs/cgroup/system.slice/docker-{id}.scope/memory.peak",
)
"""Where the engine's cgroup drivers put a container's memory high-water mark."""
POLL_S = 0.1


def _poll_cgroup(peak_file: Path, result: StageResult) -> None:
    """Read the cgroup's high-water mark until the cgroup disappears with the container."""
    result.peak_memory_source = f"cgroup {peak_file.name}, polled every {POLL_S} s"
    while True:
        try:
            peak = int(peak_file.read_text())
        except (OSError, ValueError):
            return
        result.peak_memory_bytes = max(peak, result.peak_memory_bytes or 0)
        time.sleep(POLL_S)


def _stream_stats(container: Container, result: StageResult) -> None:
    """Record peak memory from the engine's stats stream until it ends with the container."""
    try:
        for sample in container.stats(stream=True, decode=True):
            memory = sample.get("memory_stats") or {}
            peak = memory.get("max_usage") or memory.get("usage")
            if peak and peak > (result.peak_memory_bytes or 0):
                result.peak_memory_bytes = int(peak)
                result.peak_memory_source = "docker stats memory_stats (about 1 sample/s)"
    except Exception:  # noqa: BLE001  the stream may end with an error when the container goes: keep the samples
        return


def _watch_memory(container: Container, result: StageResult) -> None:
    """Follow the stage's peak memory, from its cgroup file when visible, else from docker stats."""
    for pattern in CGROUP_PEAK_FILES:
        peak_file = Path(pattern.format(id=container.id))
        if peak_file.is_file():
            _poll_cgroup(peak_file, result)
            return
    _stream_stats(container, result)


def run_stage(
    engine: docker.DockerClient,
    image: str,
    stage: Stage,
    mounts: dict[str, tuple[Path, str]],
    limits: Limits,
) -> StageResult:
    """Run ``./train.sh`` or ``./inference.sh`` of ``image`` with ``mounts`` ({container path: (host path, 'ro'|'rw')})."""
    from docker.errors import APIError
    from requests.exceptions import RequestException

    timeout = limits.train_timeout_s if stage == "train" else limits.infer_timeout_s
    command = ["./train.sh" if stage == "train" else "./inference.sh"]
    result = StageResult(stage, image, memory_limit=limits.memory, timeout_s=timeout, command=command)
    container = engine.containers.create(
        image,
        command=command,
        network_mode="none",
        mem_limit=limits.memory,
        memswap_limit=limits.memory,
        nano_cpus=int(limits.cpus * 1e9),
        shm_size=limits.shm_size,
        pids_limit=limits.pids_limit,
        cap_drop=["ALL"],
        security_opt=["no-new-privileges"],
        read_only=True,
        tmpfs={"/tmp": f"rw,nosuid,nodev,size={limits.tmp_size}"},
        volumes={str(host.resolve()): {"bind": inside, "mode": mode} for inside, (host, mode) in mounts.items()},
        labels={"helpkit.stage": stage},
    )
    try:
        watcher = threading.Thread(target=_watch_memory, args=(container, result), daemon=True)
        start = time.monotonic()
        container.start()
        watcher.start()
        try:
            result.exit_code = int(container.wait(timeout=timeout)["StatusCode"])
        except RequestException:
            result.timed_out = True
            try:
                container.kill()
            except APIError:  # it exited between the timeout and the kill
                pass
            container.wait(timeout=60)
        result.duration_s = round(time.monotonic() - start, 2)
        watcher.join(timeout=5)
        container.reload()
        result.oom_killed = bool(container.attrs["State"].get("OOMKilled"))
        logs = container.logs(stdout=True, stderr=True, tail=LOG_TAIL_LINES)
        result.log_tail = logs.decode("utf-8", errors="replace").splitlines()
    finally:
        container.remove(force=True)
    return result


def stage_mounts(stage: Stage, data_dir: Path, model_dir: Path, output_dir: Path) -> dict[str, tuple[Path, str]]:
    """The platform's mounts for a stage: data read-only, model (and output) writable."""
    if stage == "train":
        return {PLATFORM.train: (data_dir / "train", "ro"), PLATFORM.model: (model_dir, "rw")}
    return {
        PLATFORM.test: (data_dir / "test", "ro"),
        PLATFORM.model: (model_dir, "rw"),
        PLATFORM.output: (output_dir, "rw"),
    }
