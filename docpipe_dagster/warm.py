"""What the warm run worker loads once, before it forks runs (launcher.WarmRunLauncher).

Imported by the forkserver only: Dagster, the run worker's entry point, and the definitions
built once, which imports every defs module and the libraries they use.
"""

from __future__ import annotations

import logging

import dagster._cli.api  # noqa: F401  (the run worker's body)

from docpipe_dagster.definitions import defs

try:
    defs()
except Exception:  # a run then loads what is missing itself, and reports the error
    logging.getLogger(__name__).exception("the warm worker could not build the definitions")
