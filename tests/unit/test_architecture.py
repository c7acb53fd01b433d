"""The house keeps itself straight: no import cycles between modules, and every VM state change
goes through the lifecycle's transition helpers (docs/architecture.md).

``lint-imports`` (pyproject ``[tool.importlinter]``) checks the layers; these checks are what its
contracts cannot say.
"""

from __future__ import annotations

import ast
from pathlib import Path

import grimp

SRC = Path(__file__).resolve().parents[2] / "src" / "vocloud"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    comp.append(top)
                    if top == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_between_modules() -> None:
    g = grimp.build_graph("vocloud")
    graph = {m: set(g.find_modules_directly_imported_by(m)) for m in g.modules}
    assert _cycles(graph) == []


def _writes_vm_state(tree: ast.AST) -> list[int]:
    """Lines assigning ``vm.state`` (alone or in a tuple)."""
    lines = []
    for node in ast.walk(tree):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        else:
            continue
        for t in targets:
            elts = t.elts if isinstance(t, ast.Tuple) else [t]
            for e in elts:
                if isinstance(e, ast.Attribute) and e.attr == "state" and isinstance(e.value, ast.Name) \
                        and e.value.id == "vm":
                    lines.append(node.lineno)
    return lines


def _imports_vm_row(tree: ast.AST) -> bool:
    """Whether a module works on the stored VM row (``from vocloud.store.schema import VM``)."""
    return any(isinstance(n, ast.ImportFrom) and n.module == "vocloud.store.schema"
               and any(a.name == "VM" for a in n.names) for n in ast.walk(tree))


def test_vm_state_is_written_only_by_the_transition_helper() -> None:
    """``service/vms.py::transition`` is the one writer of ``VM.state`` (so no caller can skip
    the capacity, lease, quota and image side effects of a state change)."""
    offenders = {}
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        if not _imports_vm_row(tree):
            continue  # e.g. the simulator's own SimVM, moved only by the pool-VM state table
        found = _writes_vm_state(tree)
        if found:
            offenders[str(path.relative_to(SRC))] = found
    allowed = {"service/vms.py"}
    assert set(offenders) <= allowed, offenders
    assert len(offenders.get("service/vms.py", [])) == 1, offenders


def test_the_state_write_finder_sees_a_write() -> None:
    assert _writes_vm_state(ast.parse("vm.state = 'DONE'\nvm.state, vm.x = 1, 2\nimg.state = 'x'")) == [1, 2]
