"""Network drivers: attach guest NICs to the host's networks (see :mod:`.bridge`)."""

from vocloud.drivers.net.bridge import BridgeDriver, tap_name

__all__ = ["BridgeDriver", "tap_name"]
