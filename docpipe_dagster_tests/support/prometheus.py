"""Debian's Prometheus (server and promtool) for the tests: installed with apt-get when
missing, as the UI test installs chromium; if that is impossible the test fails and says why."""

from __future__ import annotations

import shutil
import subprocess

import pytest


def prometheus_binaries() -> tuple[str, str]:
    """(prometheus, promtool), installing Debian's `prometheus` package when missing."""
    found = shutil.which("prometheus"), shutil.which("promtool")
    if all(found):
        return found  # type: ignore[return-value]
    steps = (
        ["apt-get", "update", "-qq"],
        [
            "apt-get",
            "-o",
            "DPkg::Lock::Timeout=600",
            "install",
            "-y",
            "-qq",
            "--no-install-recommends",
            "prometheus",
        ],
    )
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, timeout=900)
        if done.returncode != 0:
            pytest.fail(
                f"prometheus is missing and `{' '.join(step)}` failed: {done.stderr[-500:]}"
            )
    found = shutil.which("prometheus"), shutil.which("promtool")
    if not all(found):
        pytest.fail("apt-get installed prometheus but `prometheus` or `promtool` is not on PATH")
    return found  # type: ignore[return-value]
