"""Several ``vocloud serve`` front-ends on one PostgreSQL store, churn against them, kill -9 of
the leader, and the invariants checked afterwards (tests/integration/test_ha.py and
bench/bench_failover.py share it).

Every front-end has its own data directory and port; they share one database and one
``shared_dir`` (the sim hosts' guests, the sim batch queue, the EC2 key file), as front-ends on
several machines share a filesystem (docs/ha.md). Who leads is read from ``GET /status``.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from tests.support.daemon import Daemon
from tests.support.ports import free_port
from vocloud.batch.sim import SimBatch
from vocloud.client import ApiError, Client, ClientError
from vocloud.model.lifecycle import HOLDS_HOST
from vocloud.store.db import Database
from vocloud.store.pools import PoolVMRow
from vocloud.store.schema import VM, Host, Lease, Quota

#: fast loops and a fast election for the failover runs
HA_ENV = {"VOCLOUD_LEADER_POLL": "0.2", "VOCLOUD_BATCH_SYSTEM": "sim", "VOCLOUD_POOL_INTERVAL": "0.5",
          "VOCLOUD_SIM_BOOT_DELAY": "0.3", "VOCLOUD_SIM_SHUTDOWN_DELAY": "0.1",
          "VOCLOUD_MONITOR_INTERVAL": "0.5", "VOCLOUD_LOG_LEVEL": "warning"}


class Frontends:
    def __init__(self, root: Path, db_url: str, n: int = 3, extra_env: dict[str, str] | None = None) -> None:
        self.root = root
        self.db_url = db_url
        self.shared = root / "shared"
        env = {**HA_ENV, "VOCLOUD_SHARED_DIR": str(self.shared), **(extra_env or {})}
        self.daemons = [Daemon(root / f"fe{i}", db_url, free_port(), dict(env)) for i in range(n)]
        for d in self.daemons:
            d.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._token = ""
        self.restarts: list[threading.Thread] = []

    @property
    def token(self) -> str:
        if not self._token:
            self._token = self.daemons[0].token
        return self._token

    def start(self, parallel: bool = True) -> None:
        """The first front-end creates the admin (its token is everyone's), then the others."""
        self.daemons[0].start()
        self._token = self.daemons[0].token
        if parallel:
            self._in_parallel([d.start for d in self.daemons[1:]])
        else:
            for d in self.daemons[1:]:
                d.start()

    @staticmethod
    def _in_parallel(jobs: list[Callable[[], None]]) -> None:
        with ThreadPoolExecutor(max(1, len(jobs))) as pool:
            for f in [pool.submit(j) for j in jobs]:
                f.result()

    def settle_restarts(self) -> None:
        """Wait for the front-ends restarted after their kill to serve again."""
        for t in self.restarts:
            t.join(120)
        self.restarts.clear()

    def stop(self) -> None:
        self.settle_restarts()
        for d in self.daemons:
            if d.proc is not None and d.proc.poll() is None:
                d.stop(timeout=30)

    def alive(self) -> list[Daemon]:
        return [d for d in self.daemons if d.proc is not None and d.proc.poll() is None]

    def healthy(self) -> list[Daemon]:
        """The live front-ends that answer (a restarted one is not until it serves)."""
        out = []
        for d in self.alive():
            try:
                if httpx.get(f"{d.url}/health", timeout=2).status_code == 200:
                    out.append(d)
            except httpx.HTTPError:
                continue
        return out

    def status(self, d: Daemon) -> dict[str, Any]:
        r = httpx.get(f"{d.url}/status", headers={"Authorization": f"Bearer {self.token}"}, timeout=5)
        r.raise_for_status()
        doc: dict[str, Any] = r.json()
        return doc

    def leader(self) -> Daemon | None:
        """The live front-end that leads now, as any live front-end reports it."""
        for d in self.alive():
            try:
                lead = self.status(d)["leader"]
            except (httpx.HTTPError, KeyError):
                continue
            if lead is None:
                return None
            return next((x for x in self.alive() if x.proc is not None and x.proc.pid == lead["pid"]), None)
        return None

    def wait_leader(self, timeout: float = 30.0, not_pid: int | None = None) -> Daemon:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            d = self.leader()
            if d is not None and d.proc is not None and d.proc.pid != not_pid:
                return d
            time.sleep(0.05)
        raise AssertionError(f"no front-end leads after {timeout:g} s")

    def elections(self) -> str:
        """The front-ends' log lines about the lead (for a failing test's message)."""
        lines = []
        for d in self.daemons:
            text = d.log.read_text(errors="replace") if d.log.exists() else ""
            lines += [f"{d.data_dir.name}: {ln}" for ln in text.splitlines()
                      if "lead" in ln or "election" in ln]
        return "\n".join(lines[-40:])

    def client(self, d: Daemon) -> Client:
        return Client(d.base_url, self.token, timeout=30)

    @staticmethod
    def _restart(d: Daemon) -> None:
        """Start a killed front-end again (a second try if the first start times out: a
        machine shared with other test runs can be that slow)."""
        try:
            d.start()
        except AssertionError:
            d.start()

    def kill_leader(self, timeout: float = 30.0) -> float:
        """kill -9 the leader, restart it (as its supervisor would), return the seconds until
        another front-end leads (measured from the kill to the first ``/status`` naming it)."""
        if len(self.healthy()) < 2:
            self.settle_restarts()  # a takeover needs a live follower: never time a restart
        old = self.wait_leader()
        assert old.proc is not None
        pid = old.proc.pid
        t0 = time.monotonic()
        old.kill9()
        self.wait_leader(timeout, not_pid=pid)
        took = time.monotonic() - t0
        t = threading.Thread(target=self._restart, args=(old,), daemon=True)  # as its
        t.start()  # supervisor would restart it; the next kill needs no wait for it
        self.restarts.append(t)
        return took


@dataclass
class Churn:
    """Clients creating and terminating VMs (half with a NIC: leases) through random live
    front-ends, and submitting sim batch jobs so the pool grows and shrinks, until stopped."""

    fe: Frontends
    created: set[int] = field(default_factory=set)
    terminated: set[int] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def setup(self, hosts: int = 4) -> None:
        d = self.fe.daemons[0]
        with self.fe.client(d) as c:
            for i in range(hosts):
                c.post("/hosts", {"name": f"ha-h{i}", "cpu": 128, "memory": 65536})
            c.post("/vnets", {"template": 'NAME="ha-lan"\nAR=[IP="10.97.0.10", SIZE="4000"]\n'})
            c.post("/groups", {"name": "havo"})
            c.post("/templates", {"template": "CPU=1\nMEMORY=128\n", "name": "ha-wn", "public": True})
            c.post("/pools", {"vo": "havo", "template": "ha-wn", "cores": 1, "memory": 128,
                              "max": 6, "idle_timeout": 2})

    def _client_loop(self, seed: int) -> None:
        rnd = random.Random(seed)
        while not self.stop.is_set():
            live = self.fe.alive()
            if not live:
                time.sleep(0.1)
                continue
            d = rnd.choice(live)
            try:
                with self.fe.client(d) as c:
                    if rnd.random() < 0.5 or not (self.created - self.terminated):
                        nic = 'NIC=[NETWORK="ha-lan"]\n' if rnd.random() < 0.5 else ""
                        ids = c.post("/vms", {"template": f"CPU=1\nMEMORY=64\n{nic}"})
                        self.created.update(int(i) for i in ids["ids"])
                    else:
                        vm = rnd.choice(sorted(self.created - self.terminated))
                        self.terminated.add(vm)
                        c.post(f"/vms/{vm}/action", {"action": "terminate"})
            except (httpx.TransportError, ClientError) as exc:
                # the front-end just died under the request: its outcome is unknown to us (a
                # terminate may have been done: asking again is a 409), so the invariants below
                # re-read the store rather than trust our records
                if isinstance(exc, ApiError) and exc.status < 500 and exc.status != 409:
                    self.errors.append(f"{exc.status}: {exc}")
            time.sleep(rnd.uniform(0.05, 0.2))

    def _jobs_loop(self) -> None:
        batch = SimBatch(path=self.fe.shared / "batch-sim.json")
        rnd = random.Random(7)
        while not self.stop.is_set():
            if len(batch.pending()) < 4:
                batch.submit("havo", cores=1, runtime=rnd.uniform(1, 4))
            self.stop.wait(0.4)

    def start(self, clients: int = 3) -> None:
        for i in range(clients):
            self.threads.append(threading.Thread(target=self._client_loop, args=(i,), daemon=True))
        self.threads.append(threading.Thread(target=self._jobs_loop, daemon=True))
        for t in self.threads:
            t.start()

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(60)


def settled(db: Database) -> bool:
    """No VM between states (every decision carried out)."""
    with db.read() as s:
        busy = s.scalar(select(func.count()).select_from(VM).where(
            VM.state.notin_(["RUNNING", "DONE", "FAILURE", "POWEROFF", "UNDEPLOYED", "STOPPED",
                             "SUSPENDED", "HOLD"])))
    return busy == 0


def state_counts(db: Database) -> str:
    with db.read() as s:
        return str(dict(s.execute(select(VM.state, func.count()).group_by(VM.state)).all()))


def invariants(db: Database, shared: Path, created: set[int]) -> dict[str, Any]:
    """What must hold after any number of failovers; returns the figures, raises on a breach."""
    problems: list[str] = []
    with db.read() as s:
        vms = list(s.scalars(select(VM)))
        hosts = {h.id: h for h in s.scalars(select(Host))}
        leases = list(s.scalars(select(Lease)))
        quotas = list(s.scalars(select(Quota)))
        pool_rows = list(s.scalars(select(PoolVMRow)))
    by_id = {v.id: v for v in vms}
    workers = {v.id for v in vms if v.name.startswith("havo") or v.name.startswith("pool")}
    # lost: a VM the clients were told was created that is not in the store
    lost = sorted(created - set(by_id))
    if lost:
        problems.append(f"lost VMs: {lost[:20]}")
    # duplicated: two live VMs with the same pool worker name (a boot carried out twice)
    names = Counter(v.name for v in vms if v.state != "DONE" and v.id in workers)
    dups = {n: k for n, k in names.items() if k > 1}
    bound = Counter(r.vm_id for r in pool_rows if r.vm_id is not None)
    if dups or any(k > 1 for k in bound.values()):
        problems.append(f"duplicated workers: {dups} {[v for v, k in bound.items() if k > 1]}")
    # double boots: a sim guest deployed more than once
    boots = 0
    double = []
    for f in (shared / "sim").glob("*/*.json"):
        try:
            doc = json.loads(f.read_text())
        except (OSError, ValueError):
            continue
        boots += 1
        if int(doc.get("boots", 1)) > 1:
            double.append(f.name)
    if double:
        problems.append(f"double boots: {double[:20]}")
    # every RUNNING VM's guest exists; no guest of a finished VM is left
    guests = {f.stem for f in (shared / "sim").glob("*/*.json")}
    running = {v.deploy_id for v in vms if v.state == "RUNNING"}
    if running - guests:
        problems.append(f"RUNNING VMs without a guest: {sorted(running - guests)[:20]}")
    done = {v.deploy_id for v in vms if v.state == "DONE" and v.deploy_id}
    if done & guests:
        problems.append(f"guests of DONE VMs left on hosts: {sorted(done & guests)[:20]}")
    # leases: one per NIC of a live VM, none for a finished one (the unique key forbids doubles)
    ips = Counter((le.network_id, le.ip) for le in leases)
    if any(k > 1 for k in ips.values()):
        problems.append("an address leased twice")
    for le in leases:
        if le.vm_id is not None and (le.vm_id not in by_id or by_id[le.vm_id].state == "DONE"):
            problems.append(f"lease {le.ip} held by finished VM {le.vm_id}")
    # host capacity: the allocations are exactly the VMs placed there
    holds = {st.value for st in HOLDS_HOST}
    for h in hosts.values():
        mine = [v for v in vms if v.host_id == h.id and v.state in holds]
        want = (sum(v.cpu_m for v in mine), sum(v.memory for v in mine), len(mine))
        if (h.alloc_cpu_m, h.alloc_mem, h.running_vms) != want:
            problems.append(f"host {h.name}: alloc {(h.alloc_cpu_m, h.alloc_mem, h.running_vms)} != {want}")
        if h.alloc_cpu_m > h.total_cpu_m:
            problems.append(f"host {h.name} over capacity")
    # quotas: usage is exactly the live VMs
    for q in quotas:
        mine = [v for v in vms if v.state != "DONE"
                and (v.owner_id if q.scope == "user" else v.group_id) == q.scope_id]
        want = (len(mine), sum(v.cpu_m for v in mine), sum(v.memory for v in mine))
        if (q.vms_used, q.cpu_m_used, q.mem_used) != want:
            got = (q.vms_used, q.cpu_m_used, q.mem_used)
            problems.append(f"quota {q.scope} {q.scope_id}: {got} != {want}")
    assert not problems, "\n".join(problems)
    return {"vms": len(vms), "live": sum(v.state != "DONE" for v in vms), "workers": len(workers),
            "guests": boots, "leases": len(leases)}
