"""Process management for `docpipe dev`: DAGSTER_HOME, the mocks and `dagster dev`."""

from __future__ import annotations

import shutil
from pathlib import Path

from docpipe_dagster.config import PROJECT_ROOT, docpipe_home


def prepare_dagster_home(home: Path | None = None) -> Path:
    """$DOCPIPE_HOME/dagster_home holding the Postgres-backed dagster.yaml from the checkout."""
    dagster_home = (home or docpipe_home()) / "dagster_home"
    dagster_home.mkdir(parents=True, exist_ok=True)
    source = PROJECT_ROOT / "dagster.yaml"
    target = dagster_home / "dagster.yaml"
    if not target.exists() or target.read_bytes() != source.read_bytes():
        shutil.copyfile(source, target)
    return dagster_home
