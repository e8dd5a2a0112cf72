"""Stage reports as Dagster metadata: flat numbers (plotted over time) and a failure table."""

from __future__ import annotations

from typing import Any

import dagster as dg

from docpipe_dagster.pipeline.report import StageReport

MAX_FAILURE_ROWS = 50


def failures_markdown(failures: list[dict[str, Any]]) -> str:
    if not failures:
        return "No failures."
    lines = ["| document | stage | reason |", "|---|---|---|"]
    for failure in failures[:MAX_FAILURE_ROWS]:
        reason = str(failure.get("reason", "")).replace("|", "\\|").replace("\n", " ")
        key = str(failure.get("storage_key", "")).replace("|", "\\|")
        lines.append(f"| {key} | {failure.get('stage', '')} | {reason[:300]} |")
    if len(failures) > MAX_FAILURE_ROWS:
        lines.append(f"| … {len(failures) - MAX_FAILURE_ROWS} more | | |")
    return "\n".join(lines)


def report_metadata(report: StageReport, **extra: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {
        name: dg.MetadataValue.float(float(value))
        if isinstance(value, float)
        else dg.MetadataValue.int(int(value))
        for name, value in report.metrics().items()
    }
    metadata["failures"] = dg.MetadataValue.md(failures_markdown(report.failures))
    metadata.update(extra)
    return metadata
