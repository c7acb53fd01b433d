"""What every part of the VO-cluster demo shares: the two VOs, a worker's size, the options the
CLI passes and the demo's one error type. Pure data, no I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from vocloud.errors import VocloudError

VOS = ("atlas", "cms")
WORKER_CPUS = 1
WORKER_MIB = 512
IDLE_TIMEOUT = 5
#: a pool worker's VM name (``atlas-wn3``), as the pool controller names them
WORKER = re.compile(r"^(" + "|".join(VOS) + r")-wn\d+$")


@dataclass(frozen=True, slots=True)
class Options:
    """What ``vocloud demo`` was asked for (the CLI's flags)."""

    jobs: dict[str, int] = field(default_factory=lambda: {"atlas": 6, "cms": 3})
    job_seconds: float = 15.0
    sim: bool = False
    boot_delay: float = 3.0  # a simulated worker's boot, seconds
    timeout: float = 900.0
    json: bool = False


class DemoError(VocloudError):
    """The demo could not finish; the message says what was awaited and what was seen."""
