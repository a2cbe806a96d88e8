"""Run one stage of a submission in a container, as strictly as the platforms do (PLATFORM.md).

Every stage runs with ``--network none``, ``--memory X --memory-swap X``, a CPU limit,
``--shm-size``, ``--pids-limit``, ``--cap-drop ALL``, ``--security-opt no-new-privileges``
and a wall-clock limit. The root filesystem is read-only and ``/tmp`` is a tmpfs, so a
write anywhere but the writable mounts (``/data/model``, ``/data/output``) or scratch
``/tmp`` fails the stage with "Read-only file system" instead of passing here and
silently doing something else on the platform.

Peak memory comes from the engine's stats stream, sampled about once a second while the
stage runs: on cgroup v1 (this project's machines) ``memory_stats.max_usage`` is the
kernel's own high-water mark (page cache included); on cgroup v2, which has no such field
in the API, it is the largest ``usage`` sampled. A stage shorter than a sample may report
none. An out-of-memory kill is read from the container's ``State.OOMKilled``.
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


def _watch_memory(container: Container, result: StageResult) -> None:
    """Record the container's peak memory from the stats stream until it stops."""
    try:
        for sample in container.stats(stream=True, decode=True):
            memory = sample.get("memory_stats") or {}
            if "max_usage" in memory:
                peak, source = memory["max_usage"], "docker stats memory_stats.max_usage (cgroup v1 high-water mark)"
            elif "usage" in memory:
                peak, source = memory["usage"], "largest docker stats memory_stats.usage sample (cgroup v2)"
            else:
                continue
            if peak and peak > (result.peak_memory_bytes or 0):
                result.peak_memory_bytes, result.peak_memory_source = int(peak), source
    except Exception:  # noqa: BLE001  the stream ends with the container, sometimes with an error: peak stays as sampled
        return


def run_stage(
    engine: docker.DockerClient,
    image: str,
    stage: Stage,
    mounts: dict[str, tuple[Path, str]],
    limits: Limits,
) -> StageResult:
    """Run ``./train.sh`` or ``./inference.sh`` of ``image`` with ``mounts`` ({container path: (host path, 'ro'|'rw')})."""
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
            container.kill()
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
