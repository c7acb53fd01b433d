"""The README's first command runs ``vocloud demo``: it must work, with real guests and without."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.e2e.conftest import clean_env, vocloud_command
from tests.integration.conftest import guest_image, qemu_available  # noqa: F401
from vocloud.guest.build import GuestImage


def _demo(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = clean_env(tmp_path / "home")
    env["VOCLOUD_HOME"] = str(tmp_path / "data")
    return subprocess.run([*vocloud_command(), "demo", *args], capture_output=True, text=True,
                          timeout=600, env=env)


def test_demo_with_simulated_guests(tmp_path: Path) -> None:
    r = _demo(tmp_path, "--sim", "--vms", "5", "--boot-delay", "0.2")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "VMs created 5" in r.stdout and "DONE 5" in r.stdout
    assert "stays PENDING: no host has 1 CPU" in r.stdout or "RUNNING" in r.stdout
    assert "daemon stopped (exit 0)" in r.stdout


@pytest.mark.slow
def test_demo_boots_real_guests(tmp_path: Path, guest_image: GuestImage) -> None:  # noqa: F811
    r = _demo(tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "qemu host" in r.stdout
    assert "VOCLOUD-CONTEXT VALUE=hello-from-demo" in r.stdout
    assert "ACPI power-off" in r.stdout and "daemon stopped (exit 0)" in r.stdout
