"""``vocloud demo``: the VO-cluster demo (``cluster``, the README's first command) and the older
plain-VM demo (``vms``, ``vocloud demo --vms N``). Both drive a daemon they start through the
shared REST client (vocloud/client.py), as any user would."""

from vocloud.demo.cluster import Options, run

__all__ = ["Options", "run"]
