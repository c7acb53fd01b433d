"""Ask many hosts at once: the monitor pass's driver calls, with bounded concurrency.

Why: a monitor pass probed its hosts one after the other, so a pass over 100 SSH hosts took
100 round trips end to end even though each host answers on its own. Remote hosts (any transport
but ``local``) are asked from a small thread pool — the SSH transport multiplexes every thread
onto its one event loop and one cached connection per host, so the threads only wait. Local hosts
(the sim driver, the front-end's own qemu) are asked inline: their calls are CPU and file work
that threads would only slow down under the GIL. The answers are handled afterwards, in host
order, by the caller, so everything that writes to the store stays on one thread.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from vocloud.errors import DriverError

H = TypeVar("H")
R = TypeVar("R")


def call_all(hosts: Sequence[H], call: Callable[[H], R], remote: Callable[[H], bool],
             workers: int) -> list[R | DriverError]:
    """``call(h)`` for every host, its result or its DriverError, in ``hosts`` order. At most
    ``workers`` remote calls run at once; any other exception propagates, as a single call's
    would."""

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
        for i, h in enumerate(hosts):
            if i not in futures:
                out[i] = one(h)
        for i, f in futures.items():
            out[i] = f.result()
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    return [out[i] for i in range(len(hosts))]
