"""Power-saving decisions: node -> VO rules, and what resume/suspend/resume-fail do per VM state."""

from __future__ import annotations

import tomllib

import pytest

from vocloud.elastic.powersave import (
    Act,
    Create,
    Fail,
    Keep,
    NodeRule,
    SeenVM,
    Shape,
    parse_config,
    parse_env_map,
    plan_resume,
    plan_suspend,
    rule_for,
    seen_vms,
    shape_for,
)
from vocloud.errors import InvalidInput
from vocloud.model.lifecycle import VMState

S = VMState
DOC = """
url = "http://10.0.0.1:2633"
token_file = "/etc/vocloud/powersave.token"

[[node]]
prefix = "c"
vo = "lhcb"

[[node]]
prefix = "cms-"
vo = "cms"
template = "cms-big"
site_template = "cms-site"
cores = 8
memory = 16000

[[node]]
nodes = "c[10-11]"
vo = "atlas"
"""


def config() -> tuple[NodeRule, ...]:
    return parse_config(tomllib.loads(DOC)).rules


def test_parse_config() -> None:
    cfg = parse_config(tomllib.loads(DOC))
    assert cfg.url == "http://10.0.0.1:2633" and cfg.token_file == "/etc/vocloud/powersave.token"
    assert [r.vo for r in cfg.rules] == ["lhcb", "cms", "atlas"]
    assert cfg.rules[1] == NodeRule("cms", prefix="cms-", template="cms-big", cores=8, memory=16000,
                                     site_template="cms-site")
    assert cfg.rules[2].nodes == frozenset({"c10", "c11"})
    assert parse_config({}).rules == ()


@pytest.mark.parametrize(("doc", "why"), [
    ('colour = "red"', "unknown setting 'colour'"),
    ("[[node]]\nprefix = 'c'", "'vo' is required"),
    ("[[node]]\nvo = 'x'", "exactly one of 'prefix' or 'nodes'"),
    ("[[node]]\nvo = 'x'\nprefix = 'c'\nnodes = 'c1'", "exactly one"),
    ("[[node]]\nvo = 'x'\nnodes = 'c[1-'", "without ']'"),
    ("[[node]]\nvo = 'x'\nprefix = 'c'\ncores = 0", "cores must be a positive integer"),
    ("[[node]]\nvo = 'x'\nprefix = 'c'\nmemory = '2G'", "memory must be a positive integer"),
    ("[[node]]\nvo = 'x'\nprefix = 'c'\nimage = 'y'", "unknown key 'image'"),
    ("node = 3", "array of tables"),
    ("url = 5", "url must be a non-empty string"),
    ("[[node]]\nvo = 'x'\nprefix = 'c'\nsite_template = ''", "site_template must be a non-empty"),
])
def test_parse_config_refuses_mistakes_by_name(doc: str, why: str) -> None:
    with pytest.raises(InvalidInput, match=why.replace("[", r"\[")) as exc:
        parse_config(tomllib.loads(doc), "/etc/vocloud/powersave.toml")
    assert "/etc/vocloud/powersave.toml" in exc.value.message


def test_env_map() -> None:
    assert parse_env_map("c=lhcb, gpu=atlas:atlas-gpu,") == (
        NodeRule("lhcb", prefix="c"), NodeRule("atlas", prefix="gpu", template="atlas-gpu"))
    for bad in ("c", "=lhcb", "c="):
        with pytest.raises(InvalidInput, match="PREFIX=VO"):
            parse_env_map(bad)


def test_rule_for_explicit_nodes_then_longest_prefix() -> None:
    rules = config()
    assert rule_for("c1", rules).vo == "lhcb"  # type: ignore[union-attr]
    assert rule_for("c10", rules).vo == "atlas"  # type: ignore[union-attr]  # listed beats prefix
    assert rule_for("cms-3", rules).vo == "cms"  # type: ignore[union-attr]  # longer prefix wins
    assert rule_for("gpu1", rules) is None


def test_shape_from_pool_and_rule() -> None:
    pool = {"template": "lhcb-worker", "cores": 2, "memory": 1000}
    assert shape_for(NodeRule("lhcb", prefix="c"), pool) == Shape("lhcb", "lhcb-worker", 2, 1000)
    own = NodeRule("cms", prefix="x", template="cms-big", cores=8, site_template="cms-site")
    assert shape_for(own, pool) == Shape("cms", "cms-big", 8, 1000, "cms-big", "cms-site")
    # no pool, no identity to create the VM as: even a rule naming its own template is refused
    for rule in (own, NodeRule("lhcb", prefix="c")):
        with pytest.raises(InvalidInput, match="has no pool: power-saving nodes are created as"):
            shape_for(rule, None)


SHAPE = Shape("lhcb", "lhcb-worker", 2, 1000)


def resume(nodes: list[str], vms: list[SeenVM]) -> list[object]:
    rules = (NodeRule("lhcb", prefix="c"), NodeRule("nopool", prefix="x"))
    return list(plan_resume(nodes, rules, {rules[0]: SHAPE, rules[1]: "pool nopool: not found"}, vms))


def test_resume_creates_missing_vms_once_per_node() -> None:
    assert resume(["c1", "c2", "c1"], []) == [Create("c1", SHAPE), Create("c2", SHAPE)]


@pytest.mark.parametrize("state", [S.PENDING, S.PROLOG, S.BOOT, S.RUNNING, S.REBOOT, S.MIGRATE])
def test_resume_keeps_a_vm_that_is_up(state: VMState) -> None:
    [step] = resume(["c1"], [SeenVM(7, "c1", state)])
    assert isinstance(step, Keep) and step.vm_id == 7


@pytest.mark.parametrize(("state", "action"), [
    (S.HOLD, "release"), (S.POWEROFF, "resume"), (S.UNDEPLOYED, "resume"), (S.STOPPED, "resume"),
])
def test_resume_wakes_a_stopped_vm(state: VMState, action: str) -> None:
    assert resume(["c1"], [SeenVM(7, "c1", state)]) == [Act("c1", 7, action, state)]


def test_resume_replaces_failed_and_ignores_leaving_and_done_vms() -> None:
    vms = [SeenVM(3, "c1", S.BOOT_FAILURE), SeenVM(4, "c2", S.SHUTDOWN), SeenVM(5, "c3", S.DONE),
           SeenVM(6, "c4", S.RUNNING)]
    assert resume(["c1", "c2", "c3"], vms) == [
        Act("c1", 3, "terminate-hard", S.BOOT_FAILURE), Create("c1", SHAPE),
        Create("c2", SHAPE), Create("c3", SHAPE)]


def test_resume_reports_unmapped_nodes_and_missing_shapes_but_does_the_rest() -> None:
    steps = resume(["q1", "x1", "c1"], [])
    assert isinstance(steps[0], Fail) and "no powersave rule" in steps[0].why
    assert steps[1] == Fail("x1", "pool nopool: not found")
    assert steps[2] == Create("c1", SHAPE)


def test_suspend_terminates_gracefully_and_is_idempotent() -> None:
    vms = [SeenVM(1, "c1", S.RUNNING), SeenVM(2, "c2", S.SHUTDOWN), SeenVM(3, "c3", S.DONE),
           SeenVM(4, "c4", S.PENDING), SeenVM(5, "c4", S.BOOT_FAILURE)]
    steps = plan_suspend(["c1", "c2", "c3", "c4"], vms)
    assert steps[0] == Act("c1", 1, "terminate", S.RUNNING)
    assert isinstance(steps[1], Keep) and "already SHUTDOWN" in steps[1].why
    assert steps[2] == Keep("c3", None, "no VM")
    assert steps[3:] == [Act("c4", 4, "terminate", S.PENDING), Act("c4", 5, "terminate", S.BOOT_FAILURE)]


def test_resume_fail_terminates_hard_even_a_graceful_shutdown() -> None:
    vms = [SeenVM(1, "c1", S.RUNNING), SeenVM(2, "c2", S.SHUTDOWN), SeenVM(3, "c3", S.HOLD),
           SeenVM(4, "c4", S.EPILOG)]
    steps = plan_suspend(["c1", "c2", "c3", "c4"], vms, hard=True)
    assert steps[:3] == [Act("c1", 1, "terminate-hard", S.RUNNING),
                         Act("c2", 2, "terminate-hard", S.SHUTDOWN),
                         Act("c3", 3, "terminate-hard", S.HOLD)]
    assert isinstance(steps[3], Keep)


def test_seen_vms_skips_rows_it_cannot_read() -> None:
    rows: list[dict[str, object]] = [{"id": 1, "name": "c1", "state": "RUNNING"},
                                     {"id": 2, "name": "c2", "state": "WARPING"}, {"name": "c3"}]
    assert seen_vms(rows) == [SeenVM(1, "c1", S.RUNNING)]
