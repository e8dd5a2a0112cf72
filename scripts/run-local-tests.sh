#!/usr/bin/env bash
# Run the test suite. Creates/updates .venv itself; arguments go to pytest.
#   scripts/run-local-tests.sh                 # everything (what CI runs, via .ci/run)
#   scripts/run-local-tests.sh --fast          # the fast lane: core, config, store, pipeline
#                                              # stages, clients; no `slow`/real-service/container
#                                              # tests (well under 2 minutes on 2 cores)
#   scripts/run-local-tests.sh -k sensor -x    # a subset
#   scripts/run-local-tests.sh --with-checks   # ruff + `dg check defs` first (what CI runs)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
cd "$ROOT"
if [ "${1:-}" = "--with-checks" ]; then
  shift
  bash "$ROOT/scripts/check.sh"
fi
if [ "${1:-}" = "--fast" ]; then
  shift
  T=docpipe_dagster_tests
  exec "$VENV/bin/python" -m pytest "$T/core" "$T/config" "$T/store" "$T/pipeline" "$T/clients" \
    -m "not slow and not real_services and not containers" "$@"
fi
exec "$VENV/bin/python" -m pytest "$@"
