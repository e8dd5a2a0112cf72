"""`python -m docpipe_dagster_mocks [all|llamaparse|openai|storage] [--port N] ...` (serve.py)."""

from __future__ import annotations

from docpipe_dagster_mocks.serve import main

raise SystemExit(main())
