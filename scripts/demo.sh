#!/usr/bin/env bash
# Set everything up, then run vocloud's main job on its embedded defaults: a daemon on a SQLite
# store with this machine as the hypervisor, a burst of VMs placed, run and terminated.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/vocloud demo "$@"
