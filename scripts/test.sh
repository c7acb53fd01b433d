#!/usr/bin/env bash
# Set everything up, then run the linters and the whole test suite (SQLite and PostgreSQL).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# The real components are required, not skipped: a skip here would hide a missing install step.
export VOCLOUD_REQUIRE_POSTGRES=${VOCLOUD_REQUIRE_POSTGRES:-1}
export VOCLOUD_REQUIRE_QEMU=${VOCLOUD_REQUIRE_QEMU:-1}
export VOCLOUD_REQUIRE_SLURM=${VOCLOUD_REQUIRE_SLURM:-1}
export VOCLOUD_REQUIRE_SGE=${VOCLOUD_REQUIRE_SGE:-1}
export VOCLOUD_REQUIRE_CHROMIUM=${VOCLOUD_REQUIRE_CHROMIUM:-1}  # the web dashboard test (and playwright)
if [ "$(id -u)" = 0 ]; then export VOCLOUD_REQUIRE_NETNS=${VOCLOUD_REQUIRE_NETNS:-1}; fi
echo "== ruff"; .venv/bin/ruff check .
echo "== mypy"; .venv/bin/mypy
echo "== lint-imports"; .venv/bin/lint-imports
# Two workers: the serial "machine" unit on one, everything else beside it (tests/conftest.py);
# VOCLOUD_TEST_WORKERS=0 runs all in one process. A short base directory: a qemu guest's QMP socket
# lives under its test's data dir, and a UNIX socket path has at most 107 bytes (pytest's default
# /tmp/pytest-of-root/pytest-N/popen-gwK/ left too little). Removed when the run passes.
basetemp=$(mktemp -d /tmp/vt.XXXXXX)
echo "== pytest"
status=0
.venv/bin/python -m pytest -q -p no:cacheprovider --durations=30 --basetemp "$basetemp" \
  -n "${VOCLOUD_TEST_WORKERS:-2}" --dist loadfile "$@" || status=$?
if [ "$status" = 0 ]; then rm -rf "$basetemp"; else echo "test files kept in $basetemp"; fi
exit "$status"
