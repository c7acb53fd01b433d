"""``vocloud serve`` and ``vocloud db``: the commands that run on the front-end itself.

Why imports are inside the functions: the daemon pulls in uvicorn, FastAPI and SQLAlchemy; every
other ``vocloud`` command only talks HTTP and should start in a fraction of a second.
"""

import signal
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from vocloud.cli import output as out
from vocloud.cli.errors import CliError

if TYPE_CHECKING:
    from vocloud.config import Settings
    from vocloud.store.db import Database


class _Terminated(Exception):
    """SIGTERM arrived: uvicorn re-raises it after its graceful shutdown, which is a normal stop."""


def _on_sigterm(_signum: int, _frame: object) -> None:
    raise _Terminated


class Policy(StrEnum):
    packing = "packing"
    striping = "striping"
    load_aware = "load-aware"
    custom = "custom"


DataDirOpt = Annotated[Path | None, typer.Option(
    "--data-dir", help="Data directory (default: $VOCLOUD_HOME or ~/.local/share/vocloud).")]
DbUrlOpt = Annotated[str | None, typer.Option(
    "--db-url", help="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/vocloud (default: SQLite).")]


def _settings(data_dir: Path | None, **overrides: object) -> "Settings":
    from vocloud.config import load_settings
    from vocloud.errors import VocloudError

    try:
        return load_settings(data_dir.expanduser() if data_dir else None, **overrides)
    except VocloudError as exc:
        raise CliError(exc.message) from None


def serve(
    data_dir: DataDirOpt = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="TCP port (default 2633).")] = None,
    db_url: DbUrlOpt = None,
    policy: Annotated[Policy | None, typer.Option(help="Scheduling policy (default packing).")] = None,
    rank: Annotated[str | None, typer.Option(help="Rank expression for --policy custom.")] = None,
    log_level: Annotated[str | None, typer.Option(help="debug, info, warning or error.")] = None,
) -> None:
    """Run the daemon: the REST API plus the scheduler, lifecycle and monitor loops."""
    from vocloud.errors import VocloudError

    if policy is Policy.custom and not rank:
        raise CliError("--policy custom needs --rank EXPR, e.g. --rank '-RUNNING_VMS'")
    settings = _settings(data_dir, host=host, port=port, db_url=db_url,
                         sched_policy=policy.value if policy else None, sched_rank=rank,
                         log_level=log_level)
    # uvicorn stops gracefully on SIGTERM and then re-sends the signal to the previous handler;
    # this one turns that into exit code 0, so supervisors and scripts see a clean, asked-for stop.
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        from vocloud.app.daemon import serve as run

        run(settings)
    except _Terminated:
        pass
    except VocloudError as exc:
        raise CliError(exc.message) from None
    finally:
        signal.signal(signal.SIGTERM, previous)


db_app = typer.Typer(help="Store schema migrations.", no_args_is_help=True)


def _database(data_dir: Path | None, db_url: str | None) -> "Database":
    from vocloud.errors import VocloudError
    from vocloud.store.db import Database

    settings = _settings(data_dir, db_url=db_url)
    try:
        return Database(settings.database_url)
    except VocloudError as exc:
        raise CliError(exc.message) from None


@db_app.command("upgrade")
def db_upgrade(data_dir: DataDirOpt = None, db_url: DbUrlOpt = None) -> None:
    """Bring the store's schema to the newest revision (serve does this at start)."""
    from sqlalchemy.exc import SQLAlchemyError

    from vocloud.store import migrate

    db = _database(data_dir, db_url)
    try:
        before = migrate.current_revision(db)
        migrate.upgrade(db)
        after = migrate.current_revision(db)
    except SQLAlchemyError as exc:
        reason = exc.args[0] if exc.args else exc
        raise CliError(f"cannot migrate the store: {exc.__class__.__name__}: {reason}") from None
    finally:
        db.dispose()
    out.echo(f"already at {after}" if before == after else f"upgraded {before or 'empty'} -> {after}")


@db_app.command("current")
def db_current(data_dir: DataDirOpt = None, db_url: DbUrlOpt = None) -> None:
    """Print the store's schema revision and the newest one this vocloud knows."""
    from sqlalchemy.exc import SQLAlchemyError

    from vocloud.store import migrate

    db = _database(data_dir, db_url)
    try:
        current, head = migrate.current_revision(db), migrate.head_revision()
    except SQLAlchemyError as exc:
        raise CliError(f"cannot read the store: {exc.__class__.__name__}") from None
    finally:
        db.dispose()
    out.echo(f"current: {current or 'empty'}")
    out.echo(f"head:    {head}")
    out.echo("up to date" if current == head else "behind: run `vocloud db upgrade`")
