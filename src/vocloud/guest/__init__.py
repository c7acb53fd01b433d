"""Tiny test guest built from Debian packages (see :mod:`vocloud.guest.build`)."""
