"""``python -m vocloud.app.serve_main``: the daemon on settings from the environment only.

Used by the demo, benchmarks and tests to start a daemon without going through the CLI.
"""

from __future__ import annotations

import sys

from vocloud.app.daemon import serve
from vocloud.config import load_settings
from vocloud.errors import VocloudError


def main() -> int:
    try:
        serve(load_settings())
    except VocloudError as exc:
        print(f"vocloud: {exc.message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
