"""``vocloud simulate --validate``: the simulator's prediction beside the real system's run.

A site trusts a policy tried in the simulator only if the simulator, given the same jobs, the
same site and the same policy, predicts what the real daemon and Slurm then do. This module holds
the simulator's half and the comparison (pure apart from running the simulator); the real half
is :mod:`vocloud.demo.valreal` (real daemon, real Slurm, sim VMs whose slurmd registers as a
node), run in a process of its own.

* :func:`slice_jobs`: ``n`` jobs of the trace (from ``start``, else the stretch whose offered
  load is closest to half the site),
  compressed in time by ``compress`` (submit times and run times divided by it), run times capped
  (a 48-hour job would make a run last as long), every job one core (the validation site runs
  1-core workers). Both sides get these jobs; all durations are then real seconds.
* :func:`simulate`: the elastic scenario (the production planner, :mod:`vocloud.sim.elastic`) on
  the jobs at the submit times the real run *actually* achieved (so ``sbatch``'s own latency is
  not counted as a model error), with the real run's site, poll interval, boot and shutdown
  times, idle timeout and boot rate, no virtualization penalty (a ``sleep`` runs as long in
  either). ``extra_boot_s`` and ``extra_run_s`` add measured latencies to the boot time and to
  every job's hold on its worker: the "calibrated" run.
* :func:`compare`: per-job waits, VM boots, peak workers and idle VM time side by side, the
  difference in %, the verdict against the target (mean wait and VM boots within
  :data:`TARGET`), and the differences measured on the real run with their causes: the daemon's
  poll phase, VM creation latency and boot jitter, slurmd registration, Slurm's own scheduling
  cycle, job launch overhead.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from vocloud.errors import InvalidInput
from vocloud.sim.dist import Duration
from vocloud.sim.elastic import ElasticKnobs
from vocloud.sim.run import SimConfig, run_scenario
from vocloud.sim.sites import SiteSpec
from vocloud.sim.workload import Workload

#: the issue's target: mean wait and VM boots within 10 % of the real system's
TARGET = 0.10
#: metrics that carry a verdict against :data:`TARGET`
TARGETED = ("wait_mean_s", "vm_boots")
#: at most this many real seconds per run, so a bad slice fails before it hogs the machine
MAX_REAL_SECONDS = 3600.0
#: the default slice's arrivals take at most this many real seconds (see :func:`slice_jobs`)
MAX_ARRIVAL_S = 240.0


@dataclass(frozen=True, slots=True)
class ValSite:
    """The site and pool policy both sides share, in real (compressed) seconds."""

    hosts: int = 2
    cores_per_host: int = 4
    host_mem_mib: int = 16384
    vm_mem_mib: int = 256
    poll_s: float = 1.0
    boot_s: float = 1.0
    shutdown_s: float = 0.2
    idle_timeout_s: float = 5.0
    scale_down_delay_s: float = 0.0
    boot_timeout_s: float = 60.0
    max_boots_per_minute: int = 600
    max_vms: int = 0  # 0: the whole site

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(slots=True)
class ValSlice:
    """The jobs both sides run: ``(vo, submit s, runtime s)`` in real seconds from 0."""

    jobs: list[tuple[str, float, float]]
    first_index: int
    compress: float
    capped: int = 0
    wide: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def span_s(self) -> float:
        return max((s + r for _, s, r in self.jobs), default=0.0)

    @property
    def work_s(self) -> float:
        """Core-seconds of the slice (real seconds)."""
        return sum(r for _, _, r in self.jobs)


def slice_jobs(w: Workload, n: int, compress: float, max_runtime_s: float,
               start: int | None = None, busy_cores: float = 4.0) -> ValSlice:
    """``n`` runnable jobs of ``w`` (module docstring).

    ``start=None`` picks the stretch whose offered load (capped core-seconds over its span) is
    closest to ``busy_cores`` among those whose arrivals take at most :data:`MAX_ARRIVAL_S` real
    seconds: pools then grow, queue and shrink, and the run ends in minutes.
    """
    if n < 1:
        raise InvalidInput(f"--jobs must be >= 1, got {n}")
    if not (math.isfinite(compress) and compress >= 1):
        raise InvalidInput(f"--compress must be >= 1, got {compress}")
    if not (math.isfinite(max_runtime_s) and max_runtime_s > 0):
        raise InvalidInput(f"the run-time cap must be > 0 s, got {max_runtime_s}")
    idx = [i for i in range(len(w)) if i not in w.excluded]
    if len(idx) < n:
        raise InvalidInput(f"the trace has {len(idx)} runnable jobs, fewer than --jobs {n}")
    sub = np.asarray([w.submit[i] for i in idx], dtype=np.float64)
    if start is None:
        capped_run = np.minimum(np.asarray([w.runtime[i] for i in idx], dtype=np.float64),
                                max_runtime_s)
        csum = np.concatenate(([0.0], np.cumsum(capped_run)))
        m = len(sub) - n + 1
        spans = sub[n - 1:] - sub[:m]
        work = csum[n:] - csum[:m]
        load = work / np.maximum(spans + max_runtime_s, 1.0)
        score = np.abs(np.log(np.maximum(load, 1e-9) / busy_cores))
        score[spans / compress > MAX_ARRIVAL_S] = np.inf
        first = int(np.argmin(score)) if np.isfinite(score).any() else int(np.argmin(spans))
    else:
        if not 0 <= start <= len(idx) - n:
            raise InvalidInput(f"--val-start must be in [0, {len(idx) - n}], got {start}")
        first = start
    chosen = idx[first:first + n]
    t0 = w.submit[chosen[0]]
    out: list[tuple[str, float, float]] = []
    capped = wide = 0
    for i in chosen:
        run = w.runtime[i]
        if run > max_runtime_s:
            capped += 1
            run = max_runtime_s
        wide += w.procs[i] > 1
        out.append((w.vo_names[w.vo[i]], round((w.submit[i] - t0) / compress, 3),
                    round(run / compress, 3)))
    sl = ValSlice(out, first, compress, capped, wide)
    if capped:
        sl.notes.append(f"{capped} job(s) longer than {max_runtime_s:,.0f} s were cut to it")
    if wide:
        sl.notes.append(f"{wide} job(s) wider than one core run on one core (1-core workers)")
    if sl.span_s > MAX_REAL_SECONDS:
        raise InvalidInput(f"the slice would run {sl.span_s:,.0f} s of real time (> "
                           f"{MAX_REAL_SECONDS:,.0f}); raise --compress or lower the run-time cap")
    return sl


def workload_of(jobs: Sequence[tuple[str, float, float]]) -> Workload:
    """The simulator's workload for ``jobs`` (one core each, exact estimates)."""
    names = sorted({vo for vo, _, _ in jobs})
    code = {vo: i for i, vo in enumerate(names)}
    order = sorted(range(len(jobs)), key=lambda i: jobs[i][1])
    return Workload(
        submit=[jobs[i][1] for i in order], runtime=[jobs[i][2] for i in order],
        procs=[1] * len(jobs), estimate=[jobs[i][2] for i in order], memory_mib=[0] * len(jobs),
        vo=[code[jobs[i][0]] for i in order], vo_names=names, job_ids=list(order),
        partition=[0] * len(jobs), partition_names=["val"], recorded_wait=[-1.0] * len(jobs))


def simulate(jobs: Sequence[tuple[str, float, float]], site: ValSite, seed: int = 1,
             extra_boot_s: float = 0.0, extra_run_s: float = 0.0) -> dict[str, Any]:
    """The elastic scenario on ``jobs`` with ``site``'s policy; per-job waits in ``jobs`` order.

    ``extra_boot_s`` / ``extra_run_s``: measured latencies added to every boot / every job's
    occupancy of its worker (the calibrated run)."""
    w = workload_of([(vo, s, r + extra_run_s) for vo, s, r in jobs])
    knobs = ElasticKnobs(
        cores_per_vm=1, memory_mib_per_vm=site.vm_mem_mib, max_vms=site.max_vms,
        idle_timeout_s=site.idle_timeout_s, boot_timeout_s=site.boot_timeout_s,
        max_boots_per_minute=site.max_boots_per_minute, scale_down_delay_s=site.scale_down_delay_s,
        worker_shape="fixed")
    config = SimConfig(
        spec=SiteSpec(site.hosts, site.cores_per_host, site.host_mem_mib), scenarios=("elastic",),
        seed=seed, poll_interval=site.poll_s, penalty=0.0,
        boot=Duration("fixed", site.boot_s + extra_boot_s), shutdown=Duration("fixed", site.shutdown_s),
        knobs=knobs, sample_interval=max(site.poll_s / 4, 0.05))
    r = run_scenario("elastic", w, config)
    start = list(r.state.start)
    end = list(r.state.end)
    waits = [0.0] * len(jobs)
    ends = [0.0] * len(jobs)
    for k, i in enumerate(w.job_ids):  # w is in submit order; job_ids hold the input positions
        waits[i] = start[k] - w.submit[k] if start[k] >= 0 else math.nan
        ends[i] = end[k]
    f = r.figures
    return {"waits": waits, "ends": ends, "vm_boots": int(f["vm_boots"]),
            "peak_workers": int(f["peak_vms"]), "idle_vm_s": float(f["vm_hours_idle"]) * 3600.0,
            "never_ran": int(f["jobs_never_ran"]), "extra_boot_s": extra_boot_s,
            "extra_run_s": extra_run_s}


# ---------------------------------------------------------------- the real run's own figures
def real_waits(real: Mapping[str, Any]) -> list[float]:
    return [float(j["start_s"]) - float(j["submit_s"]) for j in real["jobs"]]


def real_idle_s(real: Mapping[str, Any]) -> float:
    """Idle joined-node seconds up to the last job's end (the simulator stops there too)."""
    last_end = max(float(j["end_s"]) for j in real["jobs"])
    total, prev = 0.0, None
    for t, _alive, _joined, idle in real["samples"]:
        if prev is not None:
            t_prev, idle_prev = prev
            lo, hi = t_prev, min(t, last_end)
            if hi > lo:
                total += idle_prev * (hi - lo)
        prev = (t, idle)
    return total


def _stats(values: Sequence[float]) -> dict[str, float]:
    a = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if not a.size:
        return {"n": 0, "mean": 0.0, "median": 0.0, "min": 0.0, "max": 0.0, "p95": 0.0}
    return {"n": int(a.size), "mean": float(a.mean()), "median": float(np.median(a)),
            "min": float(a.min()), "max": float(a.max()), "p95": float(np.percentile(a, 95))}


def latencies(real: Mapping[str, Any], site: ValSite) -> dict[str, dict[str, float]]:
    """What the real run spent where the model spends nothing or a fixed time (module doc).

    * ``vm_create``: the pool's VM first listed until RUNNING, minus the configured boot time
      (the scheduler, lifecycle and sim-driver loops; the simulator places and boots at once);
    * ``registration``: VM RUNNING until its slurmd is a node in ``sinfo`` (the simulator: 0);
    * ``dispatch``: a job's start after the later of its submit and the last event of its VO
      that could have freed a worker (a job end or a node joining): Slurm's scheduling cycle;
    * ``launch``: a job's run minus its ``sleep`` (slurmstepd, the script, the stamps);
    * ``submit_lag``: ``sbatch`` returned after the planned submit time (fed to the simulator as
      the submit time, so not a model error).
    """
    workers = real["workers"].values()
    create = [w["running_s"] - w["seen_s"] - site.boot_s for w in workers
              if w.get("running_s") is not None and w.get("seen_s") is not None]
    reg = [w["joined_s"] - w["running_s"] for w in workers
           if w.get("joined_s") is not None and w.get("running_s") is not None]
    jobs = real["jobs"]
    events: dict[str, list[float]] = {}
    for j in jobs:
        events.setdefault(j["vo"], []).append(float(j["end_s"]))
    for name, w in real["workers"].items():
        if w.get("joined_s") is not None:
            events.setdefault(name.split("-wn")[0], []).append(float(w["joined_s"]))
    dispatch = []
    for j in jobs:
        start = float(j["start_s"])
        before = [t for t in events.get(j["vo"], ()) if t <= start]
        dispatch.append(start - max([float(j["submit_s"]), *before]))
    launch = [float(j["end_s"]) - float(j["start_s"]) - float(j["runtime_s"]) for j in jobs]
    lag = [float(j["submit_s"]) - float(j["planned_s"]) for j in jobs]
    turnover = [w["joined_s"] - w["seen_s"] for w in workers
                if w.get("joined_s") is not None and w.get("seen_s") is not None]
    return {"vm_create": _stats(create), "registration": _stats(reg), "dispatch": _stats(dispatch),
            "launch": _stats(launch), "submit_lag": _stats(lag), "listed_to_joined": _stats(turnover),
            "pending_on_idle": {"job_s": pending_on_idle_s(real)}}


def pending_on_idle_s(real: Mapping[str, Any], step: float = 0.1) -> float:
    """Job-seconds in which a job waited while a joined worker of its own VO ran nothing: time
    the planner had already paid for and Slurm had not yet used (its dispatch)."""
    jobs = real["jobs"]
    if not jobs:
        return 0.0
    grid = np.arange(0.0, max(float(j["end_s"]) for j in jobs), step)
    total = 0.0
    for vo in sorted({j["vo"] for j in jobs}):
        js = [j for j in jobs if j["vo"] == vo]
        sub = np.sort([float(j["submit_s"]) for j in js])
        start = np.sort([float(j["start_s"]) for j in js])
        end = np.sort([float(j["end_s"]) for j in js])
        ws = [w for n, w in real["workers"].items() if n.split("-wn")[0] == vo
              and w.get("joined_s") is not None]
        joined = np.sort([float(w["joined_s"]) for w in ws])
        left = np.sort([float(w["left_s"]) if w.get("left_s") is not None else math.inf for w in ws])

        def count(a: npt.NDArray[np.float64]) -> npt.NDArray[np.int64]:
            return np.searchsorted(a, grid, side="right").astype(np.int64)

        pend = count(sub) - count(start)
        idle = (count(joined) - count(left)) - (count(start) - count(end))
        total += float(np.minimum(pend, np.maximum(idle, 0)).sum()) * step
    return total


def _pct(real: float, sim: float) -> float | None:
    return None if real == 0 else (sim - real) / real


def compare(real: Mapping[str, Any], sim: Mapping[str, Any], site: ValSite, compress: float,
            calibrated: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Rows (real, sim, difference, verdict), per-job wait differences and the causes."""
    rw = np.asarray(real_waits(real), dtype=np.float64)
    sw = np.asarray(sim["waits"], dtype=np.float64)
    ok = np.isfinite(sw)
    figures = {
        "wait_mean_s": (float(rw.mean()), float(np.nanmean(sw))),
        "wait_median_s": (float(np.median(rw)), float(np.nanmedian(sw))),
        "wait_p95_s": (float(np.percentile(rw, 95)), float(np.nanpercentile(sw, 95))),
        "vm_boots": (float(real["vm_boots"]), float(sim["vm_boots"])),
        "peak_workers": (float(real["peak_workers"]), float(sim["peak_workers"])),
        "idle_vm_hours": (real_idle_s(real) / 3600.0, float(sim["idle_vm_s"]) / 3600.0),
    }
    rows = []
    for key, (r, s) in figures.items():
        diff = _pct(r, s)
        row: dict[str, Any] = {"metric": key, "real": r, "sim": s, "diff": diff}
        if key in TARGETED:
            row["verdict"] = "ok" if diff is not None and abs(diff) <= TARGET else "MISSED"
        if calibrated is not None:
            c = {"wait_mean_s": float(np.nanmean(calibrated["waits"])),
                 "wait_median_s": float(np.nanmedian(calibrated["waits"])),
                 "wait_p95_s": float(np.nanpercentile(calibrated["waits"], 95)),
                 "vm_boots": float(calibrated["vm_boots"]),
                 "peak_workers": float(calibrated["peak_workers"]),
                 "idle_vm_hours": float(calibrated["idle_vm_s"]) / 3600.0}[key]
            row["calibrated"] = c
            row["calibrated_diff"] = _pct(r, c)
        rows.append(row)
    d = (rw - sw)[ok]
    lat = latencies(real, site)
    per_job = {
        "jobs": int(ok.sum()), "sim_never_ran": int((~ok).sum()),
        "diff_mean_s": float(d.mean()) if d.size else 0.0,
        "diff_median_s": float(np.median(d)) if d.size else 0.0,
        "diff_p05_s": float(np.percentile(d, 5)) if d.size else 0.0,
        "diff_p95_s": float(np.percentile(d, 95)) if d.size else 0.0,
        "within_poll": float((np.abs(d) <= site.poll_s).mean()) if d.size else 0.0,
        "within_poll_boot": float((np.abs(d) <= site.poll_s + site.boot_s).mean()) if d.size else 0.0,
    }
    return {"rows": rows, "per_job": per_job, "latencies": lat, "compress": compress,
            "site": site.to_dict(), "jobs": len(rw),
            "verdict": all(r.get("verdict", "ok") == "ok" for r in rows),
            "causes": causes(lat, per_job, site, real, sim, compress)}


def causes(lat: Mapping[str, Mapping[str, float]], per_job: Mapping[str, float], site: ValSite,
           real: Mapping[str, Any], sim: Mapping[str, Any], compress: float) -> list[str]:
    """Every difference between the two runs that the real run measured, with its cause."""
    c, r, di, la = lat["vm_create"], lat["registration"], lat["dispatch"], lat["launch"]
    out = [
        f"Poll phase: the daemon's pool loop and the simulator's poll run every {site.poll_s:g} s "
        f"but not in step, so one boot decision may come up to {site.poll_s:g} s earlier or later "
        f"on either side; per job, real minus simulated wait: median {per_job['diff_median_s']:+.2f} s, "
        f"5-95 % {per_job['diff_p05_s']:+.2f} to {per_job['diff_p95_s']:+.2f} s; "
        f"{per_job['within_poll']:.0%} of jobs within one poll interval, "
        f"{per_job['within_poll_boot']:.0%} within a poll plus a boot.",
        f"VM creation and boot jitter: a pool VM took {c['mean']:+.2f} s on average beyond the "
        f"configured {site.boot_s:g} s boot between being listed and RUNNING (min {c['min']:+.2f}, "
        f"max {c['max']:+.2f}; the daemon's scheduler and lifecycle loops, the sim driver's clock, "
        "and waits for room while other workers shut down); the simulator places a requested VM "
        "and boots it in exactly the boot time.",
        f"slurmd registration: RUNNING until the node was in sinfo took {r['mean']:.2f} s on "
        f"average (max {r['max']:.2f} s; slurmd start-up, registration, the 0.2 s sampling); the "
        "simulator's VM joins its partition the instant it has booted.",
        f"Slurm's own scheduling cycle and job launch: a job's script started {di['mean']:.2f} s on "
        f"average (median {di['median']:.2f}, p95 {di['p95']:.2f}) after the event that let it "
        "start (its submit, a node joining, a job of its VO ending); Slurm holds the worker from "
        "its allocation, so every job occupies it that much longer; the simulator's EASY queue "
        "starts the job in the same instant. These are real seconds, not compressed: at x"
        f"{compress:g} their median is {di['median'] * compress:,.0f} trace seconds per job.",
        f"Dispatch measured another way: {lat['pending_on_idle']['job_s']:,.1f} job-seconds in "
        "all (a job pending while a joined worker of its VO ran nothing).",
        f"Worker turnover: a real worker took {lat['listed_to_joined']['mean']:.2f} s on average "
        f"from being listed to being a node (the simulator: {site.boot_s:g} s); with "
        f"{real['vm_boots']} real boots against {sim['vm_boots']} simulated, the real pools spent "
        f"{lat['listed_to_joined']['mean'] * real['vm_boots']:,.0f} worker-seconds becoming "
        f"usable against {site.boot_s * sim['vm_boots']:,.0f}; on a full site this capacity is "
        "what the queue waits for, and each wait then delays the jobs behind it.",
        f"Job launch overhead: each job held its worker {la['mean']:.2f} s longer than its run "
        "time (slurmstepd, the job script), which the simulator does not add.",
        f"Submission: sbatch returned {lat['submit_lag']['mean']:.3f} s (max "
        f"{lat['submit_lag']['max']:.3f} s) after the planned submit time; the simulator replays "
        "the achieved submit times, so this is not counted as a model difference.",
    ]
    if sim.get("never_ran"):
        out.append(f"{sim['never_ran']} job(s) never ran in the simulator.")
    if real.get("errors"):
        out.append(f"The real run logged {len(real['errors'])} harness error(s): {real['errors'][:3]}")
    return out


def _fmt(key: str, v: float | None) -> str:
    if v is None:
        return "-"
    if key == "vm_boots" or key == "peak_workers":
        return f"{v:,.0f}"
    if key == "idle_vm_hours":
        return f"{v * 3600:,.1f} s"
    return f"{v:,.2f} s"


def table(doc: Mapping[str, Any]) -> str:
    """The comparison as a Markdown table (the CLI and summary print it as is)."""
    cal = any("calibrated" in r for r in doc["rows"])
    head = "| metric | real | simulator | diff | target | verdict |"
    sep = "|---|---:|---:|---:|---|---|"
    if cal:
        head += " sim + measured latencies | diff |"
        sep += "---:|---:|"
    lines = [head, sep]
    for r in doc["rows"]:
        diff = "-" if r["diff"] is None else f"{r['diff']:+.1%}"
        target = f"within {TARGET:.0%}" if r["metric"] in TARGETED else "reported"
        line = (f"| {r['metric']} | {_fmt(r['metric'], r['real'])} | {_fmt(r['metric'], r['sim'])} "
                f"| {diff} | {target} | {r.get('verdict', '')} |")
        if cal:
            cd = "-" if r.get("calibrated_diff") is None else f"{r['calibrated_diff']:+.1%}"
            line += f" {_fmt(r['metric'], r.get('calibrated'))} | {cd} |"
        lines.append(line)
    return "\n".join(lines)


def report_text(doc: Mapping[str, Any]) -> str:
    """The table, the verdict and every difference with its cause (Markdown)."""
    x = doc["compress"]
    s = doc["site"]
    lines = [
        f"Validation: {doc['jobs']} jobs time-compressed x{x:g} (1 real s = {x:g} trace s), "
        f"{s['hosts']} sim hosts x {s['cores_per_host']} cores, 1-core workers, poll "
        f"{s['poll_s']:g} s, boot {s['boot_s']:g} s, shutdown {s['shutdown_s']:g} s, idle timeout "
        f"{s['idle_timeout_s']:g} s (real seconds).",
        "", table(doc), "",
        ("Verdict: mean wait and VM boots within the target." if doc["verdict"] else
         "Verdict: the target is MISSED; the differences below say why."),
        "", "Differences and their causes:", "",
        *[f"- {c}" for c in doc["causes"]],
    ]
    for note in doc.get("notes", ()):
        lines.append(f"- Slice: {note}")
    return "\n".join(lines) + "\n"
