"""GPU images (helpkit.submission.device): the wheel of a GPU image asks for TensorFlow with
CUDA instead of tensorflow-cpu, the Dockerfile is labelled with its device, and the validator
gives the stages GPUs only where the host has them, saying so in the verdict where it has none."""

from __future__ import annotations

import json
import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

from helpkit.config import load_submission
from helpkit.errors import HelpkitError
from helpkit.submission.device import (
    GPU_NOT_CHECKED,
    device_metadata,
    device_pyproject,
    device_requests,
    host_gpus,
    package_requirements,
)
from helpkit.submission.wheelhouse import REPO_ROOT, _resolve_offline, build_helpkit_wheel

PYPROJECT = (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8")
FIXTURES = Path(__file__).parent / "fixtures" / "submissions"


def _names(requirements: list[str]) -> list[str]:
    return [r.split("[")[0].split(">")[0].split("=")[0].strip().lower() for r in requirements]


def test_gpu_requirements_swap_tensorflow_cpu_for_the_gpu_extra_at_the_same_range() -> None:
    cpu, gpu = package_requirements("cpu", PYPROJECT), package_requirements("gpu", PYPROJECT)
    (cpu_tf,) = [r for r in cpu if r.startswith("tensorflow-cpu")]
    (gpu_tf,) = [r for r in gpu if r.startswith("tensorflow")]
    assert gpu_tf.startswith("tensorflow[and-cuda]") and gpu_tf.split("]")[1] == cpu_tf[len("tensorflow-cpu"):]
    assert "tensorflow-cpu" not in _names(gpu)
    assert [r for r in gpu if r != gpu_tf] == [r for r in cpu if r != cpu_tf], "nothing else changes"
    with pytest.raises(HelpkitError, match="unknown device"):
        package_requirements("tpu", PYPROJECT)


def _metadata(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as zf:
        (name,) = [n for n in zf.namelist() if n.endswith(".dist-info/METADATA")]
        return zf.read(name).decode()


def _requires(metadata: str) -> list[str]:
    return [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]


def test_gpu_wheel_requires_cuda_tensorflow_and_not_the_cpu_build(tmp_path: Path) -> None:
    gpu = _requires(_metadata(build_helpkit_wheel(tmp_path / "gpu", "gpu")))
    unconditional = [r for r in gpu if "extra ==" not in r]
    assert any(r.replace(" ", "").startswith("tensorflow[and-cuda]>=") for r in unconditional), gpu
    assert not any(r.startswith("tensorflow-cpu") or r.startswith("tensorflow_cpu") for r in gpu), gpu
    cpu = _requires(_metadata(build_helpkit_wheel(tmp_path / "cpu", "cpu")))
    assert any(r.startswith("tensorflow-cpu") or r.startswith("tensorflow_cpu") for r in cpu), cpu


def test_repacked_metadata_swaps_the_same_way() -> None:
    metadata = ("Metadata-Version: 2.4\nName: helpkit\nRequires-Dist: numpy>=1.26\nRequires-Dist: tensorflow-cpu>=2.16\n"
                "Provides-Extra: gpu\nRequires-Dist: tensorflow[and-cuda]>=2.16; extra == \"gpu\"\n\nREADME\n")
    swapped = _requires(device_metadata(metadata, "gpu"))
    assert swapped[:2] == ["numpy>=1.26", "tensorflow[and-cuda]>=2.16"] and "tensorflow-cpu>=2.16" not in swapped
    assert device_metadata(metadata, "cpu") == metadata
    assert device_pyproject(PYPROJECT, "cpu") == PYPROJECT


def test_gpu_wheelhouse_plan_holds_cuda_tensorflow_not_the_cpu_build(tmp_path: Path) -> None:
    """What the wheelhouse would place for a GPU image, resolved offline from the local cache."""
    from helpkit.project import cache_dir

    cache = cache_dir()
    if not any(cache.glob("tensorflow-*.whl")) or not any(cache.glob("nvidia_cudnn*.whl")):
        pytest.skip(f"no TensorFlow-with-CUDA wheels in {cache} (a GPU build downloads them)")
    wheel = build_helpkit_wheel(tmp_path, "gpu")
    files, message = _resolve_offline(wheel, cache)
    if files is None and "No matching distribution" in message:
        pytest.skip(f"the cache lacks a wheel the GPU image needs (a GPU build downloads it): {message}")
    assert files is not None, message
    names = [f.name for f in files]
    assert any(n.startswith("tensorflow-") for n in names) and not any(n.startswith("tensorflow_cpu") for n in names)
    assert any(n.startswith("nvidia_cudnn_cu12") for n in names) and any(n.startswith("nvidia_cublas") for n in names)


def test_dockerfile_is_labelled_with_its_device(tmp_path: Path) -> None:
    from helpkit.submission.render import lock_path, render_templates

    config = load_submission("simple-maxprob")
    assert config.device == "cpu"
    render_templates(config, tmp_path / "cpu")
    render_templates(config, tmp_path / "gpu", device="gpu")
    cpu, gpu = ((tmp_path / d / "Dockerfile").read_text() for d in ("cpu", "gpu"))
    assert 'LABEL helpkit.device="cpu"' in cpu and "NVIDIA" not in cpu
    assert 'LABEL helpkit.device="gpu"' in gpu and "TF_FORCE_GPU_ALLOW_GROWTH=true" in gpu
    toml = tmp_path / "s" / "submission.toml"
    assert lock_path(toml, "s", "gpu").name == "submission.gpu.lock" and lock_path(toml, "s").name == "submission.lock"


def test_device_in_submission_toml(tmp_path: Path) -> None:
    base = (REPO_ROOT / "helpkit" / "submissions" / "simple-maxprob" / "submission.toml").read_text()
    path = tmp_path / "submission.toml"
    path.write_text('device = "gpu"\n' + base)
    assert load_submission(path).device == "gpu"
    path.write_text('device = "tpu"\n' + base)
    with pytest.raises(HelpkitError, match="device"):
        load_submission(path)


class _Engine:
    def __init__(self, info: dict) -> None:
        self._info = info

    def info(self) -> dict:
        return self._info


def test_host_gpus_from_the_engine_and_the_request_it_makes() -> None:
    assert not host_gpus(_Engine({"Runtimes": {"runc": {}}, "DiscoveredDevices": None}))
    assert host_gpus(_Engine({"Runtimes": {"runc": {}, "nvidia": {"path": "nvidia-container-runtime"}}}))
    assert host_gpus(_Engine({"Runtimes": {}, "DiscoveredDevices": [{"Source": "cdi", "ID": "nvidia.com/gpu=all"}]}))
    assert device_requests(False) == []
    (request,) = device_requests(True)
    assert request["Count"] == -1 and request["Capabilities"] == [["gpu"]]


def test_verdict_of_a_gpu_image_on_a_host_without_gpus_says_gpu_use_was_not_checked() -> None:
    from helpkit.submission.contract import MAX_LINE
    from helpkit.submission.validate import ValidationReport

    report = ValidationReport("s", "d")
    assert report.verdict == "PASS"
    report.device = {"image": "gpu", "gpus": False, "gpu_checked": False}
    assert report.verdict == f"PASS ({GPU_NOT_CHECKED})" and len(report.verdict) <= MAX_LINE
    assert report.to_dict()["device"]["gpu_checked"] is False
    report.fail("inference stage: exit 1")
    assert report.verdict.startswith("FAIL: inference")


@pytest.mark.docker
def test_validator_runs_a_gpu_image_and_says_what_it_could_check(engine, tmp_path: Path) -> None:
    """A stand-in image labelled gpu: on a host without GPUs it runs on the CPU (no device request,
    which Docker would refuse) and passes with the note; with GPUs, the stages get them."""
    from helpkit.submission.docker_engine import client
    from helpkit.submission.validate import validate

    data = tmp_path / "data"
    for rel in ("train/image/positive/Slide001.tiff", "train/mask/positive/Slide001.png",
                "train/image/negative/Slide002.tiff", "test/Slide003.tiff"):
        (data / rel).parent.mkdir(parents=True, exist_ok=True)
        (data / rel).write_bytes(b"placeholder")
    context = Path(shutil.copytree(FIXTURES / "good", tmp_path / "gpu-good"))
    with (context / "Dockerfile").open("a") as fh:
        fh.write('LABEL helpkit.device="gpu"\n')
    report = validate(context, data, report_path=tmp_path / "report.json", quiet=True)
    assert report.passed, report.failures
    saved = json.loads((tmp_path / "report.json").read_text())
    if host_gpus(client()):
        assert report.verdict == "PASS" and saved["device"] == {"image": "gpu", "gpus": True, "gpu_checked": True}
    else:
        assert report.verdict == f"PASS ({GPU_NOT_CHECKED})"
        assert saved["device"] == {"image": "gpu", "gpus": False, "gpu_checked": False}
        assert GPU_NOT_CHECKED in saved["warnings"]


@pytest.mark.slow
@pytest.mark.docker
def test_gpu_image_holds_tensorflow_built_with_cuda(engine) -> None:
    """``helpkit submission build simple-maxprob --device gpu`` (several GB: minutes when the
    wheelhouse cache is warm) gives an image whose TensorFlow is built with CUDA."""
    from helpkit.submission.docker_build import build_submission, image_tag
    from helpkit.submission.docker_engine import client

    built = build_submission("simple-maxprob", quiet=True, device="gpu")
    assert built.tag == image_tag("simple-maxprob", "gpu") == "helpkit-submission/simple-maxprob:gpu"
    assert client().images.get(built.tag).labels["helpkit.device"] == "gpu"
    code = ("import tensorflow as tf, importlib.metadata as m; print(tf.test.is_built_with_cuda(), "
            "[d.metadata['Name'] for d in m.distributions() if d.metadata['Name'].startswith('tensorflow')])")
    out = subprocess.run(["docker", "run", "--rm", "--network", "none", built.tag, "python", "-c", code],
                         capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
    assert out.startswith("True") and "tensorflow-cpu" not in out and "tensorflow_cpu" not in out, out
