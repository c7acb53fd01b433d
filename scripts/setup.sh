#!/usr/bin/env bash
# Set up everything vocloud needs on a fresh Debian machine: system packages (as root, through
# apt-get), then a virtualenv in .venv with vocloud installed in editable mode. Idempotent: a
# second run installs nothing and takes a second or two.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(
  postgresql            # PostgreSQL server for the multi-front-end store and its tests
  qemu-system-x86       # the hypervisor
  qemu-utils            # qemu-img: overlays, conversions
  busybox-static        # guest image: the initramfs userland
  cpio                  # guest image: packing the initramfs
  xorriso               # contextualization: cloud-init NoCloud seed ISOs
  e2fsprogs             # guest image: mkfs.ext4 -d for the root disk
  kmod                  # guest image: module dependency data
  iproute2              # network namespaces for SSH test hosts
  nftables              # anti-spoofing on guest taps (drivers/net/guard.py)
  iputils-ping          # tests: the host pings guests at their leases
  openssh-server        # sshd inside test namespaces
  openssh-client
  slurm-wlm             # batch system: slurmctld/slurmd for VO-cluster tests
  munge                 # Slurm authentication
  gridengine-master     # batch system: sge_qmaster for the Grid Engine tests (second real one)
  gridengine-exec       # sge_execd
  gridengine-client     # qstat, qconf, qmod, qsub
  chromium              # headless browser for the web dashboard tests (driven by pip playwright)
  prometheus            # a real Prometheus server scrapes /metrics in tests (docs/operations.md)
  wrk                   # HTTP load generator of bench/bench_scale.py --rest (bench/rest_mix.lua)
)

missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    # Grid Engine's postinst asks for a cell and a master host: answer in advance. The tests
    # run a cell of their own (tests/integration/sge_harness.py); this only keeps apt quiet.
    debconf-set-selections <<EOF
gridengine-common shared/gridengineconfig boolean true
gridengine-common shared/gridenginecell string default
gridengine-common shared/gridenginemaster string $(hostname)
EOF
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "setup: not root; please install: ${missing[*]}" >&2
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv"
  "$PY" -m venv .venv
fi
stamp=.venv/.vocloud-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "setup: installing vocloud and its Python dependencies into .venv"
  .venv/bin/python -m pip install -q --upgrade pip >/dev/null
  .venv/bin/python -m pip install -q -e ".[dev,peers]"
  touch "$stamp"
fi
echo "setup: ready ($(.venv/bin/vocloud --version 2>/dev/null || echo vocloud))"
