"""The one Definitions object: everything under defs/, run in-process per batch.

Runs use the in-process executor: a batch run is a chain of five steps over data that
lives in Postgres, and a subprocess per step would cost seconds for nothing.
"""

from __future__ import annotations

import dagster as dg

from docpipe_dagster.config import PROJECT_ROOT


@dg.definitions
def defs() -> dg.Definitions:
    return dg.Definitions.merge(
        dg.load_from_defs_folder(path_within_project=PROJECT_ROOT / "docpipe_dagster" / "defs"),
        dg.Definitions(executor=dg.in_process_executor),
    )
