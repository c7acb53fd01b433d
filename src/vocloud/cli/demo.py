"""``vocloud demo``: the main job on embedded defaults (see vocloud.demo)."""

from __future__ import annotations

import typer

from vocloud.demo import run


def demo(
    vms: int = typer.Option(0, "--vms", min=0, max=10_000,
                            help="VMs to create (default: 4 per core + 2, more than fit)"),
    boot_delay: float = typer.Option(2.0, "--boot-delay", min=0.0, max=600.0,
                                     help="seconds a simulated guest takes to boot"),
    keep: bool = typer.Option(False, "--keep", help="leave the daemon running at the end"),
    sim: bool = typer.Option(False, "--sim", help="simulate the guests instead of booting qemu"),
) -> None:
    """Run the main job: a daemon on SQLite, this machine as host, a burst of VMs, a summary."""
    raise typer.Exit(run(vms=vms, boot_delay=boot_delay, keep=keep, sim=sim))
