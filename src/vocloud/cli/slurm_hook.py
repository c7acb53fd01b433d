"""``python -m vocloud.cli.slurm_hook VERB ...`` == ``vocloud slurm VERB ...``: what the Slurm
power-saving wrappers run (``vocloud slurm wrappers`` writes them).

A module of its own, above both ``cli.main`` and ``cli.commands.slurm``, so that neither imports
the other (the wrappers once ran ``cli/commands/slurm.py`` itself, which had to import the main
CLI back: an import cycle).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from vocloud.cli import main as cli_main


def main(argv: Sequence[str] | None = None) -> int:
    """The main CLI (its error handling: one line and exit 2) on ``slurm VERB ...``."""
    # slurmctld starts its programs with stdout/stderr closed (Python then has no sys.stdout):
    # what they print goes nowhere, but printing must not crash the hook after its work is done.
    for name in ("stdin", "stdout", "stderr"):
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, "r" if name == "stdin" else "w"))  # noqa: SIM115
    return cli_main.run(["slurm", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
