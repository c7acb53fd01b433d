"""Shared test support: daemons, ports, waits, batch-system cells, fakes. Test modules import
from here, never from each other."""
