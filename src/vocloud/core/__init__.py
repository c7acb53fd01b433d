"""Pure decision cores shared as-is by the daemon and the simulator: no I/O, no clock."""
