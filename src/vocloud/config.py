"""Daemon settings: embedded defaults, overridden by ``<data_dir>/vocloud.toml``, then environment.

The defaults are the "main job on embedded defaults" of the README: SQLite in the data directory,
this machine as a hypervisor, the REST API on loopback. Every setting has one name, used in the
TOML file (lower case) and the environment (``VOCLOUD_`` + upper case).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from vocloud.errors import InvalidInput

DEFAULT_PORT = 2633


def default_data_dir() -> Path:
    env = os.environ.get("VOCLOUD_HOME")
    if env:
        return Path(env)
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "vocloud"


@dataclass(frozen=True)
class Settings:
    data_dir: Path = field(default_factory=default_data_dir)
    db_url: str = ""  # empty: sqlite file in data_dir
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    # loop periods, seconds
    scheduler_interval: float = 1.0
    lifecycle_interval: float = 0.5
    monitor_interval: float = 5.0
    # a host whose probe fails is probed after monitor_interval * 2^failures s, at most this long
    host_backoff_max: float = 300.0
    # scheduler
    sched_policy: str = "packing"
    sched_rank: str = ""
    max_dispatch: int = 0
    max_host_dispatch: int = 0
    # lifecycle timeouts, seconds
    boot_timeout: float = 300.0
    shutdown_timeout: float = 60.0
    # sim driver defaults (hosts may override with SIM_BOOT_DELAY / SIM_SHUTDOWN_DELAY)
    sim_boot_delay: float = 1.0
    sim_shutdown_delay: float = 0.5
    log_level: str = "info"
    # VO pools: the site's batch system ("" or "none": no pools; "sim", "slurm", "gridengine")
    batch_system: str = ""
    batch_vo_attribute: str = "account"
    batch_partition: str = ""
    pool_interval: float = 5.0
    pool_site_max_vms: int = 1000
    # the site template (an administrator's VM template, by name or id) merged into the workers
    # of every pool that names none of its own: batch secret, worker network, boot attributes
    pool_site_template: str = ""
    # pre-stage a pool's image onto the hosts that could take its workers before they boot
    # (docs/image-distribution.md): "wait" (boots wait for it, or go to hosts that hold it),
    # "start" (do not wait), "off"; at most pool_prestage_wait seconds (and half the pool's boot
    # timeout) of waiting, at most pool_prestage_hosts hosts, each holder serving
    # pool_prestage_fanout others at once. A pool's own --prestage overrides the mode.
    pool_prestage: str = "wait"
    pool_prestage_wait: float = 300.0
    pool_prestage_hosts: int = 64
    pool_prestage_fanout: int = 2
    # one daemon per store: a daemon silent this long loses it (it beats every third of it)
    store_lease_ttl: float = 30.0
    # site secrets for worker VMs ($SECRET[name] in CONTEXT): "" means <shared_dir>/secrets
    secrets_dir: str = ""
    # several front-ends on one PostgreSQL (docs/ha.md): the directory they all share (same path
    # everywhere): EC2 access-key file, qemu run dirs and datastore paths on hosts, sim state;
    # "" = the data dir. How often a follower tries to take the lead, seconds.
    shared_dir: str = ""
    leader_poll: float = 1.0
    # qemu accelerator: "" probes each local host once (KVM only where a guest really runs),
    # "kvm" or "tcg" skips the probe (docs/qemu.md)
    accel: str = ""
    # SSH hosts: the daemon's client keys (":"-separated paths) and its known_hosts file
    ssh_key: str = ""
    ssh_known_hosts: str = ""
    # PostgreSQL connection pool size per daemon
    db_pool: int = 10
    # processes serving the API on the one port (the first also runs the loops; the others
    # serve requests only). More than 1 uses more cores; docs/performance.md
    api_workers: int = 1
    # Grid Engine: the hosts-format file worker names are written to ("" = DNS names them)
    sge_hosts_file: str = ""
    # lvm storage driver: the volume group ("" = the lvm driver is not offered)
    lvm_vg: str = ""
    # the most addresses one ``vnet reserve`` may take out of a shared network (docs/networks.md)
    max_reservation_size: int = 256
    # the trust boundary (docs/security.md): attribute paths restricted to administrators on top
    # of the built-in list, e.g. "CONTEXT/SSH_PUBLIC_KEY,NIC/IP"; and request limits
    restricted_attrs: str = ""
    max_vms_per_request: int = 100  # for non-administrators; administrators up to 10,000
    max_template_bytes: int = 64 * 1024
    max_template_depth: int = 8  # nesting of [ ] and { } in JSON/TOML templates
    # the REST API: largest request body accepted (413 beyond it); image uploads stream and
    # are exempt (they have their own size quota)
    max_request_bytes: int = 1 << 20
    # guests send only from their own MAC and leased IPv4 (nftables on every bridge host;
    # drivers/net/guard.py, docs/networks.md)
    anti_spoofing: bool = True
    # the hosts forward between guest bridges (networks of different VOs reach each other through
    # a host address); off: vocloud drops it (drivers/net/isolate.py, docs/networks.md)
    route_between_networks: bool = False
    # named VM sizes for the EC2/OCCI/OpenNebula front-ends: "NAME=CPU:MEMORY_MB[:VCPU], ..."
    # ("" = OpenNebula's small/medium/large; model/instance_types.py)
    instance_types: str = ""
    # OpenNebula OCCI: template text (ONE syntax) the administrator merges into every VM created
    # through OCCI, as OpenNebula's common.erb (e.g. KERNEL="..." for the site's images); docs/occi.md
    occi_template: str = ""
    # operations (docs/operations.md): showback prices per core-hour and per GiB-hour of memory,
    # the APEL SiteName / CloudComputeService of usage records, audit-log retention (0: forever)
    showback_cpu_hour: float = 0.0
    showback_gib_hour: float = 0.0
    apel_site_name: str = "vocloud"
    apel_service: str = ""
    audit_retention_days: float = 365.0
    # /metrics without credentials (default: an administrator's token, as for any API call)
    metrics_public: bool = False
    # hosts leased from the batch system (docs/host-leases.md): the batch systems that may be
    # asked ("slurm"; "" = off), the daemon URL the leased nodes reach, and how long before a
    # lease ends its host starts draining (VMs must end before that to be placed there)
    host_lease_batch: str = ""
    host_lease_url: str = ""
    host_lease_drain_lead: float = 120.0
    # lease by itself when VMs with a known end (WALLTIME, pool max_lifetime) wait for room:
    # "slurm nodes=4 walltime=4h [partition=P] [vmm=qemu] [cpu=N memory=MiB] [grace=30]"
    host_lease_auto: str = ""

    @property
    def database_url(self) -> str:
        return self.db_url or f"sqlite:///{self.data_dir / 'vocloud.db'}"

    @property
    def secrets_path(self) -> Path:
        return Path(self.secrets_dir).expanduser() if self.secrets_dir else self.shared_path / "secrets"

    @property
    def shared_path(self) -> Path:
        """What every front-end of one store must agree on (docs/ha.md); the data dir by default."""
        return Path(self.shared_dir).expanduser() if self.shared_dir else self.data_dir

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"


def _coerce(name: str, raw: Any, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            if isinstance(raw, bool):
                return raw
            return str(raw).lower() in ("1", "yes", "true", "on")
        if isinstance(default, Path):
            return Path(str(raw)).expanduser()
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        return str(raw)
    except (TypeError, ValueError):
        raise InvalidInput(f"setting {name}: {raw!r} is not a valid {type(default).__name__}") from None


def load_settings(data_dir: Path | None = None, **overrides: Any) -> Settings:
    """Defaults < vocloud.toml < VOCLOUD_* environment < explicit overrides (CLI flags)."""
    base = Settings() if data_dir is None else Settings(data_dir=data_dir)
    values: dict[str, Any] = {}
    names = {f.name: getattr(base, f.name) for f in fields(Settings)}
    toml_path = base.data_dir / "vocloud.toml"
    if toml_path.exists():
        try:
            doc = tomllib.loads(toml_path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise InvalidInput(f"{toml_path}: {exc}") from None
        for key, raw in doc.items():
            if key not in names:
                raise InvalidInput(f"{toml_path}: unknown setting {key!r}")
            values[key] = _coerce(key, raw, names[key])
    for key, default in names.items():
        env = os.environ.get("VOCLOUD_" + key.upper())
        if env is not None and key != "data_dir":
            values[key] = _coerce(key, env, default)
    for key, raw in overrides.items():
        if raw is None:
            continue
        if key not in names:
            raise InvalidInput(f"unknown setting {key!r}")
        values[key] = _coerce(key, raw, names[key])
    out = replace(base, **values)
    if out.pool_prestage not in ("off", "start", "wait"):
        raise InvalidInput(f"setting pool_prestage: {out.pool_prestage!r} is not one of off, "
                           "start, wait")
    for key, low, high in (("pool_prestage_wait", 0, 86400), ("pool_prestage_hosts", 1, 1000),
                           ("pool_prestage_fanout", 1, 16)):
        if not low <= getattr(out, key) <= high:
            raise InvalidInput(f"setting {key}: {getattr(out, key):g} is out of range "
                               f"({low} to {high})")
    if not 1 <= out.port <= 65535:
        raise InvalidInput(f"setting port: {out.port} is not a TCP port (1-65535)")
    if out.accel not in ("", "kvm", "tcg"):
        raise InvalidInput(f"setting accel: {out.accel!r} is not one of kvm, tcg or empty (probe)")
    if not 1 <= out.max_reservation_size <= 65536:
        raise InvalidInput(f"setting max_reservation_size: {out.max_reservation_size} is not "
                           "between 1 and 65536 addresses (the default is 256)")
    if not out.store_lease_ttl >= 1:
        raise InvalidInput(f"setting store_lease_ttl: {out.store_lease_ttl:g} s is too short "
                           "(at least 1 s; the default is 30)")
    if not 0.05 <= out.leader_poll <= 60:
        raise InvalidInput(f"setting leader_poll: {out.leader_poll:g} s is out of range "
                           "(0.05 to 60; the default is 1)")
    if not 0 < out.host_backoff_max <= 86400:
        raise InvalidInput(f"setting host_backoff_max: {out.host_backoff_max:g} s is out of range "
                           "(more than 0, at most 86400; the default is 300)")
    if not 1 <= out.api_workers <= 64:
        raise InvalidInput(f"setting api_workers: {out.api_workers} is out of range (1 to 64; "
                           "the default is 1)")
    if not 1024 <= out.max_request_bytes <= 1 << 30:
        raise InvalidInput(f"setting max_request_bytes: {out.max_request_bytes} is out of range "
                           "(1024 to 1073741824 bytes; the default is 1048576)")
    if not (0 <= out.showback_cpu_hour <= 1e9 and 0 <= out.showback_gib_hour <= 1e9
            and 0 <= out.audit_retention_days <= 36500):
        raise InvalidInput("settings showback_cpu_hour, showback_gib_hour (0 to 1e9) and "
                           "audit_retention_days (0 to 36500) are out of range")
    return out
