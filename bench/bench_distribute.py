"""Distributing one image to 8 hosts: the fan-out tree against pushing from the front-end.

Hosts are network namespaces on one bridge, each with its own sshd (tests/support/dstlab.py);
the front-end is this process on the bridge's address. For each case every host's cache is
emptied first, then the image goes to all hosts:

``push, one at a time``  the image cache's push from the front-end, host after host (what the
                         storage driver does today when hosts lack a base)
``push, all at once``    the same pushes in parallel threads (the front-end's link is shared)
``tree, fanout K``       ``vocloud image distribute``'s fan-out (the front-end sends once)

Figures: bytes the front-end sent, bytes hosts sent each other, wall time. Twice: links as they
are (veths: the limit is this machine's CPU for ssh's cipher and sha256), then every link limited
to ``--mbit`` each way with ``tc qdisc … tbf`` (each host's uplink and downlink, and the
front-end's uplink). This kernel has no ``sch_netem`` (no delay/loss emulation): a token bucket
is a rate limit only, which is what the comparison needs.

Run as root from the repo root: ``python -m bench.bench_distribute [--mib 128] [--mbit 200]``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tests.support.dstlab import DstLab
from tests.support.netns import LabUnavailable

from vocloud.drivers.base import HostRef
from vocloud.drivers.storage.cache import ImageCache
from vocloud.drivers.storage.distribute import Distribution, front_end_sha256
from vocloud.drivers.transport.ssh import SshTransport

MIB = 1 << 20


def clear(lab: DstLab, n: int) -> None:
    for i in range(1, n + 1):
        shutil.rmtree(lab.root / f"ds{i}", ignore_errors=True)


def push_each(refs: list[HostRef], ssh: SshTransport, image: str, sha: str,
              parallel: bool) -> dict[str, Any]:
    cache = ImageCache("/nonexistent", runner_for=lambda h: lambda argv, input=None, timeout=None:
                       ssh.run(h, argv, input=input, timeout=timeout), transports=lambda h: ssh)
    pushing = [dataclasses.replace(r, attrs={**r.attrs, "IMAGE_PATH_SHARED": "NO"}) for r in refs]
    t0 = time.monotonic()
    if parallel:
        with ThreadPoolExecutor(len(pushing)) as pool:
            list(pool.map(lambda h: cache.ensure(h, image, sha, "raw"), pushing))
    else:
        for h in pushing:
            cache.ensure(h, image, sha, "raw")
    return {"front_end_bytes": cache.stats.pushed_bytes, "host_bytes": 0,
            "seconds": round(time.monotonic() - t0, 2), "ok": cache.stats.pushes == len(refs)}


def tree(refs: list[HostRef], ssh: SshTransport, image: str, sha: str, fanout: int) -> dict[str, Any]:
    res = Distribution(image, sha, "raw", refs, lambda h: ssh, "/nonexistent", fanout=fanout).run()
    return {"front_end_bytes": res.front_end_bytes, "host_bytes": res.host_bytes,
            "seconds": res.seconds, "ok": res.ok, "depth": res.depth}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hosts", type=int, default=8)
    ap.add_argument("--mib", type=int, default=128, help="image size")
    ap.add_argument("--mbit", type=float, default=200, help="link limit for the second table")
    ap.add_argument("--fanouts", default="1,2")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    fanouts = [int(x) for x in args.fanouts.split(",")]
    rows: list[dict[str, Any]] = []
    try:
        lab = DstLab()
        lab.start()
    except LabUnavailable as exc:
        print(f"cannot run: {exc}", file=sys.stderr)
        return 2
    ssh = lab.ssh_transport(command_timeout=3600)
    try:
        for _ in range(args.hosts):
            lab.add_host()
        image = lab.root / "repo" / "base.raw"
        image.parent.mkdir()
        with image.open("wb") as fh:
            for _ in range(args.mib):
                fh.write(os.urandom(MIB))
        _, sha = front_end_sha256(str(image))
        refs = [h.ref(None, "qemu", DATASTORE_DIR=str(lab.root / f"ds{h.index}"),
                      AUTHORIZED_KEYS=str(lab.root / "authorized_keys")) for h in lab.hosts]
        for mbit in (0.0, args.mbit):
            lab.limit(mbit)
            cases: list[tuple[str, Any]] = [
                ("push, one at a time", lambda: push_each(refs, ssh, str(image), sha, False)),
                ("push, all at once", lambda: push_each(refs, ssh, str(image), sha, True)),
            ] + [(f"tree, fanout {k}", (lambda k=k: tree(refs, ssh, str(image), sha, k)))
                 for k in fanouts]
            for name, run in cases:
                clear(lab, args.hosts)
                row = {"links": f"{mbit:g} Mbit/s" if mbit else "unlimited", "case": name, **run()}
                rows.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
        lab.limit(0)
    finally:
        ssh.close()
        lab.close()
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"\nimage {args.mib} MiB to {args.hosts} namespace hosts over SSH "
          f"(limits: tc tbf, no netem in this kernel)")
    print(f"{'links':<14} {'case':<22} {'front-end MiB':>14} {'host MiB':>9} {'seconds':>8} "
          f"{'vs push 1-by-1':>15}  ok")
    for links in dict.fromkeys(r["links"] for r in rows):
        group = [r for r in rows if r["links"] == links]
        base = group[0]["seconds"]
        for r in group:
            print(f"{links:<14} {r['case']:<22} {r['front_end_bytes'] / MIB:>14.0f} "
                  f"{r['host_bytes'] / MIB:>9.0f} {r['seconds']:>8.1f} "
                  f"{base / r['seconds']:>14.2f}x  {r['ok']}")
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
