"""One module per noun of the ``vocloud`` command (host, vm, template, ...), each a Typer app."""
