"""A small site for VO-pool tests: sim hosts, the sim batch system on a virtual clock, the real
pool controller and IaaS loops, driven pass by pass (no daemon, no sleeps)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from sqlalchemy import select

from tests.support.helpers import admin, converge, reconciler, user_in
from vocloud.batch.sim import SimBatch
from vocloud.elastic.policy import PoolVMState
from vocloud.engine.pools import PoolController
from vocloud.engine.reconcile import Reconciler
from vocloud.model.lifecycle import VMState
from vocloud.service.auth import Actor
from vocloud.service.cloud import Cloud
from vocloud.service.pools import PoolService
from vocloud.store.pools import PoolRow, PoolVMRow
from vocloud.store.schema import VM

OWN = "CPU=1\nMEMORY=512\n"  # atlas' own worker template

T0 = 1_000_000.0


class Clock:
    def __init__(self) -> None:
        self.t = T0

    def __call__(self) -> float:
        return self.t


class Site:
    def __init__(self, cloud: Cloud, root: Path, hosts: int = 2, cpu: int = 8,
                 memory: int = 16384, bind_grace_s: float = 60.0) -> None:
        self.cloud = cloud
        self.admin = admin(cloud)
        self.clock = Clock()
        self.sim = SimBatch(self.clock)
        self.rec: Reconciler
        self.rec, _ = reconciler(cloud, root / "sim")
        self.pools = PoolService(cloud.db, cloud.vms)
        for i in range(1, hosts + 1):
            cloud.hosts.create(self.admin, f"h{i}", cpu=cpu, memory=memory)
        converge(self.rec, 1)
        self.ctl = self.controller(bind_grace_s)
        # A public standard worker template, and one VO (atlas) with its own.
        cloud.templates.create(self.admin, "CPU=1\nMEMORY=512\n", name="std-worker", public=True)
        self.users: dict[str, Actor] = {}

    def controller(self, bind_grace_s: float = 60.0) -> PoolController:
        return PoolController(self.cloud, self.sim, self.clock, bind_grace_s=bind_grace_s)

    def vo(self, name: str, template_body: str | None = None) -> Actor:
        """A VO group with one user; with ``template_body``, the VO's own template ``<vo>-wn``."""
        user = user_in(self.cloud, f"{name}-user", name)
        self.users[name] = user
        if template_body is not None:
            self.cloud.templates.create(user, template_body, name=f"{name}-wn")
        return user

    def step(self, passes: int = 1, ctl: PoolController | None = None) -> None:
        """Controller pass, IaaS loops, then nodes register/vanish with their VMs."""
        for _ in range(passes):
            (ctl or self.ctl).reconcile_once()
            converge(self.rec, 3)
            self.sync_nodes()

    def sync_nodes(self) -> None:
        self.sim.sync_nodes(self.ctl.running_workers())

    def advance(self, seconds: float) -> None:
        self.clock.t += seconds

    # ------------------------------------------------------------ observations
    def live_vms(self, vo: str) -> int:
        """IaaS VMs of the VO's pool that are not DONE."""
        with self.cloud.db.read() as s:
            return len(s.scalars(
                select(VM.id).join(PoolVMRow, PoolVMRow.vm_id == VM.id)
                .join(PoolRow, PoolRow.id == PoolVMRow.pool_id)
                .where(PoolRow.vo == vo).where(VM.state != VMState.DONE.value)).all())

    def all_vms(self) -> Counter[str]:
        with self.cloud.db.read() as s:
            return Counter(s.scalars(select(VM.state)))

    def pool_states(self, vo: str) -> Counter[str]:
        with self.cloud.db.read() as s:
            return Counter(s.scalars(
                select(PoolVMRow.state).join(PoolRow, PoolRow.id == PoolVMRow.pool_id)
                .where(PoolRow.vo == vo).where(PoolVMRow.state != PoolVMState.GONE.value)))

    def jobs_of(self, vo: str) -> list[str]:
        return [j.id for j in self.sim.jobs() if j.vo == vo]
