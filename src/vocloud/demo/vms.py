"""``vocloud demo --vms N``: the plain-VM demo (the IaaS part alone), start to finish, on one machine.

The README's demo is the VO cluster (:mod:`vocloud.demo`); this one stays for a look at the cloud
manager without any batch system. It starts a real daemon (SQLite store in a fresh data
directory, this machine registered as the hypervisor), then acts as a site admin would through
the REST API: registers the host, creates a burst of VMs, shows them reach RUNNING live,
terminates them and prints a summary. The daemon is stopped with SIGTERM at the end, as an init
system would.

With qemu installed (``scripts/setup.sh`` installs it) this machine is a real ``qemu`` host: the
tiny guest is built from Debian packages (cached), each VM boots it from a qcow2 overlay, reads its
CONTEXT from a cloud-init seed ISO and echoes it on its console, and powers off through ACPI.
``--sim`` (or no qemu) registers the machine as a ``sim`` host with its real cores and memory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.table import Table

from vocloud.client import Client, wait_healthy
from vocloud.demo.api import Api as _Api
from vocloud.demo.site import host_name, machine
from vocloud.devtools.localprocs import free_port
from vocloud.errors import VocloudError


def _table(hosts: list[dict[str, Any]], vms: list[dict[str, Any]], title: str) -> Table:
    t = Table(title=title, title_justify="left")
    for col in ("HOST", "STATE", "RVM", "ALLOC CPU", "TOTAL CPU", "VM STATES"):
        t.add_column(col)
    for h in hosts:
        on = [v for v in vms if v["host"] == h["name"]]
        counts: dict[str, int] = {}
        for v in on:
            counts[v["stat"]] = counts.get(v["stat"], 0) + 1
        t.add_row(h["name"], h["state"], str(h["running_vms"]), f"{h['alloc_cpu']:g}",
                  f"{h['total_cpu']:g}", " ".join(f"{k}:{n}" for k, n in sorted(counts.items())))
    pend = sum(1 for v in vms if v["state"] == "PENDING")
    t.caption = f"{len(vms)} VMs, {pend} pending"
    return t


def _qemu_setup(console: Console, api: _Api, name: str) -> str | None:
    """Register this machine as a qemu host and the tiny guest as an image; the VM template."""
    if shutil.which("qemu-system-x86_64") is None or shutil.which("qemu-img") is None:
        console.print("[yellow]qemu is not installed: simulating guests (run scripts/setup.sh as root)")
        return None
    from vocloud.guest.build import ensure_image

    console.print("building (or reusing) the tiny guest from Debian packages ...")
    try:
        guest = ensure_image()
    except (RuntimeError, OSError) as exc:
        console.print(f"[yellow]cannot build the guest image ({exc}): simulating guests")
        return None
    api("POST", "/hosts", json={"name": name, "vmm": "qemu"})
    api.upload("tiny", guest.base_disk, "qcow2")
    return (f'NAME="demo"\nCPU=0.5\nVCPU=1\nMEMORY=128\nKERNEL="{guest.vmlinux}"\n'
            f'INITRD="{guest.initramfs}"\nKERNEL_CMD="{guest.cmdline}"\n'
            'DISK=[IMAGE="tiny", TARGET="vda"]\nCONTEXT=[VALUE="hello-from-$NAME"]\n')


def run(vms: int = 0, boot_delay: float = 2.0, keep: bool = False, sim: bool = False) -> int:
    console = Console()
    cores, mem = machine()
    data_dir = Path(os.environ.get("VOCLOUD_HOME") or tempfile.mkdtemp(prefix="vocloud-demo-"))
    port = free_port()
    env = {**os.environ, "VOCLOUD_HOME": str(data_dir), "VOCLOUD_PORT": str(port),
           "VOCLOUD_SIM_BOOT_DELAY": str(boot_delay), "VOCLOUD_SIM_SHUTDOWN_DELAY": "1",
           "VOCLOUD_LOG_LEVEL": "warning", "VOCLOUD_MONITOR_INTERVAL": "2"}
    console.rule("[bold]vocloud demo")
    console.print(f"data directory {data_dir} (SQLite store), API on http://127.0.0.1:{port}")
    log = (data_dir / "daemon.log").open("w") if data_dir.exists() else None
    if log is None:
        data_dir.mkdir(parents=True)
        log = (data_dir / "daemon.log").open("w")
    daemon = subprocess.Popen([sys.executable, "-m", "vocloud.app.serve_main"], env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        if not wait_healthy(url, lambda: daemon.poll() is None, 30):
            console.print(f"[red]the daemon did not come up; see {data_dir}/daemon.log")
            return 1
        api = _Api(Client(url, (data_dir / "admin.token").read_text().strip(), timeout=30), VocloudError)
        name = host_name()
        template = None if sim else _qemu_setup(console, api, name)
        if template is None:
            api("POST", "/hosts", json={"name": name, "vmm": "sim", "cpu": cores, "memory": mem})
            template = 'NAME="demo"\nCPU=1\nMEMORY=256\n'
            per_vm, kind = 1.0, "simulated"
        else:
            per_vm, kind = 0.5, "qemu"
        fit = int(cores / per_vm)
        count = vms or fit + 2  # more than fit: shows packing and a placement reason
        console.print(f"registered this machine as {kind} host [bold]{name}[/]: {cores} cores, {mem} MiB")
        t0 = time.time()
        ids = api("POST", "/vms", json={"template": template, "count": count})["ids"]
        console.print(f"created {len(ids)} {kind} VMs of {per_vm:g} CPU (this host holds {fit})")
        with Live(console=console, refresh_per_second=4) as live:
            while True:
                rows = api("GET", "/vms")
                live.update(_table(api("GET", "/hosts"), rows, "booting"))
                if sum(1 for v in rows if v["state"] == "RUNNING") >= min(count, fit):
                    break
                failed = [v for v in rows if "FAILURE" in v["state"]]
                if failed:
                    why = api("GET", f"/vms/{failed[0]['id']}")["error"]
                    raise VocloudError(f"VM {failed[0]['id']} failed: {why}")
                if time.time() - t0 > 300:
                    raise VocloudError("VMs did not reach RUNNING within 300 s")
                time.sleep(0.5)
        console.print()
        boot_s = time.time() - t0
        pending = [v for v in api("GET", "/vms") if v["state"] == "PENDING"]
        if pending:
            why = api("GET", f"/vms/{pending[0]['id']}")["sched_message"]
            console.print(f"VM {pending[0]['id']} stays PENDING: [italic]{why}[/]")
        for v in api("GET", "/vms"):
            if v["state"] == "RUNNING" and kind == "qemu":
                said = [ln for ln in api("GET", f"/vms/{v['id']}/log")["log"].splitlines()
                        if "VOCLOUD-CONTEXT VALUE=" in ln]
                console.print(f"  VM {v['id']} console: {said[-1].strip() if said else '(no context line)'}")
        console.print(f"{min(count, fit)} VMs RUNNING after {boot_s:.1f} s; terminating all "
                      f"({'ACPI power-off' if kind == 'qemu' else 'simulated shutdown'})")
        for i in ids:
            api("POST", f"/vms/{i}/action", json={"action": "terminate"})
        t1 = time.time()
        with Live(console=console, refresh_per_second=4) as live:
            while True:
                rows = api("GET", "/vms")
                live.update(_table(api("GET", "/hosts"), rows, "shutting down"))
                if not rows:
                    break
                if time.time() - t1 > 300:
                    raise VocloudError("VMs did not reach DONE within 300 s")
                time.sleep(0.5)
        console.print()
        done = api("GET", "/vms", params={"all": True})
        console.rule("[bold]summary")
        console.print(f"VMs created {len(ids)}, ran {sum(1 for v in done if v['started_at'])}, "
                      f"DONE {sum(1 for v in done if v['state'] == 'DONE')}; "
                      f"time to RUNNING {boot_s:.1f} s, to DONE {time.time() - t1:.1f} s")
        return 0
    except VocloudError as exc:
        console.print(f"[red]demo failed: {exc.message}")
        return 1
    finally:
        if not keep:
            daemon.terminate()
            try:
                daemon.wait(30)
            except subprocess.TimeoutExpired:
                daemon.kill()
            console.print(f"daemon stopped (exit {daemon.returncode}); state kept in {data_dir}")
        log.close()


if __name__ == "__main__":
    raise SystemExit(run())
