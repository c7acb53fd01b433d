#!/usr/bin/env bash
# Set everything up, then run vocloud's main job on its embedded defaults: a VO cluster on this
# machine — the daemon on SQLite, this machine as the qemu host, a throwaway local Slurm, two VO
# pools that grow with a burst of jobs and shrink back, and a summary (docs/demo.md).
# Without root, qemu or Slurm it runs the same story with simulated workers and batch system.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/vocloud demo "$@"
