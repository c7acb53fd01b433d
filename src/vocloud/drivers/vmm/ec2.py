"""The ``ec2`` virtualization driver: a host is one region of an EC2-compatible cloud.

Why boto3 (docs/bursting.md): botocore is the reference implementation of the EC2 Query
protocol (SigV4, the XML shapes, error codes, pagination), kept in step with AWS by AWS, and it
reaches every EC2-compatible endpoint (AWS, moto, Eucalyptus-style clouds, vocloud's own
``/ec2/``). apache-libcloud would add OpenStack, but through a lowest-common-denominator node
API without client tokens (idempotent launch) or tag filters in one listing, both of which this
driver rests on.

How it keeps the driver rules of drivers/base.py:

* **Named by deploy id, crash-safe launch.** Every instance is tagged with the installation tag,
  the VM id and the deploy id. ``deploy`` first looks the deploy id up (one filtered
  DescribeInstances) and launches only when no live instance carries it, with
  ``ClientToken`` = the deploy id, so a daemon killed between RunInstances and its record
  finds the instance on restart instead of starting a second one (and the cloud itself
  refuses to start two for one token).
* **One listing per region per cycle.** ``monitor`` makes one paginated DescribeInstances of
  every vocloud-tagged instance in the region; ``poll`` answers from that snapshot (refreshed at
  most every ``cache_ttl`` seconds), never with a call per VM.
* **Region errors rest the region.** Throttling, no capacity and instances that never reach
  running count as region failures: the region rests for a doubling delay
  (core/cloud_region.backoff_delay) during which deploys fail fast without a call and the
  monitor reports no room, so the scheduler keeps placing on the site.
* **Secrets stay secret.** Credentials come from a site secret the host names
  (``EC2_CREDENTIALS``); they are never logged, stored in attributes or put in a message.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from vocloud.core.cloud_region import (
    REGION_ERRORS,
    TAG_DEPLOY,
    TAG_INSTALLATION,
    TAG_VM,
    Region,
    backoff_delay,
    hourly_cost,
    installation_of,
    pick_ami,
    pick_type,
    region_from,
    region_room,
)
from vocloud.drivers.base import DomainInfo, DomainSpec, DomainState, HostInfo, HostRef
from vocloud.errors import DriverError, InvalidInput

log = logging.getLogger("vocloud.drivers.ec2")

#: (access key id, secret access key) for a secret's name
Credentials = Callable[[str], tuple[str, str]]

_LIVE = ("pending", "running", "stopping", "stopped", "shutting-down")
_STATES = {
    "pending": DomainState.BOOTING, "running": DomainState.RUNNING,
    "stopping": DomainState.SHUTTING_DOWN, "shutting-down": DomainState.SHUTTING_DOWN,
    "stopped": DomainState.OFF, "terminated": DomainState.MISSING,
}


@dataclass
class _RegionState:
    """What the driver knows of one region between calls (lost on restart: the cloud has the rest)."""

    client: Any = None
    client_key: tuple[str, ...] = ()
    snapshot: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # deploy id -> instances
    snapshot_at: float = -1e18
    failures: int = 0
    rest_until: float = 0.0
    last_error: str = ""
    counted: set[str] = field(default_factory=set)  # instance ids already counted as failures
    calls: int = 0  # API calls made (tests and the docs' figures read it)


def _tags(inst: dict[str, Any]) -> dict[str, str]:
    return {str(t.get("Key", "")): str(t.get("Value", "")) for t in inst.get("Tags") or []}


def _launched(inst: dict[str, Any]) -> float:
    lt: Any = inst.get("LaunchTime")
    return float(lt.timestamp()) if lt is not None and hasattr(lt, "timestamp") else 0.0


def _best(insts: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
    """The instance that stands for a deploy id: a live one (newest first), else the newest."""
    ordered = sorted(insts, key=lambda i: (i["State"]["Name"] in _LIVE, _launched(i)), reverse=True)
    return ordered[0] if ordered else None


class Ec2Driver:
    name = "ec2"

    def __init__(self, credentials: Credentials, clock: Callable[[], float] = time.time,
                 cache_ttl: float = 2.0, timeout: float = 20.0) -> None:
        self.credentials = credentials
        self.clock = clock
        self.cache_ttl = cache_ttl
        self.timeout = timeout
        self._lock = threading.RLock()
        self._regions: dict[str, _RegionState] = {}

    # ------------------------------------------------------------ region and client
    def region(self, host: HostRef) -> Region:
        try:
            return region_from(host.name, host.attrs)
        except InvalidInput as exc:
            raise DriverError(exc.message) from None

    def state(self, host: HostRef) -> _RegionState:
        return self.state_for(host.name)

    def state_for(self, host_name: str) -> _RegionState:
        with self._lock:
            return self._regions.setdefault(host_name, _RegionState())

    def _client(self, host: HostRef, region: Region) -> Any:
        st = self.state(host)
        try:
            key_id, secret = self.credentials(region.credentials)
        except DriverError:
            raise
        except Exception as exc:  # a SecretError: its message names the file, never the value
            raise DriverError(f"ec2 host {host.name}: credentials: {getattr(exc, 'message', exc)}") from None
        ckey = (region.endpoint, region.region, key_id, secret)
        if st.client is None or st.client_key != ckey:
            _quiet_wire_logs()
            import boto3
            from botocore.config import Config

            st.client = boto3.client(
                "ec2", endpoint_url=region.endpoint, region_name=region.region,
                aws_access_key_id=key_id, aws_secret_access_key=secret,
                config=Config(retries={"max_attempts": 1, "mode": "standard"},
                              connect_timeout=self.timeout, read_timeout=self.timeout))
            st.client_key = ckey
        return st.client

    def _call(self, host: HostRef, region: Region, action: str, **params: Any) -> Any:
        """One API call; region errors start (or lengthen) the region's rest."""
        from botocore.exceptions import BotoCoreError, ClientError

        client = self._client(host, region)
        st = self.state(host)
        st.calls += 1
        try:
            if action == "DescribeInstances":
                pages = client.get_paginator("describe_instances").paginate(**params)
                return [i for page in pages for r in page.get("Reservations", []) for i in r["Instances"]]
            return getattr(client, _snake(action))(**params)
        except ClientError as exc:
            err = exc.response.get("Error", {})
            code, msg = str(err.get("Code", "")), str(err.get("Message", ""))[:300]
            if code in REGION_ERRORS:
                raise DriverError(self._rest(host, region, f"{action}: {code}: {msg}")) from None
            raise DriverError(f"ec2 host {host.name} ({region.region}): {action}: {code}: {msg}") from None
        except BotoCoreError as exc:
            raise DriverError(f"ec2 host {host.name} ({region.region}): {action}: {exc}") from None

    def _rest(self, host: HostRef, region: Region, why: str) -> str:
        st = self.state(host)
        st.failures += 1
        delay = backoff_delay(region, st.failures)
        st.rest_until = max(st.rest_until, self.clock() + delay)
        st.last_error = why
        msg = (f"ec2 host {host.name} ({region.region}): {why}; region rests {delay:.0f} s "
               f"({st.failures} failure(s) in a row)")
        log.warning("%s", msg)
        return msg

    def _check_rest(self, host: HostRef, region: Region) -> None:
        st = self.state(host)
        left = st.rest_until - self.clock()
        if left > 0:
            raise DriverError(f"ec2 host {host.name} ({region.region}) rests {left:.0f} s more after "
                              f"{st.last_error}")

    # ------------------------------------------------------------ listings
    def _refresh(self, host: HostRef, region: Region, force: bool = False) -> dict[str, list[dict[str, Any]]]:
        st = self.state(host)
        if not force and self.clock() - st.snapshot_at < self.cache_ttl:
            return st.snapshot
        insts = self._call(host, region, "DescribeInstances",
                           Filters=[{"Name": "tag-key", "Values": [TAG_DEPLOY]}])
        snap: dict[str, list[dict[str, Any]]] = {}
        for inst in insts:
            dep = _tags(inst).get(TAG_DEPLOY)
            if dep:
                snap.setdefault(dep, []).append(inst)
        st.snapshot, st.snapshot_at = snap, self.clock()
        return snap

    def _lookup(self, host: HostRef, region: Region, deploy_id: str) -> list[dict[str, Any]]:
        """This deploy id's instances, asked of the cloud now (not the snapshot)."""
        insts: list[dict[str, Any]] = self._call(
            host, region, "DescribeInstances",
            Filters=[{"Name": f"tag:{TAG_DEPLOY}", "Values": [deploy_id]}])
        self.state(host).snapshot[deploy_id] = insts
        return insts

    def _info(self, host: HostRef, region: Region, deploy_id: str,
              inst: dict[str, Any] | None) -> DomainInfo:
        if inst is None:
            return DomainInfo(deploy_id, DomainState.MISSING)
        name = inst["State"]["Name"]
        state = _STATES.get(name, DomainState.BOOTING)
        reason = str((inst.get("StateReason") or {}).get("Code", ""))
        t = region.types.get(str(inst.get("InstanceType", "")))
        cpu, mem = (t.cpu, t.memory_mb) if t else (1.0, 0)
        detail = f"{inst.get('InstanceId', '')} {inst.get('InstanceType', '')} {name}"
        st = self.state(host)
        iid = str(inst.get("InstanceId", ""))
        if name == "pending" and self.clock() - _launched(inst) > region.boot_timeout:
            if iid not in st.counted:
                st.counted.add(iid)
                self._rest(host, region, f"instance {iid} not running after {region.boot_timeout:g} s")
            return DomainInfo(deploy_id, DomainState.FAILED,
                              f"{detail}: never reached running within {region.boot_timeout:g} s")
        if name in ("terminated", "shutting-down") and reason.startswith("Server."):
            if iid not in st.counted:
                st.counted.add(iid)
                self._rest(host, region, f"instance {iid} ended by the cloud: {reason}")
            return DomainInfo(deploy_id, DomainState.FAILED, f"{detail}: the cloud ended it ({reason})")
        return DomainInfo(deploy_id, state, detail, cpu_used=cpu, memory_mib=mem)

    # ------------------------------------------------------------ VMMDriver
    def deploy(self, host: HostRef, spec: DomainSpec) -> DomainInfo:
        with self._lock:
            region = self.region(host)
            tag, vm_id = self._ids(spec.deploy_id)
            insts = self._lookup(host, region, spec.deploy_id)
            best = _best(insts)
            if best is not None and best["State"]["Name"] in ("pending", "running"):
                return self._info(host, region, spec.deploy_id, best)  # idempotent: it is there
            if best is not None and best["State"]["Name"] == "stopped":
                self._check_rest(host, region)
                self._call(host, region, "StartInstances", InstanceIds=[best["InstanceId"]])
                return DomainInfo(spec.deploy_id, DomainState.BOOTING, f"{best['InstanceId']} starting")
            if best is not None and best["State"]["Name"] in ("stopping", "shutting-down"):
                return DomainInfo(spec.deploy_id, DomainState.BOOTING,
                                  f"{best['InstanceId']} is {best['State']['Name']}; waiting")
            self._check_rest(host, region)
            try:
                itype = pick_type(region, spec.cpu, spec.vcpu, spec.memory_mib)
                ami = pick_ami(region, spec.disks[0].image_id if spec.disks else None)
            except InvalidInput as exc:
                raise DriverError(f"ec2 host {host.name}: {exc.message}") from None
            # A token per launch of this deploy id: the n-th launch after n ended instances.
            ended = sum(1 for i in insts if i["State"]["Name"] == "terminated")
            token = spec.deploy_id if not ended else f"{spec.deploy_id}.{ended}"
            params: dict[str, Any] = {
                "ImageId": ami, "InstanceType": itype.name, "MinCount": 1, "MaxCount": 1,
                "ClientToken": token,
                "TagSpecifications": [{"ResourceType": "instance", "Tags": [
                    {"Key": TAG_INSTALLATION, "Value": tag}, {"Key": TAG_VM, "Value": str(vm_id)},
                    {"Key": TAG_DEPLOY, "Value": spec.deploy_id},
                    {"Key": "Name", "Value": spec.name[:200] or spec.deploy_id}]}],
            }
            if region.send_context and spec.context:
                params["UserData"] = _user_data(spec.context)
            out = self._call(host, region, "RunInstances", **params)
            inst = out["Instances"][0]
            self.state(host).failures = 0  # the region took a launch: it works again
            self.state(host).snapshot.setdefault(spec.deploy_id, []).append(inst)
            log.info("ec2 host %s: %s launched as %s (%s, %s)", host.name, spec.deploy_id,
                     inst.get("InstanceId"), itype.name, ami)
            return self._info(host, region, spec.deploy_id, inst)

    @staticmethod
    def _ids(deploy_id: str) -> tuple[str, int]:
        try:
            return installation_of(deploy_id)
        except InvalidInput as exc:
            raise DriverError(exc.message) from None

    def poll(self, host: HostRef, deploy_id: str) -> DomainInfo:
        with self._lock:
            region = self.region(host)
            snap = self._refresh(host, region)
            return self._info(host, region, deploy_id, _best(snap.get(deploy_id, [])))

    def _live_ids(self, host: HostRef, region: Region, deploy_id: str, states: tuple[str, ...]) -> list[str]:
        return [str(i["InstanceId"]) for i in self._lookup(host, region, deploy_id)
                if i["State"]["Name"] in states]

    def shutdown(self, host: HostRef, deploy_id: str, hard: bool) -> None:
        """Terminate (an instance store is no disk to keep: the VM's disks are its image)."""
        with self._lock:
            region = self.region(host)
            ids = self._live_ids(host, region, deploy_id, ("pending", "running", "stopping", "stopped"))
            if ids:
                self._call(host, region, "TerminateInstances", InstanceIds=ids)
                self.state(host).snapshot_at = -1e18

    def poweroff(self, host: HostRef, deploy_id: str) -> None:
        """Stop, keeping the instance (and its EBS root) for a later start."""
        with self._lock:
            region = self.region(host)
            ids = self._live_ids(host, region, deploy_id, ("pending", "running"))
            if ids:
                self._call(host, region, "StopInstances", InstanceIds=ids)
                self.state(host).snapshot_at = -1e18

    def reboot(self, host: HostRef, deploy_id: str) -> None:
        with self._lock:
            region = self.region(host)
            ids = self._live_ids(host, region, deploy_id, ("running",))
            if not ids:
                raise DriverError(f"cannot reboot {deploy_id}: no running instance in {region.region}")
            self._call(host, region, "RebootInstances", InstanceIds=ids)

    def save(self, host: HostRef, deploy_id: str) -> None:
        """EC2 has no suspend to memory; stop is the nearest (the root volume is kept)."""
        self.poweroff(host, deploy_id)

    def restore(self, host: HostRef, spec: DomainSpec) -> DomainInfo:
        return self.deploy(host, spec)

    def migrate(self, src: HostRef, dst: HostRef, spec: DomainSpec) -> DomainInfo:
        raise DriverError("an ec2 instance cannot migrate (between regions or to the site)")

    def cleanup(self, host: HostRef, deploy_id: str) -> None:
        self.shutdown(host, deploy_id, hard=True)

    def console(self, host: HostRef, deploy_id: str, max_bytes: int = 65536) -> str:
        with self._lock:
            region = self.region(host)
            best = _best(self.state(host).snapshot.get(deploy_id, []))
            if best is None:
                return ""
            try:
                out = self._call(host, region, "GetConsoleOutput", InstanceId=best["InstanceId"])
            except DriverError as exc:
                return f"(no console output: {exc.message})"
            raw = str(out.get("Output") or "")
            try:
                text = base64.b64decode(raw, validate=True).decode("utf-8", "replace")
            except ValueError:
                text = raw
            return text[-max_bytes:]

    def monitor(self, host: HostRef) -> HostInfo:
        """One DescribeInstances for the region: every vocloud-tagged instance, whichever
        installation it belongs to (the engine sweeps only its own, engine/cloud_leaks.py)."""
        with self._lock:
            region = self.region(host)
            snap = self._refresh(host, region, force=True)
            domains: dict[str, DomainInfo] = {}
            for dep, insts in snap.items():
                info = self._info(host, region, dep, _best(insts))
                if info.state != DomainState.MISSING:
                    domains[dep] = info
            used_cpu = sum(i.cpu_used for i in domains.values() if i.state != DomainState.OFF)
            used_mem = sum(i.memory_mib for i in domains.values() if i.state != DomainState.OFF)
            st = self.state(host)
            resting = st.rest_until > self.clock()
            try:
                declared = float(host.attrs.get("TOTAL_CPU", "0") or 0)
                total_mem = int(float(host.attrs.get("TOTAL_MEM", "0") or 0)) or 1 << 30
            except ValueError as exc:
                raise DriverError(f"ec2 host {host.name} has bad capacity attributes: {exc}") from None
            live = sum(1 for i in domains.values() if i.state != DomainState.OFF)
            total_cpu = region_room(region, declared, used_cpu, live, resting)
            attrs = {
                "HYPERVISOR": "ec2", "CLOUD_REGION": region.region, "CLOUD_INSTANCES": str(live),
                "CLOUD_COST_HOUR": f"{hourly_cost(region, used_cpu):g}",
                "CLOUD_REST": (f"{st.rest_until - self.clock():.0f} s after {st.last_error}"
                               if resting else ""),
            }
            return HostInfo(total_cpu=total_cpu, total_mem_mib=total_mem, used_cpu=used_cpu,
                            used_mem_mib=used_mem, domains=domains, attrs=attrs)

    def launched_at(self, host: HostRef, deploy_id: str) -> float:
        """When the live instance of ``deploy_id`` was launched (0: none), from the snapshot."""
        best = _best(self.state(host).snapshot.get(deploy_id, []))
        return _launched(best) if best is not None else 0.0


def _snake(action: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in action).lstrip("_")


def _quiet_wire_logs() -> None:
    """botocore's DEBUG lines print every request's parameters, and RunInstances' UserData
    carries a pool worker's context with the site secrets its site template names (the munge
    key): a daemon run with ``log_level=debug`` must not write them, so botocore and boto3 log
    warnings and errors only, whatever the root logger's level is or becomes."""
    for name in ("botocore", "boto3"):
        logger = logging.getLogger(name)
        if logger.level < logging.WARNING:  # NOTSET (0) too: it would follow the root logger
            logger.setLevel(logging.WARNING)


def _user_data(context: dict[str, str]) -> str:
    """The VM's context as KEY='value' lines (the format of OpenNebula's context.sh)."""
    lines = [f"{k}='{v.replace(chr(39), chr(39) + chr(92) + chr(39) + chr(39))}'"
             for k, v in sorted(context.items())]
    return "\n".join(lines) + "\n"
