"""What the warm run worker loads once, before it forks runs (launcher.WarmRunLauncher).

Imported by the forkserver only. It imports Dagster and the run worker's entry point, builds
the definitions (every defs module and the libraries they use), and leaves them built in
`docpipe_dagster.definitions.defs`, where each run worker's code pointer finds them: a fork
takes them as they are instead of building the component tree again, which also computes
the JSON schema of every component type for the UI, something no run needs.
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import logging

import dagster._cli.api  # noqa: F401  (the run worker's body)

from docpipe_dagster import definitions

# What a run imports on its way that building the definitions does not: the instance's
# Postgres storage, the in-process executor, the HTTP transport, the embedded server's module.
RUN_TIME_IMPORTS = (
    "dagster._core.instance.factory",
    "dagster._core.executor.in_process",
    "dagster._core.execution.plan.active",
    "dagster._core.storage.local_compute_log_manager",
    "dagster._core.storage.runs.sqlite",
    "dagster._core.storage.schedules.sqlite",
    "dagster_postgres",
    "psycopg2.extras",
    "httpcore",
    "httpx._transports.default",
    "anyio",
    "upath",
    "psutil",
    "watchdog.observers.polling",
    "docpipe_dagster.store.server",
    "docpipe_dagster.store.migrate",
    "docpipe_dagster.metrics.names",
)
for name in RUN_TIME_IMPORTS:
    # A module a newer Dagster moved: the run imports what it needs itself.
    with contextlib.suppress(ImportError):
        importlib.import_module(name)

try:
    built = definitions.defs()
    built.get_repository_def()  # resolved once, here
    definitions.defs = built  # type: ignore[assignment]
except Exception:  # each run then builds them itself, and reports what is wrong
    logging.getLogger(__name__).exception("the warm worker could not build the definitions")

# What is loaded now lives as long as each fork: frozen, a fork's garbage collections neither
# walk it nor touch (and so copy) its pages.
gc.freeze()
