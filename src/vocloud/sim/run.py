"""Run the scenarios of one simulation: the glue between config, trace, sites, loop and metrics.

Every scenario replays the same :class:`Workload` on a fresh site with its own random stream
(``random.Random(f"{seed}:{scenario}")``), so adding or removing a scenario never changes the
others' results, and the same seed always gives the same figures.
"""

from __future__ import annotations

import multiprocessing as mp
import random
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty
from typing import Any

from vocloud.errors import InvalidInput
from vocloud.sim.burst import BurstKnobs, run_burst
from vocloud.sim.condor import read_condor_history
from vocloud.sim.dist import Duration
from vocloud.sim.elastic import ElasticKnobs, ElasticSite
from vocloud.sim.engine import Simulation
from vocloud.sim.jobs import JobTable, ReadReport
from vocloud.sim.metrics import ScenarioResult, compute
from vocloud.sim.sites import SiteSpec, physical_site, static_site
from vocloud.sim.source import open_text
from vocloud.sim.swf import read_swf
from vocloud.sim.vomap import map_vos, parse_rules
from vocloud.sim.workload import Workload, build_workload, scale_table

SCENARIOS = ("physical", "static", "elastic", "burst")
#: what ``vocloud simulate`` runs without --scenario (burst needs a cloud: name it to run it)
DEFAULT_SCENARIOS = ("physical", "static", "elastic")


@dataclass(slots=True)
class LoadedTrace:
    """A trace ready to replay, with what the reader and the scaling did to it."""

    workload: Workload
    report: ReadReport
    header: dict[str, Any]
    max_procs: int | None


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Everything a run depends on; written to metrics.json so a result can be reproduced."""

    spec: SiteSpec
    scenarios: tuple[str, ...] = DEFAULT_SCENARIOS
    seed: int = 1
    poll_interval: float = 60.0
    penalty: float = 0.05
    boot: Duration = field(default_factory=lambda: Duration("fixed", 60.0))
    shutdown: Duration = field(default_factory=lambda: Duration("fixed", 10.0))
    knobs: ElasticKnobs = field(default_factory=ElasticKnobs)
    static_split: Mapping[str, int] = field(default_factory=dict)
    sample_interval: float = 0.0  # 0: the replay span / 1000, at least the poll interval
    split_partitions: bool = False  # physical: one EASY queue per SWF partition
    burst: BurstKnobs = field(default_factory=BurstKnobs)  # the burst scenario's cloud (sim/burst.py)

    def __post_init__(self) -> None:
        bad = [s for s in self.scenarios if s not in SCENARIOS]
        if bad or not self.scenarios:
            raise InvalidInput(
                f"unknown scenario(s) {', '.join(bad) or '(none)'}; use {', '.join(SCENARIOS)}"
            )
        if not 0 <= self.penalty < 10:
            raise InvalidInput(f"penalty must be in [0, 10), got {self.penalty}")
        if self.poll_interval <= 0:
            raise InvalidInput("poll interval must be > 0")

    def to_dict(self) -> dict[str, Any]:
        return {
            "hosts": self.spec.hosts,
            "cores_per_host": self.spec.cores_per_host,
            "mem_per_host_mib": self.spec.mem_per_host,
            "scenarios": list(self.scenarios),
            "seed": self.seed,
            "poll_interval_s": self.poll_interval,
            "penalty": self.penalty,
            "boot_time": str(self.boot),
            "shutdown_time": str(self.shutdown),
            "elastic": {k: getattr(self.knobs, k) for k in self.knobs.__dataclass_fields__},
            "static_split": dict(sorted(self.static_split.items())),
            "split_partitions": self.split_partitions,
        }


def _is_condor(path: Path) -> bool:
    with open_text(path) as fh:
        head = fh.read(4096).lstrip()
    return head.startswith(("[", "{")) or (head[:1].isalpha() and "QDate" in head.split("\n", 1)[0])


def load_trace(
    path: str | Path,
    *,
    vo_map: str = "group",
    strict: bool = False,
    limit: int | None = None,
    scale: float = 1.0,
    scale_mode: str = "compress",
    tolerance: float = 0.0,
) -> LoadedTrace:
    """Read an SWF or HTCondor history file, map VOs and scale it (see ``workload``)."""
    if limit is not None and limit < 1:
        raise InvalidInput(f"limit must be >= 1, got {limit}")
    p = Path(path)
    rules = parse_rules(vo_map)
    header: dict[str, Any]
    if _is_condor(p):
        ct = read_condor_history(p, strict=strict, limit=limit)
        table: JobTable = ct.jobs
        report = ct.report
        header = {"format": "htcondor", "start_time": ct.start_time}
        max_procs = None
    else:
        st = read_swf(p, strict=strict, limit=limit, tolerance=tolerance)
        table, report = st.jobs, st.report
        header = {"format": "swf", **st.header.to_dict()}
        max_procs = st.header.max_procs
    if len(table) == 0:
        raise InvalidInput(f"{p}: no valid job records ({report.skipped_total} malformed lines skipped)")
    table = scale_table(table, scale, scale_mode)
    codes, names = map_vos(table, rules)
    w = build_workload(table, codes, names)
    if scale != 1:
        w.scale_note = f"{scale_mode} x{scale:g}"
    return LoadedTrace(w, report, header, max_procs)


def sample_interval_for(w: Workload, config: SimConfig) -> float:
    """About 1000 samples over the trace, never finer than a minute or the poll interval."""
    if config.sample_interval > 0:
        return config.sample_interval
    span = (w.submit[-1] - w.submit[0]) if len(w) else 0.0
    return max(60.0, config.poll_interval, round(span / 1000.0 / 60.0) * 60.0)


def run_scenario(
    name: str, w: Workload, config: SimConfig, progress: Callable[[float], None] | None = None
) -> ScenarioResult:
    """Replay ``w`` under one scenario and compute its figures."""
    rng = random.Random(f"{config.seed}:{name}")
    interval = sample_interval_for(w, config)
    if name == "physical":
        site = physical_site(w, config.spec, split_partitions=config.split_partitions)
        sim = Simulation(w, site, sample_interval=interval, progress=progress)
        site.start(sim)
        st = sim.run()
        extra = None
        if len(site.parts) > 1:
            extra = {"hosts_per_partition": dict(zip(site.part_names, site.hosts_per_part, strict=True))}
        return compute(name, w, st, total_cores=site.total_cores, factor=1.0, extra=extra)
    if name == "static":
        ssite = static_site(w, config.spec, penalty=config.penalty, boot=config.boot, rng=rng,
                            given=config.static_split)
        sim = Simulation(w, ssite, sample_interval=interval, progress=progress)
        ssite.start(sim)
        st = sim.run()
        shared = {"static_shared_vos": len(ssite.shared_vos),
                  "static_shared_hosts": ssite.hosts_per_part[-1]} if ssite.shared_vos else {}
        return compute(
            name, w, st, total_cores=ssite.total_cores, factor=1.0 + config.penalty, boots=ssite.boots,
            boot_core_seconds=ssite.boot_core_seconds, idle_vm_seconds=ssite.idle_node_seconds(st.t_last),
            extra={"static_hosts_per_vo": ssite.vo_hosts, **shared},
        )
    if name == "burst":
        return run_burst(w, config, rng, interval, progress)
    esite = ElasticSite(
        w, config.spec, knobs=config.knobs, penalty=config.penalty, boot=config.boot,
        shutdown=config.shutdown, rng=rng, poll_interval=config.poll_interval,
    )
    sim = Simulation(w, esite, sample_interval=interval, progress=progress)
    st = sim.run()
    esite.finish(st.t_last)
    if esite.refused_shutdowns:
        raise AssertionError(f"elastic: the plan asked to shut down {esite.refused_shutdowns} busy VM(s)")
    return compute(
        name, w, st, total_cores=esite.total_cores, factor=esite.factor, boots=esite.boots,
        boot_core_seconds=esite.boot_core_seconds, idle_vm_seconds=esite.idle_node_seconds(st.t_last),
        vm_core_seconds=esite.vm_core_seconds,
        extra={
            "polls": esite.polls,
            "planner_calls": esite.plans,
            "planner_calls_by_reason": dict(sorted(esite.plan_reasons.items())),
            "peak_vms": esite.peak_vms,
            "jobs_killed": 0,
            "refused_shutdowns": esite.refused_shutdowns,
        },
    )


def run_all(
    w: Workload,
    config: SimConfig,
    progress: Callable[[str, float], None] | None = None,
    workers: int = 1,
) -> list[ScenarioResult]:
    """Run every configured scenario; results in the fixed order physical, static, elastic.

    Scenarios share nothing but the read-only workload, so ``workers > 1`` runs them in forked
    processes at once: the wall time becomes the slowest scenario's instead of the sum, and the
    results are identical (each scenario has its own random stream). Progress reports from the
    children come back through a queue.
    """
    names = [n for n in SCENARIOS if n in config.scenarios]
    if workers <= 1 or len(names) == 1:
        out = []
        for name in names:
            cb: Callable[[float], None] | None = None
            if progress is not None:
                def cb(t: float, _name: str = name) -> None:
                    progress(_name, t)
            out.append(run_scenario(name, w, config, cb))
        return out
    return _run_parallel(w, config, names, progress, workers)


_SHARED: tuple[Workload, SimConfig, Any] | None = None  # inherited by forked workers


def _child(name: str) -> ScenarioResult:
    assert _SHARED is not None
    w, config, queue = _SHARED

    def report(t: float) -> None:
        queue.put((name, t))

    return run_scenario(name, w, config, report if queue is not None else None)


def _run_parallel(
    w: Workload, config: SimConfig, names: list[str], progress: Callable[[str, float], None] | None,
    workers: int,
) -> list[ScenarioResult]:
    global _SHARED
    ctx = mp.get_context("fork")
    queue = ctx.Queue() if progress is not None else None  # inherited by the forked workers
    _SHARED = (w, config, queue)
    try:
        with ProcessPoolExecutor(max_workers=min(workers, len(names)), mp_context=ctx) as pool:
            futures = {name: pool.submit(_child, name) for name in names}
            while queue is not None and progress is not None and not all(f.done() for f in futures.values()):
                try:
                    name, t = queue.get(timeout=0.2)
                except Empty:
                    continue
                progress(name, t)
            return [futures[name].result() for name in names]
    finally:
        _SHARED = None


def trace_summary(w: Workload) -> dict[str, Any]:
    """Counts that describe the input, for the report."""
    per_vo: dict[str, int] = {}
    for code in w.vo:
        per_vo[w.vo_names[code]] = per_vo.get(w.vo_names[code], 0) + 1
    return {
        "jobs": len(w),
        "excluded_by_trace": len(w.excluded),
        "first_submit": w.submit[0] if len(w) else 0.0,
        "last_submit": w.submit[-1] if len(w) else 0.0,
        "jobs_per_vo": dict(sorted(per_vo.items())),
        "scale": w.scale_note or "none",
    }


def default_spec(max_procs: int | None, hosts: int | None, cores: int | None, mem: int | None,
                 ) -> SiteSpec:
    """The site when the user gives none: MaxProcs from the header as 2-core hosts (LPC: 70 x 2).

    LPC-EGEE's header says ``MaxProcs: 140`` and ``MaxNodes: 70 (dual)``; dual-processor nodes
    are the common case of that era, so 2 cores per host is the default, with 2 GiB per core.
    """
    c = cores or 2
    h = hosts or max(1, -(-(max_procs or 140) // c))
    return SiteSpec(h, c, mem or 2048 * c)

