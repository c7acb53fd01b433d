"""``vocloud demo``: the README's first command, a VO cluster on this machine (see vocloud.demo).

``--vms N`` runs the older plain-VM demo instead (vocloud.demo.vms): the cloud manager alone.
"""

from __future__ import annotations

import typer

from vocloud.demo import Options, run


def demo(
    sim: bool = typer.Option(False, "--sim", help="simulate the workers and the batch system "
                             "(the default when not root or qemu/Slurm are missing)"),
    json_out: bool = typer.Option(False, "--json", help="print the summary as JSON on stdout "
                                  "(the progress goes to stderr)"),
    atlas_jobs: int = typer.Option(6, "--atlas-jobs", min=0, max=1000, help="jobs for VO atlas"),
    cms_jobs: int = typer.Option(3, "--cms-jobs", min=0, max=1000, help="jobs for VO cms"),
    job_seconds: float = typer.Option(15.0, "--job-seconds", min=0.0, max=3600.0,
                                      help="how long each job sleeps"),
    boot_delay: float = typer.Option(3.0, "--boot-delay", min=0.0, max=600.0,
                                     help="seconds a simulated worker takes to boot"),
    timeout: float = typer.Option(900.0, "--timeout", min=10.0, max=86_400.0,
                                  help="give up (and clean up) after this many seconds"),
    vms: int = typer.Option(0, "--vms", min=0, max=10_000,
                            help="run the plain-VM demo instead, with this many VMs"),
) -> None:
    """Run the main job: a daemon on SQLite, this machine as qemu host, a local Slurm, two VO
    pools and a burst of jobs; the pools grow and shrink live; a summary at the end."""
    if vms:
        from vocloud.demo.vms import run as run_vms

        raise typer.Exit(run_vms(vms=vms, boot_delay=boot_delay, sim=sim))
    if atlas_jobs + cms_jobs == 0:
        raise typer.BadParameter("give at least one job (--atlas-jobs/--cms-jobs)")
    raise typer.Exit(run(Options(jobs={"atlas": atlas_jobs, "cms": cms_jobs},
                                 job_seconds=job_seconds, sim=sim, boot_delay=boot_delay,
                                 timeout=timeout, json=json_out)))
