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

A pids-limit hit is read from the same cgroups (``pids.events``: how many forks and thread
creations the kernel refused) and from the log's signatures ("can't start new thread",
"Resource temporarily unavailable"). What the writable mounts hold is measured on the host
while the stage runs (a stage over its cap is killed, before it fills the host's disk) and
after it ends. The whole log goes to a file; the result keeps its last lines.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from helpkit.config import Limits, format_bytes, size_bytes
from helpkit.io import folder_bytes
from helpkit.submission.paths import PLATFORM

if TYPE_CHECKING:
    import docker
    from docker.models.containers import Container

Stage = Literal["train", "inference"]
LOG_TAIL_LINES = 60
LOG_TAIL_MAX_BYTES = 4 * 2**20
"""The log tail kept in the result (and the JSON report) never holds more than this; the log file holds all."""
MAX_LINE = 300
"""Longest verdict, failure or warning line printed; longer ones end in an ellipsis."""
ELLIPSIS = "…"


def clip(text: str, limit: int = MAX_LINE) -> str:
    """``text`` on one line of at most ``limit`` characters, cut with an ellipsis."""
    text = " ".join(text.split("\n"))
    return text if len(text) <= limit else text[: limit - len(ELLIPSIS)] + ELLIPSIS


PIDS_HINT_START = "it hit the pids limit"
HINTS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"can't start new thread|Resource temporarily unavailable|fork: retry|[Cc]annot fork|pthread_create"),
     PIDS_HINT_START + " of {pids_limit} processes and threads (limits.pids_limit): a thread or process could not be started"),
    (re.compile(r"No space left on device(?:: '(/dev/shm[^']*)')"),
     "no space left in {0}: /dev/shm holds limits.shm_size = {shm_size}"),
    (re.compile(r"No space left on device(?:: '(/data/[^']*)')"),
     "no space left on the host's disk writing {0}"),
    (re.compile(r"No space left on device"),
     "no space left on device: /tmp is a tmpfs of limits.tmp_size = {tmp_size} (scratch beyond it belongs in /data/output, or raise tmp_size)"),
    (re.compile(r"Read-only file system: '(/data/model[^']*)'"),
     "it writes {0} in the inference stage, where /data/model is read-only "
     "(limits.model_writable_in_inference = false); put scratch in /tmp or /data/output"),
    (re.compile(r"Read-only file system"), "it writes outside /data/model and /data/output (the root filesystem is read-only; use /data/model, or /tmp for scratch)"),
    (re.compile(r"Temporary failure in name resolution|Name or service not known|Network is unreachable|No address associated with hostname|getaddrinfo failed"), "it needs the network, which the platform does not have (--network none)"),
    (re.compile(r"No such file or directory: '(?!/)([^']+)'"), "it opens the relative path '{0}', which does not exist in the container's working directory /app (use the platform's absolute paths)"),
    (re.compile(r"No such file or directory: '(/[^']+)'"), "it opens '{0}', which does not exist in the container"),
    (re.compile(r"Permission denied"), "permission denied (the stage runs with --cap-drop ALL and no-new-privileges)"),
)
"""Known failure signatures in a log tail and what they mean for the submission's author."""


MOUNT_CAPS = {PLATFORM.model: "model_max_size", PLATFORM.output: "output_max_size"}
"""The writable mounts whose size a stage is held to, and the limit that caps each."""


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
    pids_limit: int = 0
    tmp_size: str = ""
    shm_size: str = ""
    user: str | None = None
    pids_refused: int | None = None
    """Forks and thread creations the pids cgroup refused (``pids.events`` max); None where not visible."""
    pids_peak: int | None = None
    disk_bytes: dict[str, int] = field(default_factory=dict)
    """What each writable mount holds after the stage (bytes, files' apparent sizes)."""
    disk_caps: dict[str, str] = field(default_factory=dict)
    """The cap of each writable mount, as written in the limits."""
    disk_killed: str = ""
    """The mount whose cap the stage passed while running, so it was killed; '' otherwise."""
    log_path: str = ""
    log_tail: list[str] = field(default_factory=list)
    command: list[str] = field(default_factory=list)

    @property
    def over_disk_caps(self) -> list[str]:
        """The writable mounts that hold more than their cap."""
        return [m for m, cap in self.disk_caps.items()
                if m == self.disk_killed or self.disk_bytes.get(m, 0) > size_bytes(cap)]

    @property
    def ok(self) -> bool:
        """The stage finished in time, was not killed, exited 0, and stayed within its disk caps."""
        return self.exit_code == 0 and not self.timed_out and not self.oom_killed and not self.over_disk_caps

    def _disk_reason(self) -> str:
        mount = self.over_disk_caps[0]
        limit = MOUNT_CAPS[mount]
        held = format_bytes(self.disk_bytes.get(mount, 0))
        if mount == self.disk_killed:
            return (f"{self.stage} stage wrote {held} to {mount}, above its cap of {self.disk_caps[mount]} "
                    f"(limits.{limit}), and was killed")
        return f"{self.stage} stage left {held} in {mount}, above its cap of {self.disk_caps[mount]} (limits.{limit})"

    def _pids_note(self) -> str:
        if not self.pids_refused:
            return ""
        return (f"; it hit the pids limit of {self.pids_limit} processes and threads (limits.pids_limit): "
                f"{self.pids_refused} refused")

    def failure(self) -> str | None:
        """Why the stage failed, in the author's terms, on one line; None when it succeeded."""
        if self.ok:
            return None
        if self.disk_killed or (self.exit_code == 0 and self.over_disk_caps):
            return clip(self._disk_reason())
        if self.timed_out:
            return clip(f"{self.stage} stage exceeded its time limit of {self.timeout_s:g} s and was killed" + self._pids_note())
        if self.oom_killed:
            return clip(f"{self.stage} stage exceeded its memory limit of {self.memory_limit} and was killed (out of memory)")
        reason = f"{self.stage} stage exited with code {self.exit_code}"
        hint = explain(self.log_tail, pids_limit=self.pids_limit, tmp_size=self.tmp_size, shm_size=self.shm_size)
        if hint == UNEXPLAINED and self.pids_refused:
            hint = self._pids_note()[2:]
        elif hint.startswith(PIDS_HINT_START) and self.pids_refused is not None:
            hint = (f"{hint} ({self.pids_refused} refused)" if self.pids_refused
                    else f"a thread or process could not be started, though the pids cgroup refused none "
                         f"(so not the pids limit of {self.pids_limit}; memory or a ulimit?)")
        last = next((line for line in reversed(self.log_tail) if line.strip()), "")
        last_note = f" [last log line: {clip(last.strip(), 100)}]" if last else ""
        return clip(f"{reason}: {hint}", MAX_LINE - len(last_note)) + last_note

    def to_dict(self) -> dict[str, object]:
        """JSON-ready form, with the failure reason."""
        return {**asdict(self), "ok": self.ok, "failure": self.failure()}


UNEXPLAINED = "see the log tail"


def explain(log_tail: list[str], pids_limit: int | str = "?", tmp_size: str = "?", shm_size: str = "?") -> str:
    """The first known failure signature found in a log tail, latest lines first, with the limits it names."""
    for line in reversed(log_tail):
        for pattern, hint in HINTS:
            match = pattern.search(line)
            if match:
                return hint.format(*match.groups(), pids_limit=pids_limit, tmp_size=tmp_size, shm_size=shm_size)
    return UNEXPLAINED


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


def _watch_memory(container: Container, result: StageResult, started: threading.Event) -> None:
    """Follow the stage's peak memory, from its cgroup file when visible, else from docker stats.

    Started before the container: it looks for the cgroup until the container has started and
    one more look has failed, so a stage that ends within a second is not missed because this
    thread was scheduled late (under load it was, and the peak went unrecorded)."""
    while True:
        was_started = started.is_set()
        for pattern in CGROUP_PEAK_FILES:
            peak_file = Path(pattern.format(id=container.id))
            if peak_file.is_file():
                _poll_cgroup(peak_file, result)
                return
        if was_started:
            break
        started.wait(POLL_S / 10)
    _stream_stats(container, result)


CGROUP_PIDS_DIRS = (
    "/sys/fs/cgroup/pids/docker/{id}",
    "/sys/fs/cgroup/docker/{id}",
    "/sys/fs/cgroup/system.slice/docker-{id}.scope",
)
"""Where the engine's cgroup drivers put a container's pids controller (pids.events, pids.peak)."""
DISK_POLL_S = 1.0


def _read_pids(pids_dir: Path, result: StageResult) -> bool:
    """Update the refused-fork count and peak from a pids cgroup; False once the cgroup is gone."""
    try:
        events = (pids_dir / "pids.events").read_text().split()
    except OSError:
        return False
    if len(events) >= 2 and events[0] == "max":
        result.pids_refused = int(events[1])
    try:
        result.pids_peak = max(int((pids_dir / "pids.peak").read_text()), result.pids_peak or 0)
    except (OSError, ValueError):  # pids.peak is absent on older kernels
        pass
    return True


def _watch_pids_and_disk(container: Container, result: StageResult, caps: dict[str, tuple[Path, int]],
                         stop: threading.Event) -> None:
    """Follow refused forks, and kill the stage when a writable mount passes its cap (before the host's disk fills)."""
    pids_dir = next((Path(d.format(id=container.id)) for d in CGROUP_PIDS_DIRS
                     if Path(d.format(id=container.id)).is_dir()), None)
    last_disk = 0.0
    while not stop.is_set():
        if pids_dir is not None and not _read_pids(pids_dir, result):
            pids_dir = None
        if time.monotonic() - last_disk >= DISK_POLL_S:
            last_disk = time.monotonic()
            for mount, (host, cap) in caps.items():
                result.disk_bytes[mount] = folder_bytes(host)
                if result.disk_bytes[mount] > cap:
                    result.disk_killed = mount
                    try:
                        container.kill()
                    except Exception:  # noqa: BLE001  it exited meanwhile: the measure after the stage still counts
                        pass
                    return
        stop.wait(POLL_S)


def _tail(log_file: Path, lines: int = LOG_TAIL_LINES, max_bytes: int = LOG_TAIL_MAX_BYTES) -> list[str]:
    """The last ``lines`` lines of a log file, from at most its last ``max_bytes`` bytes."""
    size = log_file.stat().st_size
    with log_file.open("rb") as handle:
        handle.seek(max(0, size - max_bytes))
        data = handle.read()
    text = data.decode("utf-8", errors="replace").splitlines()
    if size > max_bytes and text:  # the first line read is cut: mark it, or drop it when others follow
        text = text[1:] if len(text) > 1 else [ELLIPSIS + text[0]]
    return text[-lines:]


def _save_log(container: Container, log_file: Path) -> None:
    """The container's whole log (stdout and stderr, interleaved) into ``log_file``, replaced atomically
    (a live follower still holding the old file never mixes into it)."""
    partial = log_file.with_name(f".{log_file.name}.{os.getpid()}.part")
    with partial.open("wb") as handle:
        for chunk in container.logs(stdout=True, stderr=True, stream=True, follow=False):
            handle.write(chunk)
    os.replace(partial, log_file)


def _emit(on_line: Callable[[str], None], raw: bytes) -> None:
    """One log line to ``on_line``: decoded, and only what a terminal shows after a carriage return."""
    try:
        on_line(raw.decode("utf-8", errors="replace").rstrip("\r").rsplit("\r", 1)[-1])
    except Exception:  # noqa: BLE001  a printing problem never stops the log from being kept
        pass


def _follow_log(container: Container, log_file: Path, on_line: Callable[[str], None] | None) -> None:
    """Write the container's log to ``log_file`` as it comes (stdout and stderr, interleaved), and hand
    each complete line to ``on_line``, until the stream ends with the container. A followed stream
    may miss the last lines when the engine closes it at the container's exit, so ``run_stage``
    replaces the file with the engine's whole log once the stage is over."""
    pending = b""
    with log_file.open("wb") as handle:
        try:
            for chunk in container.logs(stdout=True, stderr=True, stream=True, follow=True):
                handle.write(chunk)
                handle.flush()
                if on_line is not None:
                    *lines, pending = (pending + chunk).split(b"\n")
                    for line in lines:
                        _emit(on_line, line)
        except Exception:  # noqa: BLE001  the engine dropped the stream: run_stage saves the log after the stage
            return
    if pending and on_line is not None:
        _emit(on_line, pending)


def run_stage(
    engine: docker.DockerClient,
    image: str,
    stage: Stage,
    mounts: dict[str, tuple[Path, str]],
    limits: Limits,
    log_path: Path | None = None,
    gpus: bool = False,
    on_line: Callable[[str], None] | None = None,
) -> StageResult:
    """Run ``./train.sh`` or ``./inference.sh`` of ``image`` with ``mounts`` ({container path: (host path, 'ro'|'rw')}).

    The whole log is written to ``log_path`` when given (else only its tail is kept). Each
    writable mount in ``MOUNT_CAPS`` is held to its cap from ``limits``. ``gpus``: the
    container gets every GPU of the host (``--gpus all``). The log is followed while the stage
    runs: written to the file as it comes, each line handed to ``on_line`` (``helpkit submission
    validate`` prints them live).
    """
    from helpkit.submission.device import device_requests

    from docker.errors import APIError
    from requests.exceptions import RequestException

    timeout = limits.train_timeout_s if stage == "train" else limits.infer_timeout_s
    command = ["./train.sh" if stage == "train" else "./inference.sh"]
    result = StageResult(stage, image, memory_limit=limits.memory, timeout_s=timeout, command=command,
                         pids_limit=limits.pids_limit, tmp_size=limits.tmp_size, shm_size=limits.shm_size,
                         user=limits.user)
    caps = {inside: (host, size_bytes(getattr(limits, MOUNT_CAPS[inside])))
            for inside, (host, mode) in mounts.items() if mode == "rw" and inside in MOUNT_CAPS}
    result.disk_caps = {inside: getattr(limits, MOUNT_CAPS[inside]) for inside in caps}
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
        user=limits.user or "",
        tmpfs={"/tmp": f"rw,nosuid,nodev,mode=1777,size={limits.tmp_size}"},
        volumes={str(host.resolve()): {"bind": inside, "mode": mode} for inside, (host, mode) in mounts.items()},
        labels={"helpkit.stage": stage},
        device_requests=device_requests(gpus),
    )
    stop = threading.Event()
    scratch = tempfile.TemporaryDirectory(prefix="helpkit-log-")
    log_file = Path(log_path) if log_path is not None else Path(scratch.name) / "stage.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    try:
        started = threading.Event()
        watcher = threading.Thread(target=_watch_memory, args=(container, result, started), daemon=True)
        guard = threading.Thread(target=_watch_pids_and_disk, args=(container, result, caps, stop), daemon=True)
        follower = threading.Thread(target=_follow_log, args=(container, log_file, on_line), daemon=True)
        watcher.start()  # before the container: a short stage's cgroup is there only while it runs
        start = time.monotonic()
        container.start()
        started.set()
        follower.start()
        guard.start()
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
        stop.set()
        watcher.join(timeout=5)
        guard.join(timeout=30)
        for inside, (host, _cap) in caps.items():
            result.disk_bytes[inside] = folder_bytes(host)
        container.reload()
        result.oom_killed = bool(container.attrs["State"].get("OOMKilled"))
        follower.join(timeout=30)
        _save_log(container, log_file)  # the engine's whole log, whatever the live stream caught
        result.log_tail = _tail(log_file)
        result.log_path = str(log_path) if log_path is not None else ""
    finally:
        stop.set()
        container.remove(force=True)
        scratch.cleanup()
    return result


def stage_mounts(stage: Stage, data_dir: Path, model_dir: Path, output_dir: Path,
                 model_writable: bool = False) -> dict[str, tuple[Path, str]]:
    """The platform's mounts for a stage: data read-only; model writable in training, read-only in
    inference unless ``model_writable`` (limits.model_writable_in_inference); output writable."""
    from helpkit.layouts import platform_folders  # CAMELYON16: training/ and testing/images

    train, test = platform_folders(data_dir)
    if stage == "train":
        return {PLATFORM.train: (train, "ro"), PLATFORM.model: (model_dir, "rw")}
    return {
        PLATFORM.test: (test, "ro"),
        PLATFORM.model: (model_dir, "rw" if model_writable else "ro"),
        PLATFORM.output: (output_dir, "rw"),
    }
