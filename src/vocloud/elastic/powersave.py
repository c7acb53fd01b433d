"""Slurm power saving, decided purely: which VO and template a node boots from, and what
``resume``, ``suspend`` and ``resume-fail`` must do to the VMs that already carry its name.

The second way to integrate with Slurm (the pool controller watching the queue is the first):
``State=CLOUD`` nodes stay in ``slurm.conf``; when a job needs one, slurmctld runs
``ResumeProgram <hostlist>``; when a node has idled ``SuspendTime`` it runs ``SuspendProgram``;
when a resumed node has not registered within ``ResumeTimeout`` it runs ``ResumeFailProgram``.
``vocloud slurm resume|suspend|resume-fail`` (``cli/commands/slurm.py``) are those programs. The
contract that ties a VM to its node is the name: **the VM is named as the node**, and the guest
starts ``slurmd -N <its VM name>`` (the worker-registration convention of the pools).

Everything here is a pure function of the configuration and of the VMs the API listed, so the
decisions are unit-tested without a daemon or a Slurm, and the CLI only does I/O:

* :func:`parse_config` reads the ``powersave.toml`` document (or the ``VOCLOUD_POWERSAVE_MAP``
  variable, :func:`parse_env_map`) into :class:`PowerSaveConfig`; every mistake is an
  :class:`~vocloud.errors.InvalidInput` naming the file and the entry.
* :func:`rule_for` maps a node name to its rule: an explicit hostlist match wins over a prefix,
  the longest prefix over a shorter one.
* :func:`shape_for` completes a rule with its VO pool's template, cores and memory.
* :func:`plan_resume` / :func:`plan_suspend` turn node names plus the live VMs into steps.

Idempotency is what Slurm needs: it may call ``resume`` again for a node it already resumed
(after a controller restart, or for a job that was requeued), and ``suspend`` for a node whose
VM is already gone. A live VM of that name is success, a VM that is shutting down is left to
finish while a fresh one is created, a failed one is destroyed and replaced.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vocloud.batch.hostlist import expand
from vocloud.errors import InvalidInput
from vocloud.model.lifecycle import VM_TABLE, VMState

S = VMState

#: A VM in one of these states is (or is about to be) the node's guest: resume has nothing to do.
UP: frozenset[VMState] = frozenset({S.PENDING, S.PROLOG, S.BOOT, S.RUNNING, S.REBOOT, S.MIGRATE})
#: Stopped but kept: resume wakes it instead of creating a second VM of the same name.
WAKE: dict[VMState, str] = {S.HOLD: "release", S.POWEROFF: "resume", S.SUSPENDED: "resume",
                            S.STOPPED: "resume", S.UNDEPLOYED: "resume", S.UNKNOWN: "resume"}
#: Broken: resume destroys it and boots a fresh one.
BROKEN: frozenset[VMState] = frozenset({S.PROLOG_FAILURE, S.BOOT_FAILURE, S.EPILOG_FAILURE})
#: On its way out (an earlier suspend): resume boots a fresh VM beside it.
LEAVING: frozenset[VMState] = frozenset({
    S.SHUTDOWN, S.SHUTDOWN_HARD, S.SHUTDOWN_POWEROFF, S.SHUTDOWN_UNDEPLOY, S.EPILOG, S.EPILOG_STOP,
    S.EPILOG_UNDEPLOY, S.SAVE_SUSPEND, S.SAVE_STOP,
})

ENV_MAP = "VOCLOUD_POWERSAVE_MAP"
CONFIG_FILE = "powersave.toml"


@dataclass(frozen=True)
class NodeRule:
    """Which VO (and optionally which template and shape) boots the nodes a rule matches."""

    vo: str
    prefix: str = ""
    nodes: frozenset[str] = frozenset()
    template: str | None = None
    cores: int | None = None
    memory: int | None = None  # MiB
    site_template: str | None = None

    def matches(self, node: str) -> bool:
        return node in self.nodes if self.nodes else node.startswith(self.prefix)


@dataclass(frozen=True)
class PowerSaveConfig:
    """``powersave.toml``: the rules, and where the daemon and its token are (both optional)."""

    rules: tuple[NodeRule, ...] = ()
    url: str | None = None
    token_file: str | None = None
    log_file: str | None = None


@dataclass(frozen=True)
class Shape:
    """What one node's VM is created from."""

    vo: str
    template: str
    cores: int | None
    memory: int | None
    #: the rule's own template / site template (None: the pool's, as the daemon resolves them)
    own_template: str | None = None
    site_template: str | None = None


@dataclass(frozen=True)
class SeenVM:
    """A VM as ``GET /vms`` lists it (only what the decisions need)."""

    id: int
    name: str
    state: VMState


# --- steps: what the CLI carries out, in order ------------------------------------------------


@dataclass(frozen=True)
class Create:
    node: str
    shape: Shape


@dataclass(frozen=True)
class Act:
    """A lifecycle action on an existing VM (``terminate``, ``terminate-hard``, ``resume``...)."""

    node: str
    vm_id: int
    action: str
    was: VMState


@dataclass(frozen=True)
class Keep:
    """Nothing to do: the node's VM is already up (resume) or already gone/going (suspend)."""

    node: str
    vm_id: int | None
    why: str


@dataclass(frozen=True)
class Fail:
    """This node cannot be handled (no rule, no template); the others still are."""

    node: str
    why: str


Step = Create | Act | Keep | Fail


# --- configuration ----------------------------------------------------------------------------


def _opt_int(entry: Mapping[str, Any], key: str, where: str) -> int | None:
    raw = entry.get(key)
    if raw is None:
        return None
    if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
        raise InvalidInput(f"{where}: {key} must be a positive integer, got {raw!r}")
    return raw


def _opt_str(doc: Mapping[str, Any], key: str, where: str) -> str | None:
    raw = doc.get(key)
    if raw is None:
        return None
    if not isinstance(raw, str) or not raw.strip():
        raise InvalidInput(f"{where}: {key} must be a non-empty string, got {raw!r}")
    return raw.strip()


def parse_config(doc: Mapping[str, Any], source: str = CONFIG_FILE) -> PowerSaveConfig:
    """The parsed TOML document of ``powersave.toml``; see ``docs/slurm-powersave.md``."""
    known = {"url", "token_file", "log_file", "node"}
    unknown = sorted(set(doc) - known)
    if unknown:
        raise InvalidInput(f"{source}: unknown setting {unknown[0]!r} (known: {', '.join(sorted(known))})")
    entries = doc.get("node", [])
    if not isinstance(entries, list):
        raise InvalidInput(f"{source}: 'node' must be an array of tables ([[node]])")
    rules: list[NodeRule] = []
    for i, entry in enumerate(entries, 1):
        where = f"{source}: [[node]] #{i}"
        if not isinstance(entry, dict):
            raise InvalidInput(f"{where} is not a table")
        bad = sorted(set(entry) - {"vo", "prefix", "nodes", "template", "site_template", "cores",
                                   "memory"})
        if bad:
            raise InvalidInput(f"{where}: unknown key {bad[0]!r}")
        vo = _opt_str(entry, "vo", where)
        if vo is None:
            raise InvalidInput(f"{where}: 'vo' is required")
        prefix = entry.get("prefix")
        nodes = entry.get("nodes")
        if (prefix is None) == (nodes is None):
            raise InvalidInput(f"{where}: give exactly one of 'prefix' or 'nodes' (a hostlist)")
        if prefix is not None and (not isinstance(prefix, str) or not prefix):
            raise InvalidInput(f"{where}: 'prefix' must be a non-empty string")
        names: frozenset[str] = frozenset()
        if nodes is not None:
            if not isinstance(nodes, str):
                raise InvalidInput(f"{where}: 'nodes' must be a hostlist string like \"c[1-4]\"")
            try:
                names = frozenset(expand(nodes))
            except InvalidInput as exc:
                raise InvalidInput(f"{where}: {exc.message}") from None
            if not names:
                raise InvalidInput(f"{where}: 'nodes' names no node")
        rules.append(NodeRule(vo=vo, prefix=prefix or "", nodes=names,
                              template=_opt_str(entry, "template", where),
                              site_template=_opt_str(entry, "site_template", where),
                              cores=_opt_int(entry, "cores", where),
                              memory=_opt_int(entry, "memory", where)))
    return PowerSaveConfig(tuple(rules), _opt_str(doc, "url", source),
                           _opt_str(doc, "token_file", source), _opt_str(doc, "log_file", source))


def parse_env_map(text: str) -> tuple[NodeRule, ...]:
    """``VOCLOUD_POWERSAVE_MAP="c=lhcb,gpu=atlas:atlas-gpu"``: ``prefix=VO[:template]`` pairs."""
    rules: list[NodeRule] = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        prefix, eq, rest = item.partition("=")
        vo, _, template = rest.partition(":")
        if not eq or not prefix.strip() or not vo.strip():
            raise InvalidInput(f"{ENV_MAP}: {item!r} is not PREFIX=VO or PREFIX=VO:TEMPLATE")
        rules.append(NodeRule(vo=vo.strip(), prefix=prefix.strip(), template=template.strip() or None))
    return tuple(rules)


def rule_for(node: str, rules: Sequence[NodeRule]) -> NodeRule | None:
    """The rule of ``node``: an explicit ``nodes`` match first, then the longest ``prefix``."""
    for rule in rules:
        if rule.nodes and node in rule.nodes:
            return rule
    best: NodeRule | None = None
    for rule in rules:
        if not rule.nodes and node.startswith(rule.prefix) and (
                best is None or len(rule.prefix) > len(best.prefix)):
            best = rule
    return best


def shape_for(rule: NodeRule, pool: Mapping[str, Any] | None) -> Shape:
    """The rule completed by its VO pool (``GET /pools/{vo}``): template, cores, memory.

    Why the pool: a site that already runs VO pools has said once which template and shape a
    VO's workers have; power saving then needs only ``prefix -> VO``. A rule's own values win.
    The pool is required: its identity is who the VM is created as (docs/pools.md, "Pools act
    as their VO"), never the administrator whose token the hook holds.
    """
    if pool is None:
        raise InvalidInput(f"VO {rule.vo!r} has no pool: power-saving nodes are created as the "
                           f"pool's identity; create one with `vocloud pool create {rule.vo} "
                           "--template T --cores C --memory M --min 0 --max 0`")
    template = rule.template or (str(pool["template"]) if pool.get("template") else None)
    if template is None:
        raise InvalidInput(f"VO {rule.vo!r}'s pool has no template and its rule names none")
    cores = rule.cores if rule.cores is not None else _pool_int(pool, "cores")
    memory = rule.memory if rule.memory is not None else _pool_int(pool, "memory")
    return Shape(rule.vo, template, cores, memory, rule.template, rule.site_template)


def _pool_int(pool: Mapping[str, Any], key: str) -> int | None:
    value = pool.get(key)
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


# --- decisions --------------------------------------------------------------------------------


def live_by_name(vms: Iterable[SeenVM]) -> dict[str, list[SeenVM]]:
    """The VMs not DONE, grouped by name, oldest first."""
    out: dict[str, list[SeenVM]] = {}
    for vm in sorted(vms, key=lambda v: v.id):
        if vm.state is not S.DONE:
            out.setdefault(vm.name, []).append(vm)
    return out


def plan_resume(nodes: Sequence[str], rules: Sequence[NodeRule],
                shapes: Mapping[NodeRule, Shape | str], vms: Iterable[SeenVM]) -> list[Step]:
    """What ``resume`` does for each node (in the order Slurm named them).

    ``shapes`` maps a rule to its :class:`Shape`, or to the reason none could be made (the CLI
    looks each VO's pool up once). Per node: a VM that is up is kept; a stopped one is woken; a
    failed one is destroyed and replaced; one that is shutting down is left to finish and a new
    one is created; none at all: one is created.
    """
    live = live_by_name(vms)
    steps: list[Step] = []
    for node in dict.fromkeys(nodes):  # a repeated name is one node
        rule = rule_for(node, rules)
        if rule is None:
            steps.append(Fail(node, f"no powersave rule maps node {node} to a VO"))
            continue
        mine = live.get(node, [])
        up = next((v for v in mine if v.state in UP), None)
        if up is not None:
            steps.append(Keep(node, up.id, f"vm {up.id} is {up.state.value}"))
            continue
        sleeping = next((v for v in mine if v.state in WAKE), None)
        if sleeping is not None:
            steps.append(Act(node, sleeping.id, WAKE[sleeping.state], sleeping.state))
            continue
        steps.extend(Act(node, v.id, "terminate-hard", v.state) for v in mine if v.state in BROKEN)
        shape = shapes.get(rule)
        if not isinstance(shape, Shape):
            steps.append(Fail(node, shape or f"no VM shape for VO {rule.vo}"))
            continue
        steps.append(Create(node, shape))
    return steps


def plan_suspend(nodes: Sequence[str], vms: Iterable[SeenVM], hard: bool = False) -> list[Step]:
    """What ``suspend`` (graceful ``terminate``) or ``resume-fail`` (``hard``) does per node.

    Every live VM of the node's name is terminated, whatever its state: a suspended node must
    cost nothing. An action the lifecycle table refuses in that state means the VM is already
    going (a graceful ``terminate`` of a VM in SHUTDOWN): kept, not an error. A node without a
    VM is already what Slurm asked for.
    """
    live = live_by_name(vms)
    steps: list[Step] = []
    wanted = ("terminate-hard", "terminate") if hard else ("terminate",)
    for node in dict.fromkeys(nodes):
        mine = live.get(node, [])
        if not mine:
            steps.append(Keep(node, None, "no VM"))
            continue
        for vm in mine:
            action = next((a for a in wanted if (vm.state, a) in VM_TABLE), None)
            if action is None:
                steps.append(Keep(node, vm.id, f"vm {vm.id} is already {vm.state.value}"))
            else:
                steps.append(Act(node, vm.id, action, vm.state))
    return steps


def seen_vms(rows: Iterable[Mapping[str, Any]]) -> list[SeenVM]:
    """``GET /vms`` rows -> :class:`SeenVM`; rows in a state this version does not know are
    skipped (a newer daemon), never guessed at."""
    out: list[SeenVM] = []
    for row in rows:
        try:
            out.append(SeenVM(int(row["id"]), str(row["name"]), VMState(str(row["state"]))))
        except (KeyError, ValueError, TypeError):
            continue
    return out
