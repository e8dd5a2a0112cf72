"""Test helpers shared across test folders."""

from __future__ import annotations

from docpipe_dagster_tests.support.mock_servers import MockServer, free_port, free_ports, start_mock

__all__ = ["MockServer", "free_port", "free_ports", "start_mock"]
