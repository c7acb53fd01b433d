"""Drive the reconcile loops by hand, so service tests need no daemon and no sleeps."""

from __future__ import annotations

import contextlib
from collections import Counter
from pathlib import Path

from sqlalchemy import select

from vocloud.core.placement import SchedPolicy
from vocloud.drivers.vmm.sim import SimDriver
from vocloud.engine.reconcile import LoopSettings, Reconciler
from vocloud.service.auth import Actor
from vocloud.service.cloud import Cloud
from vocloud.store.schema import VM, User


def admin(cloud: Cloud) -> Actor:
    with cloud.db.read() as s:
        u = s.scalars(select(User).where(User.name == "admin")).one()
        return Actor(u.id, u.name, u.group_id, True)


def user_in(cloud: Cloud, name: str, group: str) -> Actor:
    a = admin(cloud)
    with contextlib.suppress(Exception):
        cloud.accounts.create_group(a, group)
    info = cloud.accounts.create_user(a, name, group)
    return cloud.authenticate(info["token"])


def reconciler(cloud: Cloud, root: Path, policy: SchedPolicy | None = None, boot_timeout: float = 60,
               shutdown_timeout: float = 5, boot_delay: float = 0.0) -> tuple[Reconciler, SimDriver]:
    drv = SimDriver(root, boot_delay=boot_delay, shutdown_delay=0.0)
    rec = Reconciler(cloud, {"sim": drv}, LoopSettings(policy=policy or SchedPolicy(),
                                                       boot_timeout=boot_timeout,
                                                       shutdown_timeout=shutdown_timeout,
                                                       monitor_interval=0))
    return rec, drv


def converge(rec: Reconciler, passes: int = 8) -> None:
    for _ in range(passes):
        rec.monitor_once(force=True)
        rec.schedule_once()
        rec.lifecycle_once()


def states(cloud: Cloud) -> Counter[str]:
    with cloud.db.read() as s:
        return Counter(s.scalars(select(VM.state)))
