"""The one Definitions object: everything under defs/, run in-process per batch.

Runs use the in-process executor: a batch run is a chain of five steps over data that
lives in Postgres, and a subprocess per step would cost seconds for nothing.
"""

from __future__ import annotations

import dagster as dg

import docpipe_dagster.defs
from docpipe_dagster.bundled import PACKAGE_DIR


@dg.definitions
def defs() -> dg.Definitions:
    # From the module, not by searching for pyproject.toml: an installed wheel has none.
    tree = dg.ComponentTree.from_module(docpipe_dagster.defs, project_root=PACKAGE_DIR.parent)
    return dg.Definitions.merge(tree.build_defs(), dg.Definitions(executor=dg.in_process_executor))
