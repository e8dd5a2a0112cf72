"""The one Definitions object: everything under defs/, run in-process per batch.

Runs use the in-process executor: a batch run is a chain of five steps over data that
lives in Postgres, and a subprocess per step would cost seconds for nothing.
"""

from __future__ import annotations

import warnings

import dagster as dg

import docpipe_dagster.defs
from docpipe_dagster.bundled import PACKAGE_DIR
from docpipe_dagster.logs import configure as configure_logging

# Dagster's notes about its own internals, raised by Dagster's code (module `dagster.*`) while
# it loads these definitions with stable APIs: the defs-folder loader calls its own preview
# `load_definitions_from_module(s)`, and binding resources to a sensor's job copies the sensor
# with `owners=[]`, which its beta check counts as a use of `owners`. Each is matched by
# category, message and module: the same warning raised from docpipe's code still shows.
DAGSTERS_OWN_WARNINGS: tuple[tuple[type[Warning], str], ...] = (
    (dg.PreviewWarning, r"Function `load_definitions_from_modules?` is currently in preview"),
    (
        dg.BetaWarning,
        r"Parameter `owners` of initializer `SensorDefinition\.__init__` is currently in beta",
    ),
)


def ignore_dagsters_own_warnings() -> None:
    """Filter DAGSTERS_OWN_WARNINGS in this process (every process that loads the code)."""
    for category, message in DAGSTERS_OWN_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=r"dagster\.")


ignore_dagsters_own_warnings()


@dg.definitions
def defs() -> dg.Definitions:
    # The code server and every run worker load the code through here; the CLI sets its own.
    configure_logging(keep_existing=True)
    # From the module, not by searching for pyproject.toml: an installed wheel has none.
    tree = dg.ComponentTree.from_module(docpipe_dagster.defs, project_root=PACKAGE_DIR.parent)
    return dg.Definitions.merge(tree.build_defs(), dg.Definitions(executor=dg.in_process_executor))
