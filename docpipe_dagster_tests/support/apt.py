"""Debian packages a test needs, installed with apt-get when missing (CI starts with only
Python). A failed install fails the test with apt's own words; it never skips."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

_APT = ["apt-get", "-o", "DPkg::Lock::Timeout=600"]


def ensure_commands(
    commands: tuple[str, ...], packages: tuple[str, ...], recommends: bool = False
) -> list[str]:
    """The paths of `commands`, installing `packages` (with their recommended packages when
    `recommends`) first when any of them is missing."""
    found = [shutil.which(command) for command in commands]
    if all(found):
        return found  # type: ignore[return-value]
    steps = (
        [*_APT, "update", "-qq"],
        [
            *_APT,
            "install",
            "-y",
            "-qq",
            *([] if recommends else ["--no-install-recommends"]),
            *packages,
        ],
    )
    for step in steps:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        done = subprocess.run(step, capture_output=True, text=True, timeout=900, env=env)
        if done.returncode != 0:
            pytest.fail(
                f"{', '.join(commands)} missing and `{' '.join(step)}` failed: {done.stderr[-500:]}"
            )
    found = [shutil.which(command) for command in commands]
    if not all(found):
        pytest.fail(f"apt-get installed {' '.join(packages)} but {commands} is not on PATH")
    return found  # type: ignore[return-value]
