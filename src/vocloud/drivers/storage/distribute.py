"""Pre-stage one image onto many hosts by a fan-out tree (``vocloud image distribute``).

The imperative shell around :mod:`vocloud.core.distribution`: it checks the front-end's copy
once, asks every host what it holds (in parallel), then runs the planner's hops on a thread pool
(:mod:`vocloud.drivers.storage.hops` does each hop's I/O) and feeds their outcomes back until every
host holds a verified copy or was given up. Hosts given up keep nothing half-written. Local hosts
(this machine) are filled by the image cache's local copy and serve nobody.

Progress goes to ``on_event(host_report)`` after every change, from the distribution's thread.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from typing import Any

from vocloud.core.distribution import (
    FRONT_END,
    Outcome,
    Planner,
    Transfer,
    finish,
    new_planner,
    next_transfers,
    tree_depth,
)
from vocloud.drivers.base import HostRef
from vocloud.drivers.storage.cache import ImageCache, normalise_sha
from vocloud.drivers.storage.hops import HopResult, Hops
from vocloud.drivers.storage.qimg import MIB, check_format
from vocloud.errors import DriverError, HostUnreachable

log = logging.getLogger(__name__)

MAX_THREADS = 16


@dataclass(slots=True)
class HostReport:
    """One host's part in a distribution, as the CLI and REST show it."""

    host: str
    state: str = "pending"  # pending | sending | verified | held | failed | local
    source: str = ""  # who sent its copy ("front-end" or a host name)
    bytes: int = 0
    resumed_from: int = 0
    attempts: int = 0
    seconds: float = 0.0
    error: str = ""


@dataclass(slots=True)
class Result:
    image: str
    sha256: str
    size: int
    fanout: int
    hosts: list[HostReport] = field(default_factory=list)
    front_end_bytes: int = 0
    host_bytes: int = 0
    depth: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(h.state in ("verified", "held", "local") for h in self.hosts)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ok"] = self.ok
        return out


def front_end_sha256(path: str) -> tuple[int, str]:
    """(size, sha256) of the repository image on the front-end, read once."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(4 * MIB):
                digest.update(chunk)
        return os.path.getsize(path), digest.hexdigest()
    except OSError as exc:
        raise DriverError(f"image {path}: {exc.strerror} on the front-end") from None


class Distribution:
    """Bring every host of ``hosts`` to hold the verified base of one image."""

    def __init__(self, path: str, sha256: str, fmt: str, hosts: Sequence[HostRef], transports: Any,
                 root: str, fanout: int = 2, max_attempts: int = 3,
                 on_event: Callable[[HostReport], None] | None = None,
                 cache: ImageCache | None = None) -> None:
        check_format(fmt, f"image {path}")
        if fanout < 1 or fanout > 64:
            raise DriverError(f"fanout must be between 1 and 64, not {fanout}")
        names = [h.name for h in hosts]
        if len(set(names)) != len(names):
            raise DriverError("a host is named twice")
        self.path, self.fmt, self.fanout = path, fmt, fanout
        self.sha256 = normalise_sha(sha256, path) if sha256 else ""
        self.hosts = {h.name: h for h in hosts}
        self.transports = transports
        self.cache = cache or ImageCache(root, runner_for=lambda h: functools.partial(
            transports(h).run, h), transports=transports)
        self.max_attempts = max_attempts
        self.on_event = on_event or (lambda _r: None)
        self.reports = {h.name: HostReport(h.name) for h in hosts}
        self._lock = threading.Lock()

    def _event(self, name: str, **changes: Any) -> None:
        with self._lock:
            report = self.reports[name]
            for k, v in changes.items():
                setattr(report, k, v)
        self.on_event(report)

    def run(self) -> Result:
        started = time.monotonic()
        size, sha = front_end_sha256(self.path)
        if self.sha256 and sha != self.sha256:
            raise DriverError(f"image {self.path}: sha256 on the front-end is {sha}, the "
                              f"repository recorded {self.sha256}; not distributing it")
        self.sha256 = sha
        hops = Hops(self.cache, self.transports, self.path, sha, self.fmt, size)
        result = Result(self.path, sha, size, self.fanout)
        remote = [h for h in self.hosts.values() if h.transport != "local"]
        with ThreadPoolExecutor(min(MAX_THREADS, max(len(self.hosts), 1)),
                                thread_name_prefix="vocloud-distribute") as pool:
            for h in self.hosts.values():
                if h.transport == "local":
                    self._local(h, sha)
            held = self._probe_all(pool, hops, remote)
            plan = new_planner([h.name for h in remote if self.reports[h.name].state != "failed"],
                               held, self.fanout, self.max_attempts)
            self._run_plan(pool, hops, plan, result)
            for name in plan.failed:
                pool.submit(hops.drop_part, self.hosts[name])
        result.hosts = [self.reports[n] for n in self.hosts]
        result.host_bytes = sum(r.bytes for r in result.hosts if r.source not in ("front-end", ""))
        result.depth = tree_depth(plan)
        result.seconds = round(time.monotonic() - started, 3)
        log.info("distributed %s to %d hosts in %.1f s: front-end sent %d MiB, hosts %d MiB, "
                 "tree depth %d, %d failed", self.path, len(self.hosts), result.seconds,
                 result.front_end_bytes // MIB, result.host_bytes // MIB, result.depth,
                 sum(1 for r in result.hosts if r.state == "failed"))
        return result

    # ------------------------------------------------------------ phases

    def _local(self, host: HostRef, sha: str) -> None:
        try:
            self.cache.ensure(host, self.path, sha, self.fmt)
            self._event(host.name, state="local", source="front-end")
        except DriverError as exc:
            self._event(host.name, state="failed", error=str(exc))

    def _probe_all(self, pool: ThreadPoolExecutor, hops: Hops, hosts: list[HostRef]) -> list[str]:
        futures = {h.name: pool.submit(hops.probe, h) for h in hosts}
        held: list[str] = []
        for name, fut in futures.items():
            try:
                have, _part = fut.result()
            except HostUnreachable as exc:
                self._event(name, state="failed", error=str(exc))
                continue
            except DriverError as exc:
                self._event(name, state="failed", error=str(exc))
                continue
            if have:
                held.append(name)
                self._event(name, state="held")
        return held

    def _run_plan(self, pool: ThreadPoolExecutor, hops: Hops, plan: Planner, result: Result) -> None:
        running: dict[Future[HopResult], tuple[Transfer, float]] = {}
        while True:
            for t in next_transfers(plan):
                source = "front-end" if t.source == FRONT_END else t.source
                self._event(t.child, state="sending", source=source, attempts=plan.attempts[t.child],
                            error="")
                fut = (pool.submit(hops.from_front_end, self.hosts[t.child]) if t.source == FRONT_END
                       else pool.submit(hops.between, self.hosts[t.source], self.hosts[t.child]))
                running[fut] = (t, time.monotonic())
            if not running:
                break
            done, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for fut in done:
                t, t0 = running.pop(fut)
                try:
                    hop = fut.result()
                except Exception as exc:  # a bug or an unexpected transport error: the child's
                    hop = HopResult(Outcome.CHILD_FAILED, why=f"{type(exc).__name__}: {exc}")
                self._settle(hops, plan, result, t, hop, time.monotonic() - t0)

    def _settle(self, hops: Hops, plan: Planner, result: Result, t: Transfer, hop: HopResult,
                took: float) -> None:
        outcome = hop.outcome
        if t.source == FRONT_END:
            result.front_end_bytes += hop.sent
        elif (outcome is Outcome.CHILD_FAILED and hop.why.endswith("redone")
              and not hops.reverify(self.hosts[t.source])):
            # the child says the bytes were wrong although the sender's hash was right: the
            # sender's stored copy is checked too (a flip after its read is caught here)
            outcome = Outcome.SOURCE_BAD
        with self._lock:
            report = self.reports[t.child]
            report.bytes += hop.sent
        if outcome is Outcome.OK:
            self._event(t.child, state="verified", seconds=round(took, 3),
                        resumed_from=hop.offset)
        else:
            log.warning("distribute %s: %s", self.path, hop.why)
        finish(plan, t, outcome, hop.why)
        if outcome in (Outcome.SOURCE_BAD, Outcome.SOURCE_DOWN) and t.source != FRONT_END:
            state = "pending" if outcome is Outcome.SOURCE_BAD else "failed"
            self._event(t.source, state=state, error=hop.why)
        if outcome is not Outcome.OK:
            if t.child in plan.failed:
                self._event(t.child, state="failed", error=plan.failed[t.child])
            else:
                self._event(t.child, state="pending", error=hop.why)
