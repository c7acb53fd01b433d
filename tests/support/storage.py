"""Small real disk images for storage tests (pseudo-random data, so a copy is a copy)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

from vocloud.drivers.base import DiskSpec, DomainSpec

MIB = 1024 * 1024


def make_base(path: Path, mib: int = 4, fmt: str = "qcow2", seed: int = 1) -> str:
    """A base image holding ``mib`` MiB of real (pseudo-random) data; returns its sha256."""
    raw = path.with_suffix(".src.raw")
    block = hashlib.sha256(str(seed).encode()).digest() * (MIB // 32)
    with raw.open("wb") as fh:
        for i in range(mib):
            fh.write(block[i % 32:] + block[: i % 32])
    if fmt == "raw":
        raw.rename(path)
    else:
        subprocess.run(["qemu-img", "convert", "-f", "raw", "-O", fmt, str(raw), str(path)], check=True)
        raw.unlink()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def info(path: str) -> dict[str, object]:
    out = subprocess.run(["qemu-img", "info", "--output=json", "-U", path], check=True,
                         capture_output=True).stdout
    doc: dict[str, object] = json.loads(out)
    return doc


def vm(deploy_id: str, *disks: DiskSpec) -> DomainSpec:
    return DomainSpec(vm_id=int(deploy_id.rsplit("-", 1)[1]), deploy_id=deploy_id, name=deploy_id,
                      cpu=1, vcpu=1, memory_mib=64, disks=disks)
