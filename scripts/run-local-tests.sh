#!/usr/bin/env bash
# Run the test suite. Creates/updates .venv itself; arguments go to pytest.
#   scripts/run-local-tests.sh                 # everything
#   scripts/run-local-tests.sh -k sensor -x    # a subset
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
cd "$ROOT"
exec "$VENV/bin/python" -m pytest "$@"
