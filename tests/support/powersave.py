"""Slurm power saving driving vocloud, for the tests: a Slurm cluster whose power-saving programs
are vocloud's wrappers, a site (host, VO, pool, powersave.toml) set up through the real CLI, and
the checks of what the hooks did (tests/integration/test_slurm_powersave*.py)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from tests.support.cli import clean_env
from tests.support.daemon import Daemon
from tests.support.slurm_harness import SlurmCluster

SUSPEND_TIME = 4
RESUME_TIMEOUT = 12
HOOK_CLI = [sys.executable, "-m", "vocloud.cli.slurm_hook"]
POWERSAVE_TOML = '[[node]]\nprefix = "c"\nvo = "lhcb"\n'


class PowerSaveCluster(SlurmCluster):
    """The harness's cluster, its power-saving programs pointing at vocloud's wrappers.

    ``parameters`` are added to ``SlurmctldParameters`` (e.g. ``enable_configless`` for guests
    that fetch their configuration, ``cloud_reg_addrs`` for nodes whose address is learnt when
    their slurmd registers).
    """

    def __init__(self, hooks: Path, resume_timeout: int = RESUME_TIMEOUT,
                 parameters: Sequence[str] = ()) -> None:
        super().__init__()
        self.hooks = hooks
        self.resume_timeout = resume_timeout
        self.parameters = tuple(parameters)

    def _write_files(self) -> None:
        super()._write_files()
        programs = {"ResumeProgram": "resume.sh", "SuspendProgram": "suspend.sh",
                    "ResumeFailProgram": "resume-fail.sh"}
        params = ",".join(("power_save_interval=1", "power_save_min_interval=0", *self.parameters))
        settings = {**{k: str(self.hooks / v) for k, v in programs.items()},
                    "SuspendTime": str(SUSPEND_TIME), "ResumeTimeout": str(self.resume_timeout),
                    "SuspendTimeout": "5", "SlurmctldParameters": params}
        lines = [ln for ln in self.conf.read_text().splitlines()
                 if ln.split("=", 1)[0] not in settings]
        lines += [f"{k}={v}" for k, v in settings.items()]
        self.conf.write_text("\n".join(lines) + "\n")


def configure_site(d: Daemon, host: Sequence[str], template: str | None, cores: int = 2,
                   memory: int = 1000, powersave: str = POWERSAVE_TOML,
                   pool_template: str | None = None) -> None:
    """Host ``host`` (``vocloud host create`` arguments), VO ``lhcb`` with the public template
    ``template`` and its pool (the workers' shape), ``powersave.toml``, and the ``vocloud.toml``
    the hooks find the daemon's port in. ``pool_template``: the pool's own template (named
    ``lhcb-pool``) instead, when the boot attributes are in site templates (docs/pools.md)."""
    d.ok("host", "create", *host)
    d.ok("group", "create", "lhcb")
    pool_name = "lhcb-worker"
    for text in (template, pool_template):
        if text is None:
            continue
        tmpl = d.data_dir.parent / "lhcb.tmpl"
        tmpl.write_text(text)
        d.ok("template", "create", str(tmpl), "--public")
        pool_name = "lhcb-worker" if text is template else "lhcb-pool"
    d.ok("pool", "create", "lhcb", "--template", pool_name, "--cores", str(cores), "--memory",
         str(memory), "--min", "0", "--max", "2")
    (d.data_dir / "powersave.toml").write_text(powersave)
    # the daemon got its port on the command line; a site's daemon reads it from here, and
    # so do the hooks (they see nothing but the data directory)
    (d.data_dir / "vocloud.toml").write_text(f"port = {d.port}\n")
    d.wait_for(f"host {host[0]} monitored",
               lambda: d.api("GET", f"/hosts/{host[0]}")["state"] == "MONITORED", timeout=30)


def write_wrappers(d: Daemon, hooks: Path) -> Path:
    """``vocloud slurm wrappers HOOKS --data-dir <the daemon's>``; returns the resolved directory."""
    out = subprocess.run([*HOOK_CLI, "wrappers", str(hooks), "--data-dir", str(d.data_dir)],
                         env=clean_env(d.home), capture_output=True, text=True, timeout=60, check=True)
    assert f"ResumeProgram={hooks.resolve()}/resume.sh" in out.stdout
    return hooks.resolve()


def assert_hooks_ran(cluster: SlurmCluster, d: Daemon, c1: object, c2: object = None) -> str:
    """slurmctld ran every hook cleanly, and the hooks logged: resume + suspend of c1's VM ``c1``,
    resume-fail of c2's VM (id ``c2``, or any). Returns the power-saving log."""
    # slurmctld runs its programs with stdout/stderr closed: a hook that crashed on printing
    # after doing its work would show here as "program exit status of 1"
    ctld = (cluster.root / "log" / "slurmctld.log").read_text()
    assert "power_save: program exit status" not in ctld, ctld[-3000:]
    log = (d.data_dir / "slurm-powersave.log").read_text()
    assert re.search(rf"resume c1: vm {c1} created", log), log
    assert re.search(rf"suspend c1: vm {c1} terminate ", log), log
    assert re.search(rf"resume-fail c2: vm {c2 or '[0-9]+'} terminate-hard", log), log
    return log
