"""Benchmark: one monitor cycle over 100 SSH hosts (issue 15, target < 5 s).

Each host is a network namespace with its own real sshd (tests/support/netns.py, names
``vscl<pid>h<n>``); each holds ``--guests`` guests whose run dirs the qemu driver cannot tell from
real ones (one QMP stub process answers all their sockets: tests/support/fakeguests.py), so the
figure is the control plane's cost, not qemu's. The hosts are registered in a fresh SQLite store
and the daemon's own Reconciler runs forced monitor passes (``monitor_once(force=True)``).

Three designs, same hosts, same run, each with a fresh SSH transport (so its first pass pays the
connections):

* ``before``: the monitor as it was — hosts one after the other, one SSH command per read
  (about 9 per guest: pid file, cmdline, QMP, intent, ready, spec, usage ...).
* ``snapshot``: one command per host per pass (transport/snapshot.py), hosts one after the other.
* ``after``: the snapshot, and up to ``--workers`` hosts asked at once (engine/probes.py).

Per design: the first pass (connects included) and the median of the next ``--passes``, and from
the sshd logs the connections and commands per host over all passes. Also the sshds' memory
(PSS, from /proc/PID/smaps_rollup) idle and with one connection each, and the load (``uptime``).

    sudo PYTHONPATH=$PWD/src .venv/bin/python -m bench.bench_ssh_monitor [--hosts 100] [--guests 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.support.fakeguests import QmpStub, make_guest
from tests.support.netns import LabUnavailable, NetnsHost, NetnsLab

from vocloud.drivers.transport.ssh import SshTransport
from vocloud.drivers.vmm.qemu import QemuDriver
from vocloud.engine.reconcile import LoopSettings, Reconciler
from vocloud.service.auth import Actor
from vocloud.service.cloud import Cloud
from vocloud.service.hosts import HostSpec
from vocloud.store import migrate
from vocloud.store.db import Database
from vocloud.store.schema import Host, User

TARGET_S = 5.0


def sshd_counts(host: NetnsHost) -> tuple[int, int]:
    text = (host.directory / "sshd.log").read_text()
    return text.count("Connection from"), text.count("Starting session: command")


def pss_mib(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def sshd_pids(hosts: list[NetnsHost]) -> list[int]:
    out = []
    for h in hosts:
        for pid in h.pids():
            try:
                if Path(f"/proc/{pid}/comm").read_text().strip().startswith("sshd"):
                    out.append(pid)
            except OSError:
                continue
    return out


def helper_pids(hosts: list[NetnsHost]) -> list[int]:
    """The monitor helpers kept running on the hosts (python3 -c ... --serve)."""
    out = []
    for h in hosts:
        for pid in h.pids():
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"--serve" in argv:
                out.append(pid)
    return out


def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def run_design(name: str, cloud: Cloud, lab: NetnsLab, state_dir: Path, *, batch: bool,
               workers: int, passes: int) -> dict[str, float]:
    transport: SshTransport = lab.ssh_transport(connect_timeout=10, command_timeout=60)
    drv = QemuDriver(state_dir, transports=lambda h: transport, batch_monitor=batch)
    rec = Reconciler(cloud, {"qemu": drv}, LoopSettings(monitor_interval=0, monitor_workers=workers))
    before = {h.netns: sshd_counts(h) for h in lab.hosts}
    took, cpu = [], 0.0
    try:
        for i in range(passes + 1):
            t, c = time.perf_counter(), time.process_time()
            rec.monitor_once(force=True)
            took.append(time.perf_counter() - t)
            cpu += (time.process_time() - c) if i else 0.0
        mem = pss_mib(sshd_pids(lab.hosts))
        helpers = pss_mib(helper_pids(lab.hosts))
    finally:
        transport.close()
    time.sleep(0.3)
    after = {h.netns: sshd_counts(h) for h in lab.hosts}
    n = len(lab.hosts)
    conns = sum(after[k][0] - before[k][0] for k in before) / n
    cmds = sum(after[k][1] - before[k][1] for k in before) / n / (passes + 1)
    with cloud.db.read() as s:
        bad = [(h.name, h.state, h.error[:80]) for h in s.query(Host) if h.state != "MONITORED"]
    if bad:
        raise SystemExit(f"{name}: hosts not MONITORED: {bad[:5]}")
    fig = {"first_s": took[0], "warm_s": statistics.median(took[1:]), "warm_max_s": max(took[1:]),
           "conns_per_host": conns, "cmds_per_host_pass": cmds, "sshd_pss_mib": mem,
           "daemon_cpu_s": cpu / passes, "helper_pss_mib": helpers}
    print(f"  {name:9s} first pass {fig['first_s']:6.2f} s   warm pass median {fig['warm_s']:6.2f} s"
          f" (max {fig['warm_max_s']:.2f})   connections/host {conns:.2f}   new sessions/host/pass "
          f"{cmds:.2f}   daemon CPU/warm pass {cpu / passes:.2f} s", flush=True)
    return fig


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hosts", type=int, default=100)
    ap.add_argument("--guests", type=int, default=2, help="guests per host")
    ap.add_argument("--passes", type=int, default=3, help="warm passes after the first")
    ap.add_argument("--baseline-passes", type=int, default=1,
                    help="warm passes of the slow 'before' design (each ~0.5 s per host)")
    ap.add_argument("--workers", type=int, default=16)
    args = ap.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="vocloud-bench-scl-"))
    lab = NetnsLab(root / "lab", prefix="vscl")
    (root / "lab").mkdir()
    stub: QmpStub | None = None
    try:
        try:
            lab.start()
        except LabUnavailable as exc:
            print(f"cannot make namespace hosts: {exc}", file=sys.stderr)
            return 2
        print(f"load before: {load()}", flush=True)
        t = time.perf_counter()
        for _ in range(args.hosts):
            lab.add_host()
        print(f"{args.hosts} namespace hosts with their own sshd: {time.perf_counter() - t:.1f} s; "
              f"sshd PSS idle {pss_mib(sshd_pids(lab.hosts)):.1f} MiB in all", flush=True)

        db = Database(f"sqlite:///{root / 'vocloud.db'}")
        migrate.upgrade(db)
        cloud = Cloud(db)
        cloud.accounts.bootstrap()
        with db.read() as s:
            u = s.query(User).one()
        admin = Actor(u.id, u.name, u.group_id, True)
        cloud.hosts.create_many(admin, [HostSpec(h.netns, vmm="qemu", transport=h.transport)
                                        for h in lab.hosts])
        state_dir = root / "qemu"
        probe = QemuDriver(state_dir)
        dirs = [probe.host_state_dir(h.ref()) for h in lab.hosts]
        stub = QmpStub([d / f"sclg{k}" / "qmp.sock" for d in dirs for k in range(args.guests)])
        for d in dirs:
            for k in range(args.guests):
                make_guest(d, f"sclg{k}", 1 + k, pid=stub.pid)
        print(f"{args.hosts} hosts x {args.guests} guests; {args.passes} warm passes per design; "
              f"workers {args.workers}", flush=True)
        figs = {
            "before": run_design("before", cloud, lab, state_dir, batch=False, workers=1,
                                 passes=args.baseline_passes),
            "snapshot": run_design("snapshot", cloud, lab, state_dir, batch=True, workers=1,
                                   passes=args.passes),
            "after": run_design("after", cloud, lab, state_dir, batch=True, workers=args.workers,
                                passes=args.passes),
        }
        print(f"sshd PSS with one connection per host: {figs['after']['sshd_pss_mib']:.1f} MiB in "
              f"all ({figs['after']['sshd_pss_mib'] / args.hosts:.2f} MiB per host); monitor helpers "
              f"{figs['after']['helper_pss_mib']:.1f} MiB in all")
        b, a = figs["before"], figs["after"]
        print(f"monitor cycle over {args.hosts} SSH hosts: {a['warm_s']:.2f} s (first, connecting: "
              f"{a['first_s']:.2f} s) vs before {b['warm_s']:.2f} s (first {b['first_s']:.2f} s), "
              f"same run; target < {TARGET_S:g} s: {'met' if a['warm_s'] < TARGET_S else 'MISSED'}")
        print(f"load after: {load()}")
        db.dispose()
        return 0
    finally:
        if stub is not None:
            stub.close()
        lab.close()
        import shutil

        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    os.umask(0o022)
    raise SystemExit(main())
