#!/usr/bin/env bash
# Run the test suite. Creates/updates .venv itself; arguments go to pytest.
#   scripts/run-local-tests.sh                 # everything
#   scripts/run-local-tests.sh -k sensor -x    # a subset
#   scripts/run-local-tests.sh --with-checks   # ruff + `dg check defs` first (what CI runs)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
cd "$ROOT"
if [ "${1:-}" = "--with-checks" ]; then
  shift
  bash "$ROOT/scripts/check.sh"
fi
exec "$VENV/bin/python" -m pytest "$@"
