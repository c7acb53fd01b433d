"""The model's known differences from the machine that recorded the trace, for ``summary.md``.

A table of waits is only worth what the model behind it is worth. These lines say, in the run's
own figures, what the replay does not reproduce, so a reader weighs the rows before comparing
them. Pure: built from the metrics document and the results.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from vocloud.sim.metrics import ScenarioResult


def known_differences(doc: dict[str, Any], results: Sequence[ScenarioResult]) -> list[str]:
    """Markdown bullet lines (module docstring)."""
    config, trace = doc["config"], doc["trace"]
    by_name = {r.name: r.figures for r in results}
    out = [
        "- Scheduling: one FCFS queue with EASY backfilling per partition, using the trace's "
        "requested times as estimates and its run times exactly; the machine's queue classes, "
        "priorities, fair-share, reservations, down time and user behaviour are not modelled.",
    ]
    rec = trace.get("recorded")
    phys = by_name.get("physical")
    if rec and phys and rec.get("wait_mean_s"):
        ratio = phys["wait_mean_s"] / rec["wait_mean_s"] if rec["wait_mean_s"] else 0.0
        out.append(
            f"- physical vs the machine: mean wait {phys['wait_mean_s']:,.0f} s against "
            f"{rec['wait_mean_s']:,.0f} s recorded ({ratio:.0%}), median "
            f"{phys['wait_median_s']:,.0f} s against {rec.get('wait_median_s', 0):,.0f} s; "
            "differences between scenarios smaller than this gap are within the model's error.")
    static = by_name.get("static")
    if static and static.get("static_shared_vos"):
        out.append(
            f"- static: {static['static_shared_vos']} VOs had a widest job larger than their "
            f"share and pool {static['static_shared_hosts']} hosts in one shared partition "
            "(a real static site would refuse those jobs or give such VOs bigger shares).")
    el = config.get("elastic", {})
    if "elastic" in by_name:
        out.append(
            f"- elastic: worker shape `{el.get('worker_shape', 'fixed')}`, boot "
            f"{config.get('boot_time')}, a virtualization penalty of {config.get('penalty')} on "
            f"every job, planner every {config.get('poll_interval_s')} s; VMs join the VO's "
            "partition at once after booting (no batch-system registration delay).")
        if el.get("worker_shape", "fixed") != "fixed":
            out.append(
                "- elastic: a job spanning VMs is booted for only when all its VMs fit the site "
                "(the oldest holds the site's reservation, as EASY's head job; while it waits, "
                "only jobs ending before its expected start); other VOs cannot backfill onto VMs "
                "collected for it, which bare-metal EASY would allow; memory is not packed for "
                "pools whose jobs span VMs.")
    return out
