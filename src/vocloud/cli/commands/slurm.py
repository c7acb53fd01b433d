"""``vocloud slurm resume|suspend|resume-fail HOSTLIST``: Slurm's power-saving programs.

slurmctld runs ``ResumeProgram``, ``SuspendProgram`` and ``ResumeFailProgram`` as SlurmUser with
the hostlist as ``argv[1]`` and an environment of its own: no ``VOCLOUD_URL``, no
``VOCLOUD_TOKEN``, often no ``HOME``. So these commands find everything from one directory,
``--data-dir`` (the daemon's data directory): the daemon URL from its ``vocloud.toml`` (or
``url`` in ``powersave.toml``), the token from ``<data_dir>/admin.token`` (or ``token_file``),
the node -> VO rules from ``powersave.toml``. ``vocloud slurm wrappers DIR --data-dir D`` writes
the three scripts slurm.conf points at (``ResumeProgram`` takes no arguments of its own).

They return as soon as the requests are made: Slurm's ``ResumeTimeout`` covers the boot and
the guest's slurmd registering. Failures are one line on stderr (and in the log file) and exit
code 2, which slurmctld logs; nodes that could be handled are handled even when another fails.
The decisions are pure (:mod:`vocloud.elastic.powersave`); this module is the I/O around them.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import sys
import time
import tomllib
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, Annotated, Any
from urllib.parse import quote

import typer

from vocloud.batch.hostlist import compress, expand
from vocloud.cli import output as out
from vocloud.cli.client import Client
from vocloud.cli.credentials import ADMIN_TOKEN_FILE, Endpoint
from vocloud.cli.errors import ApiError, CliError
from vocloud.cli.state import state
from vocloud.elastic.powersave import (
    CONFIG_FILE,
    ENV_MAP,
    Act,
    Create,
    Fail,
    Keep,
    NodeRule,
    PowerSaveConfig,
    Shape,
    Step,
    parse_config,
    parse_env_map,
    plan_resume,
    plan_suspend,
    rule_for,
    seen_vms,
    shape_for,
)
from vocloud.errors import VocloudError

app = typer.Typer(help="Slurm power saving: ResumeProgram/SuspendProgram/ResumeFailProgram.",
                  no_args_is_help=True)

#: How long one API call may take: slurmctld waits for its programs, and a hung daemon must
#: surface as a logged failure well inside ResumeTimeout, not as a stuck hook.
TIMEOUT_S = 30.0
LOG_FILE = "slurm-powersave.log"
LOCK_FILE = "slurm-powersave.lock"

HostlistArg = Annotated[str, typer.Argument(
    metavar="HOSTLIST", help="Slurm hostlist, e.g. c[1-3],gpu01 (argv[1] from slurmctld).")]
DataDirOpt = Annotated[Path | None, typer.Option(
    "--data-dir", help="The daemon's data directory: URL, admin token and powersave.toml are read "
                       "from there (default: VOCLOUD_HOME or ~/.local/share/vocloud).")]
ConfigOpt = Annotated[Path | None, typer.Option(
    "--config", help="Rules file instead of <data-dir>/powersave.toml.")]


# --- where things are -------------------------------------------------------------------------


def _data_dir(opt: Path | None) -> Path:
    if opt is not None:
        return opt.expanduser()
    from vocloud.config import default_data_dir

    return default_data_dir()


def load_config(data_dir: Path, path: Path | None = None) -> PowerSaveConfig:
    """``powersave.toml`` (missing: no rules), with ``VOCLOUD_POWERSAVE_MAP`` replacing its rules."""
    path = path or data_dir / CONFIG_FILE
    doc: dict[str, Any] = {}
    if path.exists():
        try:
            doc = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise CliError(f"{path}: {exc}") from None
    try:
        config = parse_config(doc, str(path))
        env = os.environ.get(ENV_MAP)
        if env:
            config = PowerSaveConfig(parse_env_map(env), config.url, config.token_file, config.log_file)
    except VocloudError as exc:
        raise CliError(exc.message) from None
    return config


def endpoint(ctx: typer.Context, data_dir: Path, config: PowerSaveConfig) -> Endpoint:
    """URL and token from explicit options, else from the data directory alone (module doc).

    The shell's ``VOCLOUD_URL``/``VOCLOUD_TOKEN`` are deliberately not consulted: the same
    command must act the same when an admin tries it and when slurmctld runs it.
    """
    st = state(ctx)
    url = st.url or config.url
    if url is None:
        from vocloud.config import load_settings

        try:
            settings = load_settings(data_dir)
        except VocloudError as exc:
            raise CliError(exc.message) from None
        host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
        url = f"http://{host}:{settings.port}"
    if "://" not in url:
        url = "http://" + url
    if st.token:
        return Endpoint(url.rstrip("/"), st.token, "--token")
    token_path = Path(config.token_file).expanduser() if config.token_file else data_dir / ADMIN_TOKEN_FILE
    try:
        token = token_path.read_text().strip()
    except OSError as exc:
        raise CliError(f"cannot read the vocloud token {token_path}: {exc.strerror}") from None
    if not token:
        raise CliError(f"the vocloud token file {token_path} is empty")
    return Endpoint(url.rstrip("/"), token, str(token_path))


@contextlib.contextmanager
def _serialised(data_dir: Path) -> Iterator[None]:
    """One power-saving command at a time per data directory.

    Why: look-up-then-create is only idempotent if no second ``resume`` of the same node runs in
    between (slurmctld may start the next batch of nodes while the previous one is running).
    Best effort: a data directory this user cannot write is not a reason to refuse a boot.
    """
    f: IO[str] | None = None
    try:
        f = (data_dir / LOCK_FILE).open("a")
        fcntl.flock(f, fcntl.LOCK_EX)
    except OSError:
        f = None
    try:
        yield
    finally:
        if f is not None:
            f.close()


def _log(data_dir: Path, config: PowerSaveConfig, line: str) -> None:
    """Append one line to the power-saving log: slurmctld discards its programs' output."""
    path = Path(config.log_file).expanduser() if config.log_file else data_dir / LOG_FILE
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
    with contextlib.suppress(OSError), path.open("a") as f:
        f.write(f"{stamp} [{os.getpid()}] {line}\n")


# --- carrying the steps out -------------------------------------------------------------------


def _shapes(client: Client, rules: Sequence[NodeRule]) -> dict[NodeRule, Shape | str]:
    """Each rule's VM shape, completed from its VO's pool (looked up once per VO)."""
    pools: dict[str, dict[str, Any] | str | None] = {}
    shapes: dict[NodeRule, Shape | str] = {}
    for rule in dict.fromkeys(rules):
        if rule.vo not in pools:
            try:
                pools[rule.vo] = client.get(f"/pools/{quote(rule.vo, safe='')}")
            except ApiError as exc:
                pools[rule.vo] = None if exc.status == 404 else f"pool {rule.vo}: {exc.message}"
        pool = pools[rule.vo]
        if isinstance(pool, str):
            shapes[rule] = pool
            continue
        try:
            shapes[rule] = shape_for(rule, pool)
        except VocloudError as exc:
            shapes[rule] = exc.message
    return shapes


def _carry_out(client: Client, steps: Sequence[Step]) -> tuple[list[str], list[str]]:
    """Do each step; returns (done lines, failure lines). A failure never stops the others."""
    done: list[str] = []
    failed: list[str] = []
    skip: set[str] = set()  # nodes whose failed VM could not be removed: do not add another
    for step in steps:
        if step.node in skip:
            continue
        try:
            if isinstance(step, Fail):
                failed.append(f"{step.node}: {step.why}")
            elif isinstance(step, Keep):
                done.append(f"{step.node}: {step.why}")
            elif isinstance(step, Act):
                try:
                    row = client.post(f"/vms/{step.vm_id}/action", {"action": step.action})
                    done.append(f"{step.node}: vm {step.vm_id} {step.action} -> {row.get('state')}")
                except ApiError as exc:
                    if exc.status == 404:  # gone meanwhile: that is what was wanted
                        done.append(f"{step.node}: vm {step.vm_id} already gone")
                    elif exc.code == "IllegalAction" and step.action.startswith("terminate"):
                        done.append(f"{step.node}: vm {step.vm_id} already going ({exc.message})")
                    else:
                        raise
            else:
                assert isinstance(step, Create)
                body: dict[str, Any] = {"name": step.node}
                if step.shape.cores is not None:
                    body["cores"] = step.shape.cores
                if step.shape.memory is not None:
                    body["memory"] = step.shape.memory
                if step.shape.own_template is not None:
                    body["template"] = step.shape.own_template
                if step.shape.site_template is not None:
                    body["site_template"] = step.shape.site_template
                row = client.post(f"/pools/{quote(step.shape.vo, safe='')}/workers", body)
                site = f", site template {row['site_template']}" if row.get("site_template") else ""
                done.append(f"{step.node}: vm {row['id']} created from template {row['template']}"
                            f"{site} (VO {step.shape.vo}, as {row['owner']})")
        except ApiError as exc:
            failed.append(f"{step.node}: {exc.message}")
            if isinstance(step, Act):
                skip.add(step.node)
    return done, failed


def _run(ctx: typer.Context, verb: str, hostlist: str, data_dir_opt: Path | None,
         config_path: Path | None) -> None:
    data_dir = _data_dir(data_dir_opt)
    config = load_config(data_dir, config_path)
    try:
        nodes = expand(hostlist)
    except VocloudError as exc:
        _log(data_dir, config, f"{verb} {hostlist}: {exc.message}")
        raise CliError(exc.message) from None
    if not nodes:
        raise CliError("empty hostlist")
    try:
        ep = endpoint(ctx, data_dir, config)
        client = Client(ep, timeout=TIMEOUT_S)
        with _serialised(data_dir):
            vms = seen_vms(client.get("/vms"))
            if verb == "resume":
                rules = [r for n in nodes if (r := rule_for(n, config.rules)) is not None]
                steps = plan_resume(nodes, config.rules, _shapes(client, rules), vms)
            else:
                steps = plan_suspend(nodes, vms, hard=verb == "resume-fail")
            done, failed = _carry_out(client, steps)
    except CliError as exc:
        _log(data_dir, config, f"{verb} {compress(nodes)}: error: {exc.message}")
        raise
    for line in done:
        _log(data_dir, config, f"{verb} {line}")
        out.echo(line)
    for line in failed:
        _log(data_dir, config, f"{verb} FAILED {line}")
    if failed:
        raise CliError(f"slurm {verb}: {len(failed)} of {len(nodes)} nodes failed: " + "; ".join(failed))


@app.command("resume")
def resume(ctx: typer.Context, hostlist: HostlistArg, data_dir: DataDirOpt = None,
           config: ConfigOpt = None) -> None:
    """ResumeProgram: create a VM named as each node, from its VO's pool template."""
    _run(ctx, "resume", hostlist, data_dir, config)


@app.command("suspend")
def suspend(ctx: typer.Context, hostlist: HostlistArg, data_dir: DataDirOpt = None,
            config: ConfigOpt = None) -> None:
    """SuspendProgram: terminate each node's VM gracefully (the guest shuts down)."""
    _run(ctx, "suspend", hostlist, data_dir, config)


@app.command("resume-fail")
def resume_fail(ctx: typer.Context, hostlist: HostlistArg, data_dir: DataDirOpt = None,
                config: ConfigOpt = None) -> None:
    """ResumeFailProgram: the node never registered; destroy its VM (terminate-hard) and log it."""
    _run(ctx, "resume-fail", hostlist, data_dir, config)


# --- the scripts slurm.conf points at ---------------------------------------------------------

_PROGRAMS = {"resume": "ResumeProgram", "suspend": "SuspendProgram", "resume-fail": "ResumeFailProgram"}


def _command_prefix() -> list[str]:
    """How a wrapper starts this CLI: this interpreter, by absolute path, with ``-m``.

    Why not ``vocloud`` from PATH: slurmctld's PATH is minimal and the venv is not on it.
    """
    return [sys.executable, "-m", "vocloud.cli.slurm_hook"]


def wrapper_text(verb: str, data_dir: Path, config: Path | None = None) -> str:
    argv = [*_command_prefix(), verb, "--data-dir", str(data_dir)]
    if config is not None:
        argv += ["--config", str(config)]
    return ("#!/bin/sh\n"
            f"# Slurm {_PROGRAMS[verb]} for vocloud (written by `vocloud slurm wrappers`).\n"
            "# slurmctld passes the hostlist as $1 and a bare environment: all settings come\n"
            "# from the data directory.\n"
            "PATH=/usr/sbin:/usr/bin:/sbin:/bin; export PATH\n"
            f"exec {shlex.join(argv)} \"$1\"\n")


@app.command("wrappers")
def wrappers(dest: Annotated[Path, typer.Argument(help="Directory for the three scripts.")],
             data_dir: DataDirOpt = None, config: ConfigOpt = None) -> None:
    """Write resume.sh, suspend.sh and resume-fail.sh, and print the slurm.conf lines."""
    dd = _data_dir(data_dir).resolve()
    try:
        dest.mkdir(parents=True, exist_ok=True)
        for verb, program in _PROGRAMS.items():
            path = dest.resolve() / f"{verb}.sh"
            path.write_text(wrapper_text(verb, dd, config.resolve() if config else None))
            path.chmod(0o755)
            out.echo(f"{program}={path}")
    except OSError as exc:
        raise CliError(f"cannot write the wrappers in {dest}: {exc.strerror}") from None
