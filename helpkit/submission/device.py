"""What an image runs TensorFlow on (``device`` of submission.toml) and whether its stages get GPUs.

``cpu`` images ship ``tensorflow-cpu`` (helpkit's own dependency). ``gpu`` images ship the
``gpu`` extra of pyproject.toml instead, ``tensorflow[and-cuda]`` (TensorFlow built with
CUDA, the CUDA and cuDNN libraries as wheels: the host needs only the NVIDIA driver and the
NVIDIA container toolkit). The swap is made in the helpkit wheel built for the image (its
``Requires-Dist``), so the wheelhouse resolves it like any other dependency, the CPU build
never lands in a GPU image, and ``pip check`` in the image still holds.

The validator runs a GPU image's stages with every GPU of the host (``docker run --gpus
all``) when the engine can hand them out; when it cannot, the stages run on the CPU and the
verdict says GPU use was not checked.
"""

from __future__ import annotations

import re
import tomllib
from typing import TYPE_CHECKING, Any

from helpkit.errors import HelpkitError

if TYPE_CHECKING:
    import docker

DEVICES = ("cpu", "gpu")
CPU_TENSORFLOW = "tensorflow-cpu"
LABEL = "helpkit.device"
"""Image label holding the device an image was built for (the validator reads it)."""
GPU_NOT_CHECKED = (
    "GPU use not checked: this host's Docker engine has no GPU to give (no nvidia runtime or CDI GPU), "
    "so the GPU image's stages ran on the CPU"
)


def _name(requirement: str) -> str:
    return re.split(r"[\[<>=!~;\s]", requirement.strip(), maxsplit=1)[0].lower()


def package_requirements(device: str, pyproject_text: str) -> list[str]:
    """helpkit's requirements in an image for ``device``, from the text of its pyproject.toml.

    ``gpu``: the ``tensorflow-cpu`` requirement is replaced, in place, by the ``gpu`` extra.
    """
    if device not in DEVICES:
        raise HelpkitError(f"unknown device {device!r} (known: {', '.join(DEVICES)})")
    project = tomllib.loads(pyproject_text)["project"]
    requirements = list(project["dependencies"])
    if device == "cpu":
        return requirements
    cpu = [r for r in requirements if _name(r) == CPU_TENSORFLOW]
    extra = project.get("optional-dependencies", {}).get(device)
    if len(cpu) != 1 or not extra:
        raise HelpkitError(f"pyproject.toml must list {CPU_TENSORFLOW} once among the dependencies and have "
                           f"a '{device}' extra to build a {device} image")
    index = requirements.index(cpu[0])
    return requirements[:index] + list(extra) + requirements[index + 1 :]


def device_pyproject(text: str, device: str) -> str:
    """``text`` (a pyproject.toml) with the dependencies ``package_requirements(device, text)`` names."""
    cpu, swapped = package_requirements("cpu", text), package_requirements(device, text)
    if cpu == swapped:
        return text
    (old,) = [r for r in cpu if r not in swapped]
    new = ", ".join(f'"{r}"' for r in swapped if r not in cpu)
    if text.count(f'"{old}"') != 1:
        raise HelpkitError(f"cannot swap {old!r} for the {device} build: it must appear once in pyproject.toml")
    return text.replace(f'"{old}"', new)


def device_metadata(text: str, device: str) -> str:
    """A wheel's METADATA with the requirements of ``device``: for ``gpu``, the ``tensorflow-cpu``
    ``Requires-Dist`` replaced by the ``gpu`` extra's, unconditional (an installed helpkit repacked)."""
    if device not in DEVICES:
        raise HelpkitError(f"unknown device {device!r} (known: {', '.join(DEVICES)})")
    if device == "cpu":
        return text
    lines = text.split("\n")
    key = "Requires-Dist:"
    cpu = [i for i, line in enumerate(lines) if line.startswith(key) and _name(line[len(key):]) == CPU_TENSORFLOW]
    extra = [line.split(";")[0].strip() for line in lines
             if line.startswith(key) and re.search(rf"""extra\s*==\s*["']{device}["']""", line)]
    if len(cpu) != 1 or not extra:
        raise HelpkitError(f"helpkit's installed metadata has no single {CPU_TENSORFLOW} requirement and "
                           f"'{device}' extra to swap for a {device} image")
    return "\n".join(lines[: cpu[0]] + extra + lines[cpu[0] + 1 :])


def host_gpus(engine: docker.DockerClient) -> bool:
    """Whether ``engine`` can give containers GPUs: an nvidia runtime, or a CDI-discovered GPU."""
    info: dict[str, Any] = engine.info()
    if "nvidia" in (info.get("Runtimes") or {}):
        return True
    devices = info.get("DiscoveredDevices") or []
    return any("gpu" in str(d.get("ID", "")).lower() for d in devices if isinstance(d, dict))


def device_requests(gpus: bool) -> list[Any]:
    """``device_requests`` of ``containers.create``: every GPU (``--gpus all``) when ``gpus``, else none."""
    if not gpus:
        return []
    from docker.types import DeviceRequest

    return [DeviceRequest(count=-1, capabilities=[["gpu"]])]


def image_device(engine: docker.DockerClient, image: str) -> str:
    """The device ``image`` was built for (its ``helpkit.device`` label; ``cpu`` without one)."""
    labels = engine.images.get(image).labels or {}
    return labels.get(LABEL, "cpu")
