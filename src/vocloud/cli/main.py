"""The ``vocloud`` command: assembles the nouns and turns every user error into exit code 2.

Why Typer runs with ``standalone_mode=False``: Click and Typer would otherwise print their own
multi-line (and, with Rich, boxed) error panels; a site's scripts and admins get one line on
stderr instead, for a bad option as for a refused request, and never a traceback.
"""

import importlib
import os
import sys
from collections.abc import Sequence
from typing import Annotated

import typer

from vocloud import __version__
from vocloud.cli import demo
from vocloud.cli.commands import (
    acls,
    daemon,
    datastores,
    groups,
    hosts,
    images,
    ops,
    pools,
    quotas,
    slurm,
    status,
    templates,
    users,
    vms,
    vnets,
)
from vocloud.cli.errors import EXIT_USER_ERROR, CliError
from vocloud.cli.output import warn
from vocloud.cli.state import CliState


def _version(value: bool) -> None:
    if value:
        typer.echo(f"vocloud {__version__}")
        raise typer.Exit()


def _root(
    ctx: typer.Context,
    url: Annotated[str | None, typer.Option(
        help="Daemon endpoint (env VOCLOUD_URL; default from the local settings, http://127.0.0.1:2633).")
    ] = None,
    token: Annotated[str | None, typer.Option(
        help="API token (env VOCLOUD_TOKEN; else ~/.config/vocloud/token; else <data dir>/admin.token).")
    ] = None,
    json_: Annotated[bool, typer.Option("--json", help="Raw JSON output for every read command.")] = False,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version.")] = False,
) -> None:
    """vocloud: an IaaS manager for grid sites. Talks to `vocloud serve` over its REST API."""
    ctx.obj = CliState(url=url, token=token, json=json_)


def _register_simulator(app: typer.Typer) -> None:
    """Add ``vocloud simulate`` when the simulator's CLI module is installed; skip it otherwise."""
    try:
        module = importlib.import_module("vocloud.cli.simulate")
    except ModuleNotFoundError as exc:
        if exc.name in ("vocloud.cli.simulate", None):
            return
        warn(f"vocloud: the simulate command is unavailable: {exc}")
        return
    except Exception as exc:  # a broken plug-in must not take the whole CLI down
        warn(f"vocloud: the simulate command is unavailable: {exc.__class__.__name__}: {exc}")
        return
    register = getattr(module, "register", None)
    if callable(register):
        register(app)


def build_app() -> typer.Typer:
    app = typer.Typer(name="vocloud", no_args_is_help=True, pretty_exceptions_enable=False,
                      context_settings={"help_option_names": ["-h", "--help"]})
    app.callback()(_root)
    app.command("serve")(daemon.serve)
    app.command("demo")(demo.demo)
    app.command("acct")(ops.acct)
    app.command("audit")(ops.audit)
    app.command("status")(status.status)
    app.add_typer(daemon.db_app, name="db")
    for name, sub in (("host", hosts.app), ("vm", vms.app), ("template", templates.app),
                      ("image", images.app), ("vnet", vnets.app), ("user", users.app),
                      ("group", groups.app), ("quota", quotas.app), ("acl", acls.app),
                      ("pool", pools.app), ("slurm", slurm.app),
                      ("datastore", datastores.app)):
        app.add_typer(sub, name=name)
    _register_simulator(app)
    return app


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _usage_error(exc: typer.TyperException) -> int:
    ctx = getattr(exc, "ctx", None)
    if type(exc).__name__ == "NoArgsIsHelpError":  # `vocloud vm`: Typer already printed the help
        return EXIT_USER_ERROR
    message = _one_line(exc.format_message())
    if ctx is not None:
        warn(f"error: {message} (see `{ctx.command_path} --help`)")
        return EXIT_USER_ERROR
    warn(f"error: {message}")
    return exc.exit_code if exc.exit_code != 1 else EXIT_USER_ERROR


def run(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the exit code (what :func:`main` exits with)."""
    app = build_app()
    try:
        rv = app(args=list(argv) if argv is not None else None, prog_name="vocloud",
                 standalone_mode=False)
    except CliError as exc:
        warn(f"error: {exc.message}")
        return exc.exit_code
    except typer.TyperException as exc:  # Click's errors (bad option, missing argument, ...)
        return _usage_error(exc)
    except typer.Abort:
        warn("aborted")
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `vocloud vm list | head`: the reader has all it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0
    return rv if isinstance(rv, int) else 0


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
