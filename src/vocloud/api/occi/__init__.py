"""OpenNebula's OCCI server (2.x-3.8), the API apache-libcloud's OpenNebula driver speaks."""

from vocloud.api.occi.routes import mount

__all__ = ["mount"]
