"""The worker guest's init reads a burst worker's context from EC2 user data (worker-init.sh).

The block of ``/init`` that does it runs here under busybox ``sh`` (the guest's shell) with the
context a second site would hand it: the first site's ec2 driver encodes the worker context
(``_user_data``), the second site's EC2 front-end stores it base64 as ``USER_DATA``. The site's own
context wins; the text is parsed, never run; anything but ``KEY='value'`` lines fails the worker.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
from importlib import resources
from pathlib import Path

import pytest

from vocloud.drivers.context import context_sh
from vocloud.drivers.vmm.ec2 import _user_data

SCRIPT = resources.files("vocloud.guest").joinpath("worker-init.sh").read_text()
SHOWN = ("SLURM_NODENAME", "SLURM_CONF_SERVER", "MUNGE_KEY", "ETH0_IP", "PWNED",
         "USER_DATA", "PATH")

pytestmark = pytest.mark.skipif(shutil.which("busybox") is None, reason="needs busybox")


def _block() -> str:
    start = SCRIPT.index('if [ -n "$USER_DATA" ]; then')
    return SCRIPT[start:SCRIPT.index("\nfi\n", start) + 4]


def run(context: dict[str, str], tmp: Path) -> tuple[int, dict[str, str], str]:
    """The block after ``context.sh`` set ``context``: exit status, the variables, the output."""
    show = "".join(f'echo "{v}=${{{v}-unset}}"\n' for v in SHOWN)
    script = ('say() { echo "VOCLOUD-WORKER $*"; }\n'
              'fail() { echo "VOCLOUD-WORKER-FAILED $*"; exit 3; }\n'
              + context_sh(context) + _block().replace("/run/user-data", str(tmp / "user-data"))
              + show)
    proc = subprocess.run(["busybox", "sh", "-c", script], capture_output=True, text=True,
                          timeout=30, cwd=tmp, env={"PATH": "/usr/bin:/bin"})
    values = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line
                  and not line.startswith("VOCLOUD-"))
    return proc.returncode, values, proc.stdout + proc.stderr


def ec2(text: str) -> dict[str, str]:
    return {"USER_DATA": base64.b64encode(text.encode()).decode(), "USER_DATA_ENCODING": "base64"}


def test_the_driver_s_user_data_fills_in_what_the_site_s_context_does_not_say(tmp_path: Path) -> None:
    key = base64.b64encode(b"\x00\x01munge" * 20).decode()
    worker = {"SLURM_NODENAME": "atlas-wn-3", "HOSTNAME": "atlas-wn-3", "MUNGE_KEY": key,
              "SLURM_CONF_SERVER": "10.250.1.1:6817", "ETH0_IP": "10.254.0.12",
              "SLURM_DYNAMIC_CONF": "CPUs=1 RealMemory=200 Feature=vo_atlas"}
    site = {"ETH0_IP": "10.248.13.10", "ETH0_MASK": "255.255.255.0", **ec2(_user_data(worker))}
    rc, got, out = run(site, tmp_path)
    assert rc == 0, out
    assert (got["SLURM_NODENAME"], got["MUNGE_KEY"]) == ("atlas-wn-3", key)
    assert got["SLURM_CONF_SERVER"] == "10.250.1.1:6817"
    assert got["ETH0_IP"] == "10.248.13.10"  # the running site's network, not the first site's lease
    assert got["USER_DATA"] == "unset" and got["PATH"] == "/usr/bin:/bin"
    # HOSTNAME is the shell's own variable (busybox sets it): init's, so not taken; 4 are
    assert "VOCLOUD-WORKER context: 4 variables from user data" in out, out
    assert key not in out.replace(f"MUNGE_KEY={key}", "")  # said nowhere but by the test's echo
    assert not (tmp_path / "user-data").exists()


def test_plain_user_data_and_no_user_data(tmp_path: Path) -> None:
    rc, got, out = run({"USER_DATA": "SLURM_NODENAME='w1'\n\n# a comment\n"}, tmp_path)
    assert rc == 0 and got["SLURM_NODENAME"] == "w1", out
    rc, got, out = run({"SLURM_NODENAME": "local"}, tmp_path)
    assert rc == 0 and got["SLURM_NODENAME"] == "local" and "user data" not in out, out


@pytest.mark.parametrize(("text", "why"), [
    ("PWNED='$(touch pwned)'\nSLURM_NODENAME='`touch pwned`'\n", None),  # literal, never run
    ("touch pwned\n", "line 1 is not KEY='value'"),
    ("SLURM_NODENAME='w1'\nslurm_nodename='w1'\n", "line 2 is not KEY='value'"),
    ("SLURM_NODENAME=w1\n", "line 1 (SLURM_NODENAME): the value is not in single quotes"),
    ("PWNED='a'\\''$(touch pwned)'\\''b'\n", "line 1 (PWNED): the value holds a quote"),
    ("PWNED='x' ; touch pwned\n", "line 1 (PWNED): the value is not in single quotes"),
    ("A-B='x'\n", "line 1 is not KEY='value'"),
])
def test_hostile_user_data_is_never_run(tmp_path: Path, text: str, why: str | None) -> None:
    rc, got, out = run(ec2(text), tmp_path)
    assert not (tmp_path / "pwned").exists(), out
    if why is None:
        assert rc == 0, out
        assert got["PWNED"] == "$(touch pwned)" and got["SLURM_NODENAME"] == "`touch pwned`", out
    else:
        assert rc == 3 and f"VOCLOUD-WORKER-FAILED user data {why}" in out, out


def test_user_data_that_is_not_base64_fails_the_worker(tmp_path: Path) -> None:
    rc, _, out = run({"USER_DATA": "not base64!", "USER_DATA_ENCODING": "base64"}, tmp_path)
    assert rc == 3 and "USER_DATA is not base64" in out, out
