"""Setting up the demo's site through the REST API, as a site administrator would: this machine
as a host, the worker network, two VOs with their templates (one with its own uploaded image) and
one pool each."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from vocloud.demo.api import Api
from vocloud.demo.base import IDLE_TIMEOUT, VOS, WORKER_CPUS, WORKER_MIB, DemoError


def pool_policy() -> dict[str, Any]:
    """Both pools' sizing (``POST /pools`` fields): small, quick to grow and to shrink."""
    return {"cores": WORKER_CPUS, "memory": WORKER_MIB, "min": 0, "max": 2,
            "idle_timeout": IDLE_TIMEOUT, "scale_down_delay": 0, "boot_timeout": 180}


def template_text(name: str, attrs: dict[str, str], disk: str | None, nic: bool,
                  context: dict[str, str] | None) -> str:
    """A worker template in vocloud's template language."""
    lines = [f'NAME="{name}"'] + [f'{k}="{v}"' for k, v in attrs.items()]
    if disk:
        lines.append(f'DISK=[IMAGE="{disk}", TARGET="vda"]')
    if nic:
        lines.append('NIC=[NETWORK="vo"]')
    if context:
        lines.append("CONTEXT=[" + ", ".join(f'{k}="{v}"' for k, v in context.items()) + "]")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True, slots=True)
class Site:
    """How the two VOs' workers boot: their template attributes and the atlas image file."""

    atlas_image: Path
    attrs: Callable[[str], dict[str, str]]  # vo -> template attributes
    context: Callable[[str], dict[str, str] | None]  # vo -> CONTEXT
    nic: bool
    #: the administrator's site template (boot attributes, worker NIC, secret), if any
    site_template: str | None = None


def setup_site(console: Console, api: Api, host: dict[str, Any], site: Site,
               bridge: str | None, subnet: str | None) -> None:
    """Register what a site admin would: the host, a vnet, two VOs, their templates, pools."""
    api("POST", "/hosts", json=host)
    if bridge and subnet:
        api("POST", "/vnets", json={"template": f'NAME="vo"\nBRIDGE="{bridge}"\n'
                                                f'AR=[IP="{subnet}10", SIZE="8"]\n'})
        console.print(f"vnet [bold]vo[/] on bridge {bridge}: leases {subnet}10-{subnet}17")
    users = {}
    for vo in VOS:
        api("POST", "/groups", json={"name": vo})
        users[vo] = api("POST", "/users", json={"name": f"{vo}-admin", "group": vo})["token"]
    # What only the site decides (how a worker boots, the worker network, the batch secret) is
    # the administrator's own, private site template; the VOs' templates hold the rest, and the
    # workers are created as each VO (docs/pools.md).
    policy = pool_policy()
    if site.site_template is not None:
        api("POST", "/templates", json={"name": "worker-site", "template": site.site_template})
        policy["site_template"] = "worker-site"
    # cms brings no image: the site's public standard worker template (no disk)
    api("POST", "/templates", json={"name": "std-worker", "public": True, "template": template_text(
        "std-worker", site.attrs("cms"), None, site.nic, site.context("cms"))})
    # atlas brings its own: an image and a template owned by the VO
    atlas = api.as_user(users["atlas"])
    atlas.upload("atlas-img", site.atlas_image)  # a VO brings its image by uploading its bytes
    atlas("POST", "/templates", json={"name": "atlas-wn", "template": template_text(
        "atlas-wn", site.attrs("atlas"), "atlas-img", site.nic, site.context("atlas"))})
    console.print("VOs [bold]atlas[/] (own image atlas-img, template atlas-wn) and [bold]cms[/] "
                  "(public standard template std-worker)")
    api("POST", "/pools", json={"vo": "atlas", "template": "atlas-wn", **policy})
    api("POST", "/pools", json={"vo": "cms", "template": "std-worker", **policy})
    console.print(f"pools: min 0, max 2, {WORKER_CPUS} core / {WORKER_MIB} MiB per worker, "
                  f"idle timeout {IDLE_TIMEOUT} s")


def wait_monitored(api: Api, deadline: float) -> dict[str, Any]:
    """The (one) host once the monitor has measured it; a host in ERROR ends the demo."""
    while True:
        hosts = api("GET", "/hosts")
        if hosts and all(h["state"] == "MONITORED" for h in hosts):
            return dict(hosts[0])
        if hosts and any(h["state"] == "ERROR" for h in hosts):
            raise DemoError(f"host {hosts[0]['name']} is in ERROR: {hosts[0]['error']}")
        if time.monotonic() > deadline:
            raise DemoError(f"the host was not MONITORED in time: {hosts}")
        time.sleep(0.5)


def host_name() -> str:
    """This machine's short name, cut to what a vocloud host name may hold."""
    name = socket.gethostname().split(".")[0] or "localhost"
    return "".join(c if c.isalnum() or c in "._-" else "-" for c in name)


def machine() -> tuple[int, int]:
    """This machine's cores and memory (MiB): what a ``sim`` host standing for it declares."""
    cores = os.cpu_count() or 1
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // (1 << 20)
    return cores, int(mem)
