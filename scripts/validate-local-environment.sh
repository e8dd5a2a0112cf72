#!/usr/bin/env bash
# Check every component (database, pgvector, migrations, mocks/services, webserver, daemon),
# print a table with each latency, exit non-zero if any check fails.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
cd "$ROOT"
exec docpipe validate "$@"
