"""Contextualization: a cloud-init NoCloud seed ISO built per VM from its ``CONTEXT=[...]``.

NoCloud is the one datasource every cloud-init image understands without a metadata server, which
a grid site may not run: cloud-init finds a filesystem labelled ``cidata`` and reads ``meta-data``,
``user-data`` and ``network-config`` from it. vocloud writes those from the template's context
(hostname, SSH keys, the NICs' addresses) and also ships every context variable verbatim as
``context.sh`` (``KEY='value'`` lines, OpenNebula's one-context convention), so images without
cloud-init — like the busybox test guest, which echoes them on its console — can still read them.

YAML is written by hand with JSON-quoted scalars (valid YAML), so no YAML library is needed and no
value can inject structure. The ISO is made by ``xorriso``, ``genisoimage`` or ``mkisofs``,
whichever is installed (Debian: ``xorriso`` or ``genisoimage``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from pathlib import Path

from vocloud.drivers.base import DomainSpec, NicSpec
from vocloud.errors import DriverError, InvalidInput

SEED_LABEL = "cidata"
CONTEXT_FILE = "context.sh"
GUEST_CONTEXT_PATH = "/etc/vocloud/context.sh"
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")


def _q(value: str) -> str:
    """A YAML scalar that is always a string, whatever the value looks like ("yes", "1", "- x")."""
    return json.dumps(value, ensure_ascii=False)


def shell_quote(value: str) -> str:
    """Single-quote for POSIX sh: the only character needing care inside '' is ' itself."""
    return "'" + value.replace("'", "'\\''") + "'"


def validate_context(context: Mapping[str, str]) -> None:
    """Reject keys a shell cannot hold and hostnames DNS cannot, before anything is written."""
    for key in context:
        if not _KEY.match(key):
            raise InvalidInput(f"context variable name {key!r} is not a valid identifier "
                               "(letters, digits and _, not starting with a digit)", key=key)
    host = context.get("HOSTNAME") or context.get("SET_HOSTNAME")
    if host is not None and not _HOSTNAME.match(host):
        raise InvalidInput(f"context HOSTNAME {host!r} is not a valid host name", key="HOSTNAME")


def hostname_for(spec: DomainSpec) -> str:
    """The context's hostname if set, else one derived from the VM name that DNS will accept."""
    explicit = spec.context.get("HOSTNAME") or spec.context.get("SET_HOSTNAME")
    if explicit:
        return explicit
    cleaned = re.sub(r"[^A-Za-z0-9-]+", "-", spec.name).strip("-")[:63].strip("-")
    return cleaned or spec.deploy_id


def context_sh(context: Mapping[str, str]) -> str:
    return "".join(f"{k}={shell_quote(v)}\n" for k, v in sorted(context.items()))


def meta_data(spec: DomainSpec) -> str:
    return f"instance-id: {_q(spec.deploy_id)}\nlocal-hostname: {_q(hostname_for(spec))}\n"


def ssh_keys(context: Mapping[str, str]) -> list[str]:
    """``SSH_PUBLIC_KEY`` may hold several keys, one per line, as OpenNebula allows."""
    raw = context.get("SSH_PUBLIC_KEY", "")
    return [line.strip() for line in raw.splitlines() if line.strip()]


#: The cloud-init part type of a user's user-data, by its first line (cloud-init's own rule).
_USER_PART_TYPES = (("#cloud-config-archive", "cloud-config-archive"), ("#cloud-config", "cloud-config"),
                    ("#cloud-boothook", "cloud-boothook"), ("#include", "x-include-url"),
                    ("#part-handler", "part-handler"), ("#upstart-job", "upstart-job"),
                    ("#!", "x-shellscript"))


def users_user_data(context: Mapping[str, str]) -> str | None:
    """The user's own user-data (EC2's UserData, OpenNebula's USER_DATA), decoded, if any.

    ``USER_DATA_ENCODING=base64`` (how the EC2 front-end stores it) is decoded; data that is not
    UTF-8 text is left out of the seed (it stays in context.sh, still base64)."""
    raw = context.get("USER_DATA")
    if not raw:
        return None
    if context.get("USER_DATA_ENCODING", "").lower() == "base64":
        try:
            return base64.b64decode(raw, validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return None
    return raw


def user_data(spec: DomainSpec) -> str:
    """vocloud's cloud-config, and the user's own user-data beside it when there is one (a MIME
    multipart document: cloud-init runs both parts)."""
    own = _vocloud_cloud_config(spec)
    theirs = users_user_data(spec.context)
    if theirs is None:
        return own
    subtype = next((t for prefix, t in _USER_PART_TYPES if theirs.startswith(prefix)), "plain")
    msg = MIMEMultipart()
    msg.attach(MIMEText(own, "cloud-config", "utf-8"))
    part = MIMEText(theirs, subtype, "utf-8")
    part.add_header("Content-Disposition", "attachment", filename="user-data")
    msg.attach(part)
    msg.set_boundary("vocloud-" + hashlib.sha256((own + theirs).encode()).hexdigest()[:32])
    return msg.as_string()


def _vocloud_cloud_config(spec: DomainSpec) -> str:
    lines = ["#cloud-config", f"hostname: {_q(hostname_for(spec))}"]
    keys = ssh_keys(spec.context)
    if keys:
        lines.append("ssh_authorized_keys:")
        lines += [f"  - {_q(k)}" for k in keys]
    payload = base64.b64encode(context_sh(spec.context).encode()).decode()
    lines += [
        "write_files:",
        f"  - path: {_q(GUEST_CONTEXT_PATH)}",
        "    permissions: \"0600\"",
        "    encoding: b64",
        f"    content: {_q(payload)}",
    ]
    return "\n".join(lines) + "\n"


def _prefix(mask: str | None) -> int:
    if not mask:
        return 24
    if mask.isdigit():
        return int(mask)
    try:
        return sum(bin(int(octet)).count("1") for octet in mask.split("."))
    except ValueError:
        raise InvalidInput(f"bad network mask {mask!r} in context") from None


def network_config(nics: Sequence[NicSpec], context: Mapping[str, str]) -> str:
    """Netplan v2: each NIC matched by MAC, static address; gateway and DNS from ETHn_* context."""
    lines = ["version: 2", "ethernets:"]
    if not nics:
        return "version: 2\nethernets: {}\n"
    for i, nic in enumerate(nics):
        pre = f"ETH{i}_"
        address = f"{nic.ip}/{_prefix(context.get(pre + 'MASK'))}"
        lines += [
            f"  eth{i}:",
            "    match:",
            f"      macaddress: {_q(nic.mac.lower())}",
            f"    set-name: {_q(f'eth{i}')}",
            f"    addresses: [{_q(address)}]",
        ]
        gateway = context.get(pre + "GATEWAY")
        if gateway:
            lines.append(f"    gateway4: {_q(gateway)}")
        dns = context.get(pre + "DNS") or context.get("DNS")
        if dns:
            servers = ", ".join(_q(s) for s in dns.split())
            lines.append(f"    nameservers: {{addresses: [{servers}]}}")
    return "\n".join(lines) + "\n"


def seed_files(spec: DomainSpec) -> dict[str, str]:
    """The files of the seed, by name; pure, so unit tests check content without building an ISO."""
    validate_context(spec.context)
    return {
        "meta-data": meta_data(spec),
        "user-data": user_data(spec),
        "network-config": network_config(spec.nics, spec.context),
        CONTEXT_FILE: context_sh(spec.context),
    }


def iso_tool() -> list[str]:
    """The argv prefix of an installed mkisofs-compatible tool."""
    if shutil.which("xorriso"):
        return ["xorriso", "-as", "mkisofs"]
    for name in ("genisoimage", "mkisofs"):
        if shutil.which(name):
            return [name]
    raise DriverError("no ISO tool to build the context CD-ROM: install Debian's xorriso or genisoimage")


def write_iso(files: Mapping[str, str], dest: Path) -> Path:
    """Write ``files`` to an ISO9660 (Rock Ridge + Joliet) image labelled ``cidata``."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vocloud-seed-") as tmp:
        root = Path(tmp) / "seed"
        root.mkdir()
        for name, text in files.items():
            (root / name).write_text(text, encoding="utf-8")
        partial = dest.with_name(dest.name + ".part")
        argv = [*iso_tool(), "-quiet", "-output", str(partial), "-volid", SEED_LABEL,
                "-joliet", "-rock", str(root)]
        proc = subprocess.run(argv, capture_output=True, text=True)
        if proc.returncode != 0:
            partial.unlink(missing_ok=True)
            raise DriverError(f"building the context ISO failed: {proc.stderr.strip()[-300:]}")
        partial.chmod(0o600)  # the seed may carry secrets meant for this VM only
        partial.replace(dest)
    return dest


def build_seed_iso(spec: DomainSpec, dest: Path) -> Path:
    """The per-VM NoCloud seed at ``dest``; raises InvalidInput before writing on a bad context."""
    return write_iso(seed_files(spec), dest)
