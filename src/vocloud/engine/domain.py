"""Turn a stored VM into the DomainSpec a driver starts: disks, NICs, context variables."""

from __future__ import annotations

import functools
import math
from dataclasses import replace

from vocloud.drivers.base import DiskSpec, DomainSpec, NicSpec
from vocloud.model.secret_refs import SECRET_REF, Resolver, substitute
from vocloud.model.template import Template, parse_template
from vocloud.store.schema import VM

# Variables a CONTEXT value may reference, OpenNebula style ($NAME, $VMID, $NIC[IP] as $IP).
_VARS = ("VMID", "NAME", "IP", "MAC", "NETWORK")

#: DomainSpec field <- stored template attribute, for the typed driver options.
_TYPED = {"kernel": "KERNEL", "initrd": "INITRD", "kernel_cmd": "KERNEL_CMD", "machine": "MACHINE",
          "accel": "ACCEL", "ready_marker": "READY_MARKER", "virtfs": "VIRTFS", "sim_boot": "SIM_BOOT"}


def _substitute(value: str, env: dict[str, str]) -> str:
    for key in sorted(_VARS, key=len, reverse=True):
        if key in env:
            value = value.replace("$" + key, env[key])
    return value


#: ETHn_<suffix> <- NIC attribute, OpenNebula's context-package names
_ETH = (("IP", "IP"), ("MAC", "MAC"), ("MASK", "NETWORK_MASK"), ("GATEWAY", "GATEWAY"), ("DNS", "DNS"),
        ("NETWORK", "NETWORK"))


def eth_variables(nics: list[dict[str, str]]) -> dict[str, str]:
    """``CONTEXT=[NETWORK="YES"]``: each NIC's address, MAC, mask, gateway and DNS servers as
    ``ETH0_IP``, ``ETH0_MAC``, ... the way OpenNebula's context packages read them (and the seed's
    network-config is written from). Values come from the lease and the network, never from the
    user: the service wrote them into the NIC after its checks."""
    out: dict[str, str] = {}
    for i, nic in enumerate(nics):
        for suffix, attr in _ETH:
            if nic.get(attr):
                out[f"ETH{i}_{suffix}"] = nic[attr]
    return out


@functools.lru_cache(maxsize=16384)
def _parsed(vm_id: int, text: str) -> Template:
    """A stored template, parsed once per VM rather than once per lifecycle step (parsing was
    half of a pass's time at 10,000 VMs). Keyed by the text itself, so a changed template is
    parsed again; callers only read the result (build_spec never modifies it)."""
    return parse_template(text, fmt="one", source=f"VM {vm_id} template", max_bytes=None)


def build_spec(vm: VM, user: str = "", group: str = "", secrets: Resolver | None = None) -> DomainSpec:
    """``secrets``: how ``$SECRET[name]`` in CONTEXT is resolved; ``None`` leaves it as written
    (for the steps that never build a context seed).

    Built once per VM, not once per step: the spec is a pure function of the VM's columns read
    here and the user and group names, so it is cached on exactly those (a changed template,
    name or size builds it again). A spec whose CONTEXT refers to a secret is the exception when
    ``secrets`` is given: it is built afresh each time, so a changed or withdrawn secret counts.
    Specs are frozen; the context dict of a cached one is copied for each caller."""
    spec, has_secrets = _cached(vm.id, vm.deploy_id, vm.name, vm.cpu_m, vm.vcpu, vm.memory,
                                vm.template, user, group)
    if has_secrets and secrets is not None:
        return _build(vm.id, vm.deploy_id, vm.name, vm.cpu_m, vm.vcpu, vm.memory, vm.template,
                      user, group, secrets)
    return replace(spec, context=dict(spec.context)) if spec.context else spec


@functools.lru_cache(maxsize=16384)
def _cached(vm_id: int, deploy_id: str, name: str, cpu_m: int, vcpu: int | None, memory: int,
            template: str, user: str, group: str) -> tuple[DomainSpec, bool]:
    spec = _build(vm_id, deploy_id, name, cpu_m, vcpu, memory, template, user, group, None)
    return spec, any(SECRET_REF.search(v) for v in spec.context.values())


def _build(vm_id: int, deploy_id: str, name: str, cpu_m: int, vcpu: int | None, memory: int,
           template: str, user: str, group: str, secrets: Resolver | None) -> DomainSpec:
    t = _parsed(vm_id, template) if template else None
    disks: list[DiskSpec] = []
    nics: list[NicSpec] = []
    context: dict[str, str] = {}
    typed: dict[str, str | None] = {}
    if t is not None:
        for i, d in enumerate(t.vectors("DISK")):
            disks.append(DiskSpec(
                target=d.get("TARGET") or f"vd{chr(ord('a') + i)}",
                source=d.get("SOURCE", ""), format=d.get("FORMAT", "qcow2"),
                persistent=d.get("PERSISTENT", "NO").upper() in ("YES", "TRUE", "1"),
                image_id=int(d["IMAGE_ID"]) if d.get("IMAGE_ID", "").isdigit() else None,
                sha256=d.get("SHA256", ""),
            ))
        nic_vectors = t.vectors("NIC")
        for n in nic_vectors:
            nics.append(NicSpec(network=n.get("NETWORK", ""), ip=n.get("IP", ""), mac=n.get("MAC", ""),
                                bridge=n.get("BRIDGE"),
                                vlan_id=int(n["VLAN_ID"]) if n.get("VLAN_ID", "").isdigit() else None,
                                phydev=n.get("PHYDEV", "")))
        env = {"VMID": str(vm_id), "NAME": name}
        if nics:
            env.update(IP=nics[0].ip, MAC=nics[0].mac, NETWORK=nics[0].network)
        ctx = t.vector("CONTEXT") or {}
        context = {k: _substitute(v, env) for k, v in ctx.items()}
        if secrets is not None:
            context = {k: substitute(v, secrets) for k, v in context.items()}
        if ctx.get("NETWORK", "").upper() in ("YES", "TRUE", "1"):
            for key, value in eth_variables(nic_vectors).items():
                context.setdefault(key, value)
        if ctx:
            context.setdefault("VMID", str(vm_id))
            context.setdefault("NAME", name)
            if user:
                context.setdefault("USER", user)
            if group:
                context.setdefault("VO", group)
        # the stored template is written only by the service (after its checks): trusted
        typed = {field: t.get(key) for field, key in _TYPED.items()}
    return DomainSpec(
        vm_id=vm_id, deploy_id=deploy_id or f"vc-{vm_id}", name=name,
        cpu=cpu_m / 1000, vcpu=vcpu or max(1, math.ceil(cpu_m / 1000)),
        memory_mib=memory, disks=tuple(disks), nics=tuple(nics), context=context,
        kernel=typed.get("kernel"), initrd=typed.get("initrd"), kernel_cmd=typed.get("kernel_cmd"),
        machine=typed.get("machine"), accel=typed.get("accel"),
        ready_marker=typed.get("ready_marker"), virtfs=typed.get("virtfs"),
        sim_boot=typed.get("sim_boot"),
    )
