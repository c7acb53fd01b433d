"""``vocloud simulate TRACE --compare-policies all|NAME,...``: vocloud's planner beside its peers.

Prints one table for the trace (or, with ``--json``, the figures as JSON) and writes the Pareto
picture, mean wait against idle VM-hours with one point per policy, to ``--report DIR``
(``DIR/policies.png``) or, without it, to ``policies-<trace>.png`` in the current directory.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer

from vocloud.sim.run import LoadedTrace, SimConfig


def run_compare(o: dict[str, Any], loaded: LoadedTrace, config: SimConfig) -> None:
    from vocloud.sim import compare
    from vocloud.sim.report import _clean

    names = compare.parse_policies(o["compare_policies"])
    w = loaded.workload
    trace = Path(o["trace"]).name
    results = compare.compare(w, config, names, workers=o["workers"])
    stem = trace.split(".")[0]
    plot = (Path(o["report"]) / "policies.png") if o["report"] is not None else Path(f"policies-{stem}.png")
    title = f"{trace}: {len(w):,} jobs, {config.spec.hosts} hosts x {config.spec.cores_per_host} cores"
    compare.pareto_plot(results, plot, title)
    if o["json_out"]:
        doc = {"trace": trace, "jobs": len(w), "config": config.to_dict(), "policies": compare.rows(results),
               "verdicts": compare.verdicts(results), "plot": str(plot)}
        sys.stdout.write(json.dumps(_clean(doc), sort_keys=True, indent=2) + "\n")
        return
    typer.echo(f"{title}\n")
    typer.echo(compare.table(results))
    typer.echo("")
    for line in compare.verdicts(results):
        typer.echo(line)
    for r in results:
        if r.figures.get("incomplete"):
            typer.echo(f"\nWARNING {r.name}: {r.figures['runnable_never_ran']:,} runnable job(s) never ran "
                       f"({r.figures.get('incomplete_reasons', {})}); its waits cover only the jobs that ran",
                       err=True)
    typer.echo(f"\nplot written to {plot}")
