"""Duration distributions for VM boot and shutdown times.

Boot time is the one VM overhead a trace cannot tell us, and its spread matters as much as its
mean (a long tail delays the first job of a burst), so it is a user choice: ``fixed:60``,
``uniform:30,120`` or ``lognormal:60,0.5`` (median 60 s, shape sigma 0.5, the usual fit for
boot times that are mostly fast with a few slow ones). Draws use the ``random.Random`` the caller
passes, never the global generator, so a run is reproducible from its seed.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from vocloud.errors import InvalidInput


@dataclass(frozen=True, slots=True)
class Duration:
    """A distribution of non-negative durations in seconds."""

    kind: str
    a: float
    b: float = 0.0

    def draw(self, rng: random.Random) -> float:
        if self.kind == "fixed":
            return self.a
        if self.kind == "uniform":
            return rng.uniform(self.a, self.b)
        return rng.lognormvariate(math.log(self.a), self.b)

    @property
    def mean(self) -> float:
        if self.kind == "fixed":
            return self.a
        if self.kind == "uniform":
            return (self.a + self.b) / 2
        return self.a * math.exp(self.b * self.b / 2)

    def __str__(self) -> str:
        if self.kind == "fixed":
            return f"fixed:{self.a:g}"
        return f"{self.kind}:{self.a:g},{self.b:g}"


def parse_duration(spec: str, what: str = "duration") -> Duration:
    """Parse ``fixed:S``, a bare number (fixed), ``uniform:LO,HI`` or ``lognormal:MEDIAN,SIGMA``."""
    text = spec.strip()
    kind, _, args = text.partition(":")
    if not args:
        kind, args = "fixed", text
    try:
        nums = [float(x) for x in args.split(",")]
    except ValueError:
        raise InvalidInput(
            f"{what} {spec!r}: expected fixed:S, uniform:LO,HI or lognormal:MEDIAN,SIGMA"
        ) from None
    if any(not math.isfinite(x) or x < 0 for x in nums):
        raise InvalidInput(f"{what} {spec!r}: values must be finite and >= 0")
    if kind == "fixed" and len(nums) == 1:
        return Duration("fixed", nums[0])
    if kind == "uniform" and len(nums) == 2:
        if nums[0] > nums[1]:
            raise InvalidInput(f"{what} {spec!r}: uniform needs LO <= HI")
        return Duration("uniform", nums[0], nums[1])
    if kind == "lognormal" and len(nums) == 2:
        if nums[0] <= 0:
            raise InvalidInput(f"{what} {spec!r}: lognormal median must be > 0")
        return Duration("lognormal", nums[0], nums[1])
    raise InvalidInput(f"{what} {spec!r}: expected fixed:S, uniform:LO,HI or lognormal:MEDIAN,SIGMA")
