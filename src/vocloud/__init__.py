"""vocloud: a cloud toolkit for grid and batch computing sites."""

__version__ = "0.1.0"
