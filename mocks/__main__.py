"""`python -m mocks [all|llamaparse|openai|storage] [--port N] ...` (see mocks/serve.py)."""

from __future__ import annotations

from mocks.serve import main

raise SystemExit(main())
