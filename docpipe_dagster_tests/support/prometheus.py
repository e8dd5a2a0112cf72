"""Debian's Prometheus (server and promtool) for the tests: installed with apt-get when
missing, as the UI test installs chromium; if that is impossible the test fails and says why."""

from __future__ import annotations

from docpipe_dagster_tests.support.apt import ensure_commands


def prometheus_binaries() -> tuple[str, str]:
    """(prometheus, promtool), installing Debian's `prometheus` package when missing."""
    prometheus, promtool = ensure_commands(("prometheus", "promtool"), ("prometheus",))
    return prometheus, promtool
