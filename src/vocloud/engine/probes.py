"""Ask many hosts at once: the monitor pass's driver calls, with bounded concurrency.

Why: a monitor pass probed its hosts one after the other, so a pass over 100 SSH hosts took
100 round trips end to end even though each host answers on its own. Remote hosts (any transport
but ``local``) are asked from a small thread pool — the SSH transport multiplexes every thread
onto its one event loop and one cached connection per host, so the threads only wait. Local hosts
(the sim driver, the front-end's own qemu) are asked inline: their calls are CPU and file work
that threads would only slow down under the GIL. The answers are handled afterwards, in host
order, by the caller, so everything that writes to the store stays on one thread.

A driver with a bulk probe (drivers/base.py::BulkMonitor, the sim) is asked once for all its
hosts of the pass, while the remote calls run: at 2,000 sim hosts the per-host calls were most
of a pass.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar, cast

from vocloud.drivers.base import BulkMonitor, HostInfo, HostRef, VMMDriver
from vocloud.errors import DriverError

H = TypeVar("H")
R = TypeVar("R")


def call_all(hosts: Sequence[H], call: Callable[[H], R], remote: Callable[[H], bool],
             workers: int, meanwhile: Callable[[], None] | None = None) -> list[R | DriverError]:
    """``call(h)`` for every host, its result or its DriverError, in ``hosts`` order. At most
    ``workers`` remote calls run at once; any other exception propagates, as a single call's
    would. ``meanwhile`` runs on this thread while the remote calls are under way."""

    def one(h: H) -> R | DriverError:
        try:
            return call(h)
        except DriverError as exc:
            return exc

    far = [i for i, h in enumerate(hosts) if remote(h)]
    out: dict[int, R | DriverError] = {}
    pool = ThreadPoolExecutor(min(workers, len(far)), thread_name_prefix="vocloud-probe") \
        if workers > 1 and len(far) > 1 else None
    try:
        futures = {i: pool.submit(one, hosts[i]) for i in far} if pool is not None else {}
        if meanwhile is not None:
            meanwhile()
        for i, h in enumerate(hosts):
            if i not in futures:
                out[i] = one(h)
        for i, f in futures.items():
            out[i] = f.result()
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return [out[i] for i in range(len(hosts))]


def probe_all(hosts: Sequence[H], driver: Callable[[H], VMMDriver], ref: Callable[[H], HostRef],
              remote: Callable[[H], bool], workers: int) -> list[HostInfo | DriverError]:
    """Every host's monitor answer (its HostInfo or DriverError), in ``hosts`` order: hosts whose
    driver has ``monitor_many`` in one call per driver, the others through :func:`call_all`.
    ``driver(h)`` may raise DriverError (no such driver loaded): that host's answer."""
    out: dict[int, HostInfo | DriverError] = {}
    bulk: dict[int, tuple[BulkMonitor, list[int]]] = {}
    is_bulk: dict[int, bool] = {}  # per driver object: isinstance on a Protocol is slow
    single: list[int] = []
    for i, h in enumerate(hosts):
        try:
            drv = driver(h)
        except DriverError as exc:
            out[i] = exc
            continue
        key = id(drv)
        if key not in is_bulk:
            is_bulk[key] = isinstance(drv, BulkMonitor)
        if is_bulk[key]:
            bulk.setdefault(key, (cast(BulkMonitor, drv), []))[1].append(i)
        else:
            single.append(i)

    def bulk_calls() -> None:
        for drv, idx in bulk.values():
            got = drv.monitor_many([ref(hosts[i]) for i in idx])
            for i, answer in zip(idx, got, strict=True):
                out[i] = answer

    singles = [hosts[i] for i in single]
    answers = call_all(singles, lambda h: driver(h).monitor(ref(h)), remote, workers, bulk_calls)
    out.update(zip(single, answers, strict=True))
    return [out[i] for i in range(len(hosts))]
