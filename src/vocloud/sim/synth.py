"""Small synthetic SWF traces, for tests, demos and bug reports.

A real trace is 20 MB and takes seconds to replay; most properties (conservation, backfilling,
no job killed on shrink, determinism) show on a few hundred jobs whose shape is chosen to stress
them: bursts that outgrow the site, several VOs, runtimes longer than their estimates.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence

HEADER = """; Version: 2.2
; Computer: synthetic
; UnixStartTime: 1100000000
; MaxJobs: {n}
; MaxRecords: {n}
; MaxNodes: {nodes}
; MaxProcs: {procs}
; Queue: 1 short
; Queue: 2 long
; Partition: 1 main
"""


def swf_line(
    job: int, submit: float, runtime: float, procs: int = 1, req_time: float = -1, *,
    group: int = 1, user: int = 1, queue: int = 1, partition: int = 1, req_mem_kib: float = -1,
    status: int = 1, wait: float = -1,
) -> str:
    """One 18-field SWF job line (``wait``: the wait the trace recorded, -1 unknown)."""
    alloc = procs if runtime >= 0 else 0
    fields: Sequence[float] = (
        job, submit, wait, runtime, alloc, -1, -1, procs, req_time, req_mem_kib, status,
        user, group, -1, queue, partition, -1, -1,
    )
    return " ".join(f"{v:g}" for v in fields)


def swf_text(lines: Iterable[str], procs: int = 8, nodes: int = 4) -> str:
    """A complete SWF file: header plus ``lines``."""
    body = list(lines)
    return HEADER.format(n=len(body), procs=procs, nodes=nodes) + "\n".join(body) + "\n"


def bursty(seed: int, n: int = 300, vos: int = 3, max_procs: int = 1, span: float = 86400.0) -> str:
    """``n`` jobs in bursts over ``span`` seconds, groups 1..vos, some overrunning their estimate."""
    rng = random.Random(seed)
    lines = []
    t = 0.0
    job = 1
    while job <= n:
        t += rng.expovariate(1.0 / (span / max(n / 10, 1)))
        for _ in range(min(rng.randint(1, 20), n - job + 1)):
            runtime = float(rng.randint(0, 3600))
            est = runtime * rng.choice((1.0, 1.5, 3.0)) if rng.random() < 0.9 else runtime / 2
            lines.append(swf_line(job, round(t), runtime, rng.randint(1, max_procs), round(est),
                                  group=rng.randint(1, vos)))
            job += 1
    return swf_text(lines)
