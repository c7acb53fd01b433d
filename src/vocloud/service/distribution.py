"""Image distribution as the service layer sees it: who may, which image, which hosts.

Only administrators distribute (it writes into every chosen host's cache and, for one hop at a
time, into a host's ``authorized_keys``; docs/image-distribution.md). The request is typed here
(an image by id or name, host names that must exist, a fan-out between 1 and
:data:`MAX_FANOUT`) and handed to ``runner``, which the composition root builds from the drivers;
it runs in a thread of its own and its progress is kept in memory, by distribution id, for
``show`` (the CLI polls it). A daemon restart forgets running distributions; the hosts keep
what was verified, and running it again sends only what is missing.
"""

from __future__ import annotations

import builtins
import itertools
import logging
import re
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from vocloud.drivers.base import HostRef
from vocloud.errors import Conflict, InvalidInput, NotFound, VocloudError
from vocloud.model.lifecycle import HostState
from vocloud.service.auth import Actor
from vocloud.service.base import find, record, require_admin
from vocloud.store.db import Database
from vocloud.store.schema import Host, Image

log = logging.getLogger(__name__)

MAX_FANOUT = 16
MAX_HOSTS = 1000
KEEP = 50  # finished distributions remembered for ``show``
_NAME = re.compile(r"[A-Za-z0-9._-]{1,128}")
#: hosts whose driver keeps image files (sim and cloud hosts have no disk to fill)
STORING_VMMS = frozenset({"qemu"})


@dataclass(frozen=True, slots=True)
class Job:
    """What a runner gets: the image's file and recorded checksum, the hosts, the fan-out."""

    id: int
    image_id: int
    image: str
    path: str
    fmt: str
    sha256: str
    hosts: tuple[HostRef, ...]
    fanout: int


#: runs a job, calling ``progress(host_report_dict)`` as hosts change; returns the result dict
Runner = Callable[[Job, Callable[[dict[str, Any]], None]], dict[str, Any]]


def _host_ref(h: Host) -> HostRef:
    return HostRef(id=h.id, name=h.name, vmm=h.vmm, transport=h.transport,
                   attrs={k: str(v) for k, v in (h.attrs or {}).items()})


class DistributionService:
    """Start distributions (admins) and follow them (see the module docstring)."""

    def __init__(self, db: Database, runner: Runner | None = None) -> None:
        self.db = db
        self.runner = runner
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._jobs: dict[int, dict[str, Any]] = {}

    # ------------------------------------------------------------ requests

    def start(self, actor: Actor, image: int | str, hosts: Sequence[str] | None = None,
              fanout: int = 2, wait: bool = False) -> dict[str, Any]:
        """Check and start a distribution; ``wait``: return when it is over (the bench)."""
        require_admin(actor, "distribute images to hosts")
        if isinstance(fanout, bool) or not isinstance(fanout, int) or not 1 <= fanout <= MAX_FANOUT:
            raise InvalidInput(f"fanout must be a whole number from 1 to {MAX_FANOUT}, got {fanout!r}")
        names = self._names(hosts)
        job_id = self._launch(image, names, fanout, f"by {actor.name}", wait)
        return self.show(actor, job_id)

    def start_for_pool(self, image_id: int, hosts: Sequence[str], fanout: int, pool: str) -> int:
        """The pool controller's pre-stage (docs/image-distribution.md): no actor, since no user
        asks for it. Not reachable from any front-end: the controller alone chooses ``hosts``
        (the site's hosts that could take the pool's workers, from the store) and the image
        (its pool's, which the pool identity may USE). Returns the distribution's id."""
        names = self._names(hosts)
        fanout = min(max(int(fanout), 1), MAX_FANOUT)
        return self._launch(int(image_id), names, fanout, f"for the pool of VO {pool}", False)

    def peek(self, dist_id: int) -> dict[str, Any] | None:
        """A distribution's state for the pool controller (no actor: never a front-end's)."""
        with self._lock:
            state = self._jobs.get(dist_id)
            return None if state is None else self._view(state)

    def _launch(self, image: int | str, names: builtins.list[str] | None, fanout: int, by: str,
                wait: bool) -> int:
        if self.runner is None:
            raise Conflict("image distribution needs the daemon's drivers (not wired here)")
        with self.db.write() as s:
            img = find(s, Image, "image", image)
            if names is None:
                rows = list(s.scalars(select(Host).where(
                    Host.vmm.in_(STORING_VMMS),
                    Host.state.not_in([HostState.DISABLED.value, HostState.OFFLINE.value]))
                    .order_by(Host.id)))
            else:
                rows = [find(s, Host, "host", n) for n in names]
                odd = [h.name for h in rows if h.vmm not in STORING_VMMS]
                if odd:
                    raise InvalidInput(f"hosts {', '.join(odd)} keep no image files "
                                       f"(vmm is not one of {', '.join(sorted(STORING_VMMS))})")
            if not rows:
                raise InvalidInput("no host to distribute to (no enabled qemu host)")
            job = Job(next(self._ids), img.id, img.name, img.path, img.format, img.sha256 or "",
                      tuple(_host_ref(h) for h in rows), fanout)
            record(s, "image", img.id, "distribute", img.state, img.state,
                   f"{by} to {len(rows)} hosts, fanout {fanout} (distribution {job.id})")
        state = {"id": job.id, "image_id": job.image_id, "image": job.image, "fanout": fanout,
                 "by": by, "state": "running", "started_at": time.time(), "ended_at": None,
                 "error": "", "hosts": {h.name: {"host": h.name, "state": "pending"} for h in job.hosts},
                 "result": None}
        with self._lock:
            self._jobs[job.id] = state
            for old in sorted(self._jobs)[:-KEEP]:
                if self._jobs[old]["state"] != "running":
                    del self._jobs[old]
        thread = threading.Thread(target=self._run, args=(job,), name=f"distribute-{job.id}",
                                  daemon=True)
        thread.start()
        if wait:
            thread.join()
        return job.id

    def show(self, actor: Actor, dist_id: int) -> dict[str, Any]:
        require_admin(actor, "follow image distributions")
        with self._lock:
            state = self._jobs.get(dist_id)
            if state is None:
                raise NotFound(f"distribution {dist_id} does not exist (or was forgotten: the "
                               f"daemon keeps the last {KEEP})")
            return self._view(state)

    def list(self, actor: Actor) -> list[dict[str, Any]]:
        require_admin(actor, "list image distributions")
        with self._lock:
            return [self._view(self._jobs[i]) for i in sorted(self._jobs)]

    # ------------------------------------------------------------ the thread

    @staticmethod
    def _view(state: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in state.items() if k != "hosts"}
        out["hosts"] = [dict(h) for h in state["hosts"].values()]
        return out

    @staticmethod
    def _names(hosts: Sequence[str] | None) -> builtins.list[str] | None:
        if hosts is None:
            return None
        names = list(hosts)
        if not names or len(names) > MAX_HOSTS:
            raise InvalidInput(f"name 1 to {MAX_HOSTS} hosts")
        for n in names:
            if not isinstance(n, str) or not _NAME.fullmatch(n):
                raise InvalidInput(f"bad host name {n!r}")
        if len(set(names)) != len(names):
            raise InvalidInput("a host is named twice")
        return names

    def _run(self, job: Job) -> None:
        def progress(report: dict[str, Any]) -> None:
            with self._lock:
                self._jobs[job.id]["hosts"][report["host"]] = dict(report)

        assert self.runner is not None
        try:
            result = self.runner(job, progress)
            end = {"state": "done" if result.get("ok") else "failed", "result": result,
                   "error": "" if result.get("ok") else "some hosts did not get the image"}
        except VocloudError as exc:
            end = {"state": "failed", "error": str(exc)}
        except Exception as exc:  # the thread must not die silently: say it, keep the daemon
            log.exception("distribution %d failed", job.id)
            end = {"state": "failed", "error": f"{type(exc).__name__}: {exc}"}
        with self._lock:
            self._jobs[job.id].update(end, ended_at=time.time())
