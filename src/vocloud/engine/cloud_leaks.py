"""Leaked cloud instances: tagged as this installation's, unknown to its store, terminated.

A cloud bills an instance until someone terminates it, so an instance this installation
started but no longer knows (its VM record was removed by ``recover --delete`` or a restored
database, or someone launched one by hand with our tags) must not run forever. Each monitor
pass of a cloud host lists every vocloud-tagged instance of the region (drivers/vmm/ec2.py);
those whose deploy id carries this installation's prefix but matches no live VM of this host
are *leak suspects*. A suspect still there after the host's grace period (``EC2_LEAK_GRACE``,
seconds, default 300, counted from this daemon's first sighting) is terminated and reported:
a warning in the log and a ``leak`` event on the host (``host show``). Another installation's
instances (another prefix) are never touched.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from sqlalchemy import select

from vocloud.core.burst import CLOUD_HYPERVISORS
from vocloud.drivers.base import DomainInfo, HostRef, VMMDriver
from vocloud.engine.host_row import HostLike
from vocloud.errors import DriverError
from vocloud.model.lifecycle import VMState
from vocloud.service.base import record
from vocloud.store.db import Database
from vocloud.store.schema import VM, SiteSetting

log = logging.getLogger("vocloud.engine.leaks")


class LeakSweeper:
    def __init__(self, db: Database, clock: Callable[[], float]) -> None:
        self.db = db
        self.clock = clock
        self.first_seen: dict[tuple[int, str], float] = {}
        self._prefix: str | None = None

    def prefix(self) -> str:
        if self._prefix is None:
            with self.db.read() as s:
                tag = s.scalar(select(SiteSetting.value).where(SiteSetting.key == "instance_tag"))
            self._prefix = f"vc{tag or ''}-"
        return self._prefix

    def suspects(self, h: HostLike, domains: Mapping[str, DomainInfo]) -> set[str]:
        ours = {d for d in domains if d.startswith(self.prefix())}
        if not ours:
            return set()
        with self.db.read() as s:
            known = set(s.scalars(select(VM.deploy_id).where(VM.deploy_id.in_(sorted(ours)))
                                  .where(VM.host_id == h.id)
                                  .where(VM.state != VMState.DONE.value)))
        return ours - known

    def sweep(self, h: HostLike, ref: HostRef, drv: VMMDriver,
              domains: Mapping[str, DomainInfo]) -> list[str]:
        """Terminate the suspects past their grace; returns their deploy ids."""
        if h.vmm not in CLOUD_HYPERVISORS:
            return []
        now = self.clock()
        suspects = self.suspects(h, domains)
        for key in [k for k in self.first_seen if k[0] == h.id and k[1] not in suspects]:
            del self.first_seen[key]
        try:
            grace = max(float(str((h.attrs or {}).get("EC2_LEAK_GRACE", "300")) or 300), 0.0)
        except ValueError:
            grace = 300.0
        done = []
        for dep in sorted(suspects):
            first = self.first_seen.setdefault((h.id, dep), now)
            if now - first < grace:
                continue
            detail = domains[dep].detail
            try:
                drv.cleanup(ref, dep)
            except DriverError as exc:
                log.warning("host %s: could not terminate leaked instance %s: %s", h.name, dep, exc.message)
                continue
            msg = (f"terminated leaked instance {dep} ({detail}): tagged by this installation, "
                   f"no live VM of this host has it (seen for {now - first:.0f} s)")
            log.warning("host %s: %s", h.name, msg)
            with self.db.write() as s:
                record(s, "host", h.id, "leak", message=msg, at=now)
            del self.first_seen[(h.id, dep)]
            done.append(dep)
        return done
