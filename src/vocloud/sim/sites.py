"""Fixed sites: the ``physical`` and ``static`` scenarios.

Both are a set of partitions that never change size; they differ only in what a partition is:

* ``physical``: the bare hosts, one partition (jobs may span hosts, SWF's parallel-machine model),
  no virtualization. LPC-EGEE's three SWF "partitions" are the grid gateways (CEs) in front of the
  *same* worker nodes, so they are not split by default.
* ``static``: each VO gets a fixed share of the hosts, each host running one host-sized VM of that
  VO, booted once at the start. Jobs pay the virtualization penalty; idle VMs are counted. This is
  the baseline that elastic pools must beat: same virtualization, no sharing.

How hosts are split among VOs: proportional to each VO's core-seconds in the trace (largest
remainder), every VO with work getting at least one host while there are hosts to give, unless
the user gives the split. A VO left without hosts has its jobs reported as never runnable.

Parallel traces: a VO whose widest job needs more hosts than its share cannot have a partition
of its own (a 128-processor job on a 2-host partition never runs). With the default split such
VOs pool their hosts in one ``shared`` partition (whole-host VMs, jobs spanning them, one EASY
queue), and while the shared partition is still narrower than its widest job, the VO with the
smallest dedicated share joins it too (:func:`static_layout`). A given ``--static-split`` is
taken as it is: wide jobs of a VO whose share is too small are reported never runnable.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from vocloud.errors import InvalidInput
from vocloud.sim.cluster import Cluster
from vocloud.sim.dist import Duration
from vocloud.sim.engine import JOINED, Simulation
from vocloud.sim.workload import Workload


@dataclass(frozen=True, slots=True)
class SiteSpec:
    """The hardware: ``hosts`` identical hosts of ``cores_per_host`` cores and ``mem_per_host`` MiB."""

    hosts: int
    cores_per_host: int
    mem_per_host: int

    def __post_init__(self) -> None:
        if self.hosts < 1 or self.cores_per_host < 1 or self.mem_per_host < 1:
            raise InvalidInput("hosts, cores per host and memory per host must all be >= 1")

    @property
    def total_cores(self) -> int:
        return self.hosts * self.cores_per_host


def apportion(weights: Sequence[float], total: int) -> list[int]:
    """Split ``total`` items by ``weights`` (largest remainder; ties to the lower index).

    Every positive weight gets at least one item while items last, so a small VO is not starved
    to zero by rounding. Pure; the result always sums to ``total`` when any weight is positive.
    """
    if total < 0 or any(w < 0 or not math.isfinite(w) for w in weights):
        raise ValueError("weights must be finite and >= 0, total >= 0")
    positive = [i for i, w in enumerate(weights) if w > 0]
    out = [0] * len(weights)
    if not positive or total == 0:
        return out
    # the guaranteed minimum of one, to the heaviest first when there are fewer items than VOs
    for i in sorted(positive, key=lambda i: (-weights[i], i))[:total]:
        out[i] = 1
    rest = total - sum(out)
    wsum = sum(weights[i] for i in positive)
    quotas = {i: weights[i] / wsum * total - out[i] for i in positive}
    for i in positive:
        extra = max(0, math.floor(quotas[i]))
        extra = min(extra, rest)
        out[i] += extra
        rest -= extra
    for i in sorted(positive, key=lambda i: (-(quotas[i] - math.floor(max(quotas[i], 0))), i)):
        if rest == 0:
            break
        out[i] += 1
        rest -= 1
    return out


class PartitionedSite:
    """A site of fixed partitions (see module docstring); ``key[job]`` picks the partition."""

    poll_interval: float | None = None

    def __init__(
        self,
        name: str,
        w: Workload,
        spec: SiteSpec,
        hosts_per_part: Sequence[int],
        part_names: Sequence[str],
        key: Sequence[int],
        *,
        virtual: bool,
        penalty: float,
        boot: Duration,
        rng: random.Random,
    ) -> None:
        self.name = name
        self.total_cores = spec.total_cores
        self.spec = spec
        self.w = w
        self.key = key
        self.virtual = virtual
        self.boot = boot
        self.rng = rng
        factor = 1.0 + penalty if virtual else 1.0
        self.parts = [
            Cluster(f"{name}:{pn}", w.procs, w.estimate, w.runtime, factor=factor, span_nodes=True)
            for pn in part_names
        ]
        self.part_names = list(part_names)
        self.hosts_per_part = list(hosts_per_part)
        #: static: hosts per VO from the split, and the VOs that share one partition
        self.vo_hosts: dict[str, int] = {}
        self.shared_vos: list[str] = []
        self.boots = 0
        self.boot_core_seconds = 0.0
        self._booting = 0
        self._node_part: dict[int, int] = {}

    def start(self, sim: Simulation) -> None:
        """Bring up the nodes: at once for bare hosts, after a boot draw for static VMs."""
        node = 0
        for part, count in enumerate(self.hosts_per_part):
            for _ in range(count):
                self._node_part[node] = part
                if self.virtual:
                    t = self.boot.draw(self.rng)
                    self.boots += 1
                    self.boot_core_seconds += t * self.spec.cores_per_host
                    self._booting += 1
                    sim.push(sim.now + t, JOINED, node)
                else:
                    self.parts[part].add_node(node, self.spec.cores_per_host, self.spec.mem_per_host, sim.now)
                node += 1

    def clusters(self) -> list[Cluster]:
        return self.parts

    def route(self, job: int) -> Cluster | str:
        part = self.key[job]
        cluster = self.parts[part]
        cores = self.hosts_per_part[part] * self.spec.cores_per_host
        procs = self.w.procs[job]
        if cores == 0:
            return f"never runnable: partition {self.part_names[part]} has no hosts"
        if procs > cores:
            return f"never runnable: needs {procs} processors, partition {self.part_names[part]} has {cores}"
        if self.w.memory_mib[job] > self.spec.mem_per_host * self.hosts_per_part[part]:
            return f"never runnable: needs {self.w.memory_mib[job]} MiB, more than the partition's memory"
        return cluster

    def poll(self, now: float, sim: Simulation) -> bool:
        return False

    def handle(self, kind: int, payload: int, now: float, sim: Simulation) -> None:
        if kind != JOINED:
            raise RuntimeError(f"{self.name}: unexpected event kind {kind}")
        part = self._node_part[payload]
        self._booting -= 1
        self.parts[part].add_node(payload, self.spec.cores_per_host, self.spec.mem_per_host, now)
        sim.mark(self.parts[part])

    def pool_sizes(self) -> list[int]:
        """Nodes of each VO's own partition (VOs in the shared partition: 0)."""
        sizes = [0] * len(self.w.vo_names)
        if self.virtual:
            index = {vo: i for i, vo in enumerate(self.w.vo_names)}
            for name, c in zip(self.part_names, self.parts, strict=True):
                if name in index:
                    sizes[index[name]] = len(c.nodes)
        return sizes

    def busy(self) -> bool:
        return self._booting > 0

    def queued_reason(self, job: int) -> str:
        return "the replay ended first"

    def idle_node_seconds(self, now: float) -> float:
        """Idle time of every node so far, including nodes idle right now."""
        total = 0.0
        for c in self.parts:
            total += c.idle_node_seconds
            total += sum(now - n.idle_since for n in c.nodes.values() if n.idle_since is not None)
        return total


def physical_site(w: Workload, spec: SiteSpec, *, split_partitions: bool = False) -> PartitionedSite:
    """All hosts in one bare-metal partition, or (``split_partitions``) one per SWF partition.

    Split, the hosts are divided between the trace's partitions by their core-seconds, as the
    static scenario divides them between VOs; each partition runs its own EASY queue.
    """
    if split_partitions and w.partition_names:
        n = len(w.partition_names)
        hosts = apportion(w.core_seconds_by(w.partition, n), spec.hosts)
        return PartitionedSite(
            "physical", w, spec, hosts, w.partition_names, w.partition,
            virtual=False, penalty=0.0, boot=Duration("fixed", 0.0), rng=random.Random(0),
        )
    return PartitionedSite(
        "physical", w, spec, [spec.hosts], ["all"], [0] * len(w),
        virtual=False, penalty=0.0, boot=Duration("fixed", 0.0), rng=random.Random(0),
    )


def static_split(w: Workload, hosts: int, given: Mapping[str, int] | None = None) -> list[int]:
    """Hosts per VO: ``given`` (validated) or by trace core-seconds (module docstring)."""
    if given:
        unknown = sorted(set(given) - set(w.vo_names))
        if unknown:
            raise InvalidInput(f"static split names VOs not in the trace: {', '.join(unknown)}")
        split = [int(given.get(vo, 0)) for vo in w.vo_names]
        if any(x < 0 for x in split) or sum(split) > hosts:
            raise InvalidInput(f"static split must give >= 0 hosts per VO and at most {hosts} in total")
        return split
    return apportion(w.core_seconds_by_vo(), hosts)


SHARED = "shared"


def static_layout(widest: Sequence[int], split: Sequence[int], cores_per_host: int) -> set[int]:
    """The VOs (indices) that share one partition instead of having their own (module docstring).

    ``widest[v]``: processors of VO ``v``'s widest job; ``split[v]``: its hosts. Pure: a VO whose
    widest job does not fit its own share is shared; then, while the shared hosts are fewer than
    the shared VOs' widest job needs, the VO with the fewest hosts of its own (ties: lower index)
    joins. Ends when the shared partition is wide enough or every VO shares the whole site.
    """
    need = [-(-max(p, 0) // cores_per_host) for p in widest]
    shared = {v for v in range(len(split)) if need[v] > split[v]}
    while shared:
        if sum(split[v] for v in shared) >= max(need[v] for v in shared):
            break
        rest = [v for v in range(len(split)) if v not in shared and split[v] > 0]
        if not rest:
            break
        shared.add(min(rest, key=lambda v: (split[v], v)))
    return shared


def static_site(
    w: Workload, spec: SiteSpec, *, penalty: float, boot: Duration, rng: random.Random,
    given: Mapping[str, int] | None = None,
) -> PartitionedSite:
    """One fixed VM partition per VO, plus a shared one for VOs too wide for their share."""
    split = static_split(w, spec.hosts, given)
    shared: set[int] = set()
    if not given:
        widest = [0] * len(w.vo_names)
        for j in range(len(w)):
            if j not in w.excluded and w.procs[j] > widest[w.vo[j]]:
                widest[w.vo[j]] = w.procs[j]
        shared = static_layout(widest, split, spec.cores_per_host)
    own = [v for v in range(len(w.vo_names)) if v not in shared]
    part_of = {v: i for i, v in enumerate(own)}
    for v in shared:
        part_of[v] = len(own)
    names = [w.vo_names[v] for v in own] + ([SHARED] if shared else [])
    hosts = [split[v] for v in own] + ([sum(split[v] for v in shared)] if shared else [])
    site = PartitionedSite(
        "static", w, spec, hosts, names, [part_of[v] for v in w.vo],
        virtual=True, penalty=penalty, boot=boot, rng=rng,
    )
    site.vo_hosts = dict(zip(w.vo_names, split, strict=True))
    site.shared_vos = sorted(w.vo_names[v] for v in shared)
    return site
