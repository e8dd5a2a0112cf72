#!/usr/bin/env bash
# Static checks: ruff lint, ruff format, and `dg check defs` (the Definitions load).
# Run by `.ci/run` through `scripts/run-local-tests.sh --with-checks`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
cd "$ROOT"
echo "==> ruff check"
"$VENV/bin/ruff" check .
echo "==> ruff format --check"
"$VENV/bin/ruff" format --check .
echo "==> dg check defs"
# A throwaway DAGSTER_HOME: the checkout's dagster.yaml wants the dev stack's Postgres.
home="$(mktemp -d)"
trap 'rm -rf "$home"' EXIT
printf "telemetry:\n  enabled: false\n" >"$home/dagster.yaml"
DAGSTER_HOME="$home" VIRTUAL_ENV="$VENV" "$VENV/bin/dg" check defs
