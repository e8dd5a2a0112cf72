#!/usr/bin/env bash
# One command from a fresh clone to the running stack: .venv, the package, the embedded
# database (migrated), then `docpipe dev` (mocks + Dagster UI on http://127.0.0.1:3000).
# Running it again is harmless. Set DOCPIPE_SETUP_ONLY=1 to stop before `docpipe dev`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
cd "$ROOT"
[ -f .env ] || { cp .env.example .env; echo "==> wrote .env from .env.example"; }
if [ "${DOCPIPE_SETUP_ONLY:-0}" = "1" ]; then
  echo "==> starting the database and applying migrations"
  docpipe db start
  echo "==> setup done (DOCPIPE_SETUP_ONLY=1): run 'docpipe dev' to start the stack"
  exit 0
fi
# docpipe dev starts (and migrates) the database itself, and stops what it started on exit.
echo "==> starting the stack: docpipe dev (Ctrl-C stops everything)"
exec docpipe dev
