"""Build the project's wheel and install it into a fresh venv, as a user or an image build would.

The venv is cached by the hash of everything that goes into the wheel, so a second test run
reuses it; a changed source builds and installs anew. Nothing of the checkout is importable
from that venv: it is created from the base interpreter, not from the test venv, and tests
run its commands from a folder outside the checkout.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
# What goes into the wheel: a change to any of these invalidates the cached venv.
WHEEL_INPUTS = ("docpipe_dagster", "mocks", "sql", "samples")
WHEEL_FILES = ("pyproject.toml", "setup.py", "MANIFEST.in", "dagster.yaml")


@dataclass(frozen=True)
class WheelVenv:
    wheel: Path
    venv: Path

    @property
    def bin(self) -> Path:
        return self.venv / "bin"

    def exe(self, name: str) -> str:
        return str(self.bin / name)


def source_hash() -> str:
    digest = hashlib.sha256()
    paths = [REPO_ROOT / name for name in WHEEL_FILES]
    for folder in WHEEL_INPUTS:
        paths += sorted(
            p
            for p in (REPO_ROOT / folder).rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and "_bundled" not in p.parts
        )
    for path in paths:
        digest.update(str(path.relative_to(REPO_ROOT)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _base_python() -> str:
    # The interpreter the test venv was made from: a venv made from a venv's python would
    # still be fine, but this keeps the test venv's site-packages out of the picture.
    candidate = (
        Path(sys.base_prefix) / "bin" / f"python{sys.version_info.major}.{sys.version_info.minor}"
    )
    return str(candidate) if candidate.exists() else sys.executable


def build_wheel(out_dir: Path) -> Path:
    out_dir.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "-q",
            "-w",
            str(out_dir),
            str(REPO_ROOT),
        ],
        check=True,
        cwd=out_dir,
    )
    (wheel,) = sorted(out_dir.glob("docpipe_dagster-*.whl"))
    return wheel


def wheel_venv(cache_root: Path | None = None) -> WheelVenv:
    """The wheel of the current source, installed in a venv of its own (cached)."""
    cache_root = cache_root or Path(
        os.environ.get("DOCPIPE_TEST_VENV_CACHE", Path.home() / ".cache" / "docpipe-test-wheels")
    )
    root = cache_root / source_hash()
    venv = root / "venv"
    stamp = root / "installed"
    wheel_dir = root / "wheel"
    if stamp.exists():
        (wheel,) = sorted(wheel_dir.glob("docpipe_dagster-*.whl"))
        return WheelVenv(wheel, venv)
    wheel = build_wheel(wheel_dir)
    subprocess.run([_base_python(), "-m", "venv", "--clear", str(venv)], check=True)
    subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", str(wheel)],
        check=True,
        cwd=root,
    )
    stamp.write_text(str(wheel))
    return WheelVenv(wheel, venv)


def wheel_names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        return archive.namelist()


def wheel_metadata(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return archive.read(name).decode()
