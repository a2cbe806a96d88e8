"""The wheelhouse: helpkit's own wheel plus every dependency, so ``docker build`` needs no network.

Dependencies are downloaded once into a cache (``helpkit.project.cache_dir``: the project's
``build/wheelhouse-cache`` or ``$HELPKIT_CACHE_DIR``) and resolved offline against it
afterwards, so a warm rebuild touches no index. Wheels are chosen for the image, not for
this machine: CPython 3.11 on x86_64 glibc up to Debian bookworm's 2.36. We drive pip as a
subprocess because pip has no Python API; its ``--report`` names the exact files chosen, and
it needs pip >= 23.3 (``--dry-run`` with ``--platform``), a declared dependency.

A submission's lock (``submission.lock``, pip's hash-checking requirements format, one
``name==version --hash=sha256:...`` line per wheel) is written by its first build and read by
every later one: the image installs exactly those files (``pip install --require-hashes``),
whatever the index serves that day, until ``--update-lock`` resolves again.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import zipfile
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from urllib.parse import unquote, urlparse

from helpkit.errors import HelpkitError
from helpkit.project import cache_dir
from helpkit.submission.device import device_metadata, device_pyproject

REPO_ROOT = Path(__file__).resolve().parents[2]
"""The source checkout when helpkit runs from one (``pyproject.toml`` there); else site-packages."""
PYTHON_VERSION = "3.11"
GLIBC_MINOR = 36
"""Newest manylinux glibc the images accept (bookworm); older ones are accepted too."""

TARGET_FLAGS = [
    "--only-binary=:all:",
    "--implementation=cp",
    f"--python-version={PYTHON_VERSION}",
    *(f"--platform=manylinux_2_{minor}_x86_64" for minor in range(GLIBC_MINOR, 16, -1)),
    "--platform=manylinux2014_x86_64",
    "--platform=manylinux2010_x86_64",
    "--platform=manylinux1_x86_64",
]


REPRODUCIBLE_ENV = {"SOURCE_DATE_EPOCH": "315532800"}
"""Fixed zip timestamps: the same code gives the same wheel, so Docker's layer cache holds."""


MIN_PIP = (23, 3)
"""``pip install --dry-run --report`` with ``--platform`` and without ``--target``: the offline
resolution needs it (pip 23.1 and 23.2 refuse: "Can not use any platform or abi specific options
unless installing via '--target'"; allowed from 23.3, pypa/pip#12215)."""
LOCK_NAME = "requirements.lock"
"""The lock inside a build context's ``wheels/deps/`` (what the Dockerfile installs)."""
_LOCK_LINE = re.compile(r"^(?P<name>[A-Za-z0-9._-]+)==(?P<version>\S+)\s+--hash=sha256:(?P<sha>[0-9a-f]{64})"
                        r"\s+#\s*(?P<file>\S+\.whl)\s*$")


def check_pip() -> str:
    """pip's version in this interpreter; a HelpkitError saying how to upgrade when it is too old."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("pip")
    except PackageNotFoundError as err:
        raise HelpkitError(f"pip is not installed for {sys.executable}; the wheelhouse needs pip >= 23.3 "
                           f"({sys.executable} -m ensurepip --upgrade)") from err
    numbers = tuple(int(n) for n in re.findall(r"\d+", found)[:2])
    if numbers < MIN_PIP:
        raise HelpkitError(f"pip {found} is too old for the wheelhouse (needs >= 23.3 for --dry-run with "
                           f"--platform): {sys.executable} -m pip install --upgrade 'pip>=23.3'")
    return found


def pip_message(stderr: str) -> str:
    """pip's own error: its ``ERROR:`` lines and what follows them, else its last lines."""
    lines = [line.rstrip() for line in stderr.strip().splitlines() if line.strip()]
    first = next((i for i, line in enumerate(lines) if line.startswith("ERROR:")), None)
    kept = lines[first:] if first is not None else lines[-6:]
    return " | ".join(line.strip() for line in kept if not line.startswith("WARNING"))[-1500:]


def _pip(args: list[str], what: str, quiet: bool = True) -> subprocess.CompletedProcess[str]:
    """Run pip of this interpreter; a failure raises HelpkitError with pip's last lines."""
    cmd = [sys.executable, "-m", "pip", *args]
    env = {**os.environ, **REPRODUCIBLE_ENV}
    proc = subprocess.run(cmd, text=True, stdout=subprocess.PIPE if quiet else None, stderr=subprocess.PIPE, env=env)
    if proc.returncode != 0:
        raise HelpkitError(f"{what} failed; pip says: {pip_message(proc.stderr)}")
    return proc


PACKAGE_SOURCES = ("pyproject.toml", "README.md", "helpkit")
"""What building the wheel reads; copied out so builds never share setuptools' in-tree build/."""
_SKIPPED_DIST_FILES = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}


def source_tree() -> Path | None:
    """helpkit's source checkout when this helpkit runs from one (editable install), else None."""
    pyproject = REPO_ROOT / "pyproject.toml"
    if pyproject.is_file() and (REPO_ROOT / "helpkit" / "__init__.py").is_file():
        if re.search(r'^name\s*=\s*"helpkit"', pyproject.read_text(encoding="utf-8"), re.M):
            return REPO_ROOT
    return None


def build_helpkit_wheel(out_dir: Path, device: str = "cpu") -> Path:
    """helpkit's wheel in ``out_dir``: built from the checkout, or repacked from the installed copy.

    Its requirements are those of an image for ``device`` (``helpkit.submission.device``).
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("helpkit-*.whl"):
        old.unlink()
    root = source_tree()
    if root is None:
        return repack_installed(out_dir, device)
    with tempfile.TemporaryDirectory(prefix="helpkit-wheel-") as tmp:
        for name in PACKAGE_SOURCES:
            src, dest = root / name, Path(tmp) / name
            if src.is_dir():
                shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
            else:
                shutil.copy2(src, dest)
        pyproject = Path(tmp) / "pyproject.toml"
        pyproject.write_text(device_pyproject(pyproject.read_text(encoding="utf-8"), device), encoding="utf-8")
        args = ["wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out_dir.resolve()), tmp]
        _pip(args, "building the helpkit wheel")
    (wheel,) = out_dir.glob("helpkit-*.whl")
    return wheel


def _record_hash(data: bytes) -> str:
    import base64

    return "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def repack_installed(out_dir: Path, device: str = "cpu") -> Path:
    """Rebuild the wheel of the installed helpkit (pip installed it from a wheel; no sources here).

    The package's files and its ``.dist-info`` as installed, less what the installer added
    (RECORD is written anew, INSTALLER, REQUESTED, direct_url.json dropped) and bytecode; zip
    times fixed, so the same helpkit gives the same bytes.
    """
    from importlib.metadata import distribution

    dist = distribution("helpkit")
    entries: list[tuple[str, Path]] = []
    info_dir = ""
    for item in dist.files or []:
        parts = item.parts
        if not parts or parts[0] == ".." or "__pycache__" in parts or item.suffix == ".pyc":
            continue
        if parts[0].endswith(".dist-info"):
            info_dir = parts[0]
            if parts[-1] in _SKIPPED_DIST_FILES:
                continue
        elif parts[0] != "helpkit":
            continue
        entries.append((item.as_posix(), Path(str(item.locate()))))
    if not info_dir or not entries:
        raise HelpkitError("cannot find the installed helpkit's files to put in the image; reinstall helpkit "
                           "with pip (or run from a source checkout)")
    wheel = out_dir / f"helpkit-{dist.version}-py3-none-any.whl"
    record = []
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, path in sorted(entries):
            data = path.read_bytes()
            if name.endswith(".dist-info/METADATA"):
                data = device_metadata(data.decode("utf-8"), device).encode("utf-8")
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = (path.stat().st_mode & 0o777 | 0o100000) << 16
            zf.writestr(info, data, zipfile.ZIP_DEFLATED)
            record.append(f"{name},{_record_hash(data)},{len(data)}")
        record.append(f"{info_dir}/RECORD,,")
        info = zipfile.ZipInfo(f"{info_dir}/RECORD", date_time=(1980, 1, 1, 0, 0, 0))
        zf.writestr(info, "\n".join(record) + "\n", zipfile.ZIP_DEFLATED)
    return wheel


def _resolve_offline(wheel: Path, cache: Path) -> tuple[list[Path] | None, str]:
    """(the files pip would install for ``wheel`` from ``cache`` alone, or None; pip's message if not)."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        args = ["install", "--dry-run", "--ignore-installed", "--no-index", f"--find-links={cache}", *TARGET_FLAGS]
        try:
            _pip([*args, "-q", f"--report={report}", str(wheel)], "offline resolution")
        except HelpkitError as err:
            return None, err.message
        installs = json.loads(report.read_text())["install"]
    return [Path(unquote(urlparse(item["download_info"]["url"]).path)) for item in installs], ""


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks (wheels run to hundreds of MB)."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(2**20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _wheel_name_version(filename: str) -> tuple[str, str]:
    """(name, version) of a wheel file name (``tensorflow_cpu-2.16.1-cp311-...whl``)."""
    name, version = filename.split("-")[:2]
    return re.sub(r"[-_.]+", "-", name).lower(), version


def write_lock(path: Path, files: list[Path], header: str = "") -> str:
    """Write the lock of ``files`` (one pinned, hashed line each, by name); return its text."""
    from helpkit.io import write_text

    lines = [
        "# The exact wheels this submission's image installs: pip's hash-checking mode reads it.",
        "# Written by its first `helpkit submission build`; `--update-lock` resolves again. Commit it.",
        *([f"# {header}"] if header else []),
    ]
    for file in sorted(files, key=lambda f: _wheel_name_version(f.name)):
        name, version = _wheel_name_version(file.name)
        lines.append(f"{name}=={version} --hash=sha256:{sha256_file(file)}  # {file.name}")
    text = "\n".join(lines) + "\n"
    write_text(path, text)
    return text


def read_lock(path: Path) -> list[dict[str, str]]:
    """The entries of a lock file (name, version, sha, file); a HelpkitError names a bad line."""
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _LOCK_LINE.match(line.strip())
        if not match:
            raise HelpkitError(f"line {number} is not 'name==version --hash=sha256:HEX  # FILE.whl' "
                               "(rebuild with --update-lock to rewrite the lock)", path)
        entries.append(match.groupdict())
    if not entries:
        raise HelpkitError("the lock names no wheel (rebuild with --update-lock)", path)
    return entries


def _locked_files(lock: Path, cache: Path) -> list[Path]:
    """The cache's files of ``lock``, downloading (hashes enforced by pip) those it lacks."""
    entries = read_lock(lock)
    missing = [e for e in entries if not (cache / e["file"]).is_file()]
    if missing:
        print(f"downloading {len(missing)} locked wheel(s) into {cache}", file=sys.stderr)
        with tempfile.TemporaryDirectory() as tmp:
            requirements = Path(tmp) / "missing.txt"
            requirements.write_text("".join(f"{e['name']}=={e['version']} --hash=sha256:{e['sha']}\n"
                                            for e in missing))
            _pip(["download", "--no-deps", "--require-hashes", f"--dest={cache}", *TARGET_FLAGS,
                  "-r", str(requirements)], "downloading the locked wheels", quiet=False)
    files = []
    for entry in entries:
        file = cache / entry["file"]
        if not file.is_file():
            raise HelpkitError(f"the index served another file than the locked {entry['file']}", lock)
        if sha256_file(file) != entry["sha"]:
            raise HelpkitError(f"{entry['file']} in the cache does not match the lock's sha256 (a changed or "
                               f"corrupt download: delete it from {cache} and build again)", lock)
        files.append(file)
    return files


def _link_or_copy(src: Path, dest: Path) -> None:
    """Hard-link ``src`` to ``dest`` (no copy of a 300 MB wheel), copying across filesystems."""
    try:
        os.link(src, dest)
    except OSError:
        shutil.copy2(src, dest)


def vendor(dest: Path, cache: Path | None = None, lock: Path | None = None, update_lock: bool = False,
           device: str = "cpu") -> list[Path]:
    """Fill ``dest/helpkit`` with helpkit's wheel and ``dest/deps`` with its dependencies.

    Two folders so the image installs the dependencies in a layer that a change to helpkit's
    code does not invalidate. With a ``lock`` file that exists (and no ``update_lock``), the
    dependencies are exactly its wheels, checked by sha256 and checked to satisfy helpkit's
    requirements offline; otherwise they are resolved (downloading only what ``cache`` lacks,
    pip showing its progress) and, when ``lock`` is given, written to it. ``dest/deps`` gets the
    lock as ``requirements.lock`` either way. ``device`` picks the TensorFlow build of helpkit's
    wheel (``helpkit.submission.device``); both devices share ``cache``. Returns the files placed.
    """
    check_pip()
    cache = cache or cache_dir()
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "deps").mkdir(parents=True)
    cache.mkdir(parents=True, exist_ok=True)
    wheel = build_helpkit_wheel(dest / "helpkit", device)
    if lock is not None and lock.is_file() and not update_lock:
        files = _locked_files(lock, cache)
        for src in files:
            _link_or_copy(src, dest / "deps" / src.name)
        resolved, message = _resolve_offline(wheel, dest / "deps")
        if resolved is None:
            raise HelpkitError(f"the lock no longer satisfies this helpkit's requirements (rebuild with "
                               f"--update-lock): {message}", lock)
        shutil.copy2(lock, dest / "deps" / LOCK_NAME)
        return [wheel, *(dest / "deps" / f.name for f in files)]
    files, message = _resolve_offline(wheel, cache)
    if files is None:
        print(f"downloading dependencies into {cache} (once; later builds reuse it)", file=sys.stderr)
        _pip(["download", f"--dest={cache}", *TARGET_FLAGS, str(wheel)], "downloading the wheelhouse", quiet=False)
        for stale in cache.glob("helpkit-*.whl"):
            stale.unlink()
        files, message = _resolve_offline(wheel, cache)
        if files is None:
            raise HelpkitError(f"the downloaded wheelhouse does not resolve offline ({message})", cache)
    deps = [src for src in files if src != wheel]
    placed = [wheel]
    for src in deps:
        _link_or_copy(src, dest / "deps" / src.name)
        placed.append(dest / "deps" / src.name)
    write_lock(dest / "deps" / LOCK_NAME, deps)
    if lock is not None:
        shutil.copy2(dest / "deps" / LOCK_NAME, lock)
        print(f"wrote {lock} ({len(deps)} wheels, sha256-pinned); later builds install exactly these "
              "(--update-lock to resolve again)", file=sys.stderr)
    return placed
