#!/usr/bin/env bash
# Set everything up, then run the linters and the whole test suite (SQLite and PostgreSQL).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export VOCLOUD_REQUIRE_POSTGRES=${VOCLOUD_REQUIRE_POSTGRES:-1}
echo "== ruff"; .venv/bin/ruff check .
echo "== mypy"; .venv/bin/mypy
echo "== pytest"; .venv/bin/python -m pytest -q -p no:cacheprovider "$@"
