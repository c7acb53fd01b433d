"""The web dashboard served at ``/ui/``: static files only (docs/operations-ui.md)."""
