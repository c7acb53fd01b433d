"""How big a pool's next workers are: ``worker_shape`` ``fixed``, ``job`` or ``host`` (pure).

A pool of 1-core workers cannot run a 64-core job, and a site whose VOs send parallel jobs
cannot be served by one fixed worker size. ``PoolPolicy.worker_shape`` says how a pool sizes
the VMs it boots:

* ``fixed``: ``cores_per_vm`` cores and ``memory_mib_per_vm`` MiB, always; a job wider than one
  VM is reported unfit and never booted for (the behaviour before worker shapes existed).
* ``host``: whole-host VMs (the site's largest host, :attr:`SiteCapacity.host_shape`).
* ``job``: as wide as the widest job now pending for the pool, at least ``cores_per_vm``, at most
  a whole host; memory in proportion (a whole host's when the VM takes the whole host). A VO of
  serial jobs keeps ``cores_per_vm``-core workers; a VO with parallel jobs gets wider ones.

With ``job`` and ``host`` a job wider than one VM spans several VMs of its VO, as it spans hosts
on a bare-metal partition (Slurm allocates a multi-node job on the VO's nodes): the planner counts
such a job as whole VMs plus a remainder. The shape is recomputed every cycle from the queue, so a
pool may hold VMs of several sizes; ``PoolVM.cores`` tells the planner each VM's own size.

Both the daemon's controller and the simulator reach this through :func:`vocloud.elastic.planner.plan`,
which applies :func:`effective_policy` to each pool before sizing it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from vocloud.batch.base import PendingJob
from vocloud.elastic.policy import PoolPolicy

_CACHE: dict[tuple[PoolPolicy, int, int], PoolPolicy] = {}


def spans(policy: PoolPolicy) -> bool:
    """Whether a job wider than one of this pool's VMs may span several of them."""
    return policy.worker_shape != "fixed"


def shape_for(policy: PoolPolicy, jobs: Sequence[PendingJob], host_shape: tuple[int, int]) -> tuple[int, int]:
    """(cores, MiB) of the VMs ``policy``'s pool boots now (module docstring)."""
    return shape_of(policy, max((j.cores for j in jobs), default=0), host_shape)


def shape_of(policy: PoolPolicy, widest: int, host_shape: tuple[int, int]) -> tuple[int, int]:
    """:func:`shape_for` from the widest pending job's cores (the planner knows it already)."""
    host_cores, host_mem = host_shape
    if policy.worker_shape == "fixed" or host_cores <= 0 or host_mem <= 0:
        return policy.cores_per_vm, policy.memory_mib_per_vm
    if policy.worker_shape == "host":
        return host_cores, host_mem
    cores = min(max(policy.cores_per_vm, widest), host_cores)
    if cores >= host_cores:
        return host_cores, host_mem
    per_core = policy.memory_mib_per_vm / policy.cores_per_vm
    return cores, max(min(int(per_core * cores), host_mem), 1)


def effective_policy(policy: PoolPolicy, jobs: Sequence[PendingJob],
                     host_shape: tuple[int, int]) -> PoolPolicy:
    """``policy`` with ``cores_per_vm``/``memory_mib_per_vm`` set to the shape booted now."""
    return effective_policy_for(policy, max((j.cores for j in jobs), default=0), host_shape)


def effective_policy_for(policy: PoolPolicy, widest: int, host_shape: tuple[int, int]) -> PoolPolicy:
    """:func:`effective_policy` from the widest pending job's cores."""
    cores, mem = shape_of(policy, widest, host_shape)
    if cores == policy.cores_per_vm and mem == policy.memory_mib_per_vm:
        return policy
    key = (policy, cores, mem)
    hit = _CACHE.get(key)
    if hit is None:
        if len(_CACHE) > 4096:  # a bounded memo: the simulator plans ~10^5 times
            _CACHE.clear()
        hit = _CACHE[key] = replace(policy, cores_per_vm=cores, memory_mib_per_vm=mem)
    return hit
