"""Run schemathesis over the whole OpenAPI document of a served vocloud API and count what it finds.

Used by ``test_api_fuzz.py`` (CI) and runnable by hand (``python -m tests.integration.fuzz URL
TOKEN``). It drives schemathesis' own engine (the one its CLI runs), with every check enabled
(the CLI's ``--checks all``), a fixed seed and bounded examples per operation, against a real
HTTP server, and sums the engine's events into the figures we publish: operations, requests,
server errors, schema violations (and every other failed check, by name).
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

#: the checks whose failures mean "the document lies" (a response it does not declare)
SCHEMA_CHECKS = frozenset({"response_schema_conformance", "status_code_conformance",
                           "content_type_conformance", "response_headers_conformance"})


#: VMs per fuzzed create request (see ``_few_vms``)
MAX_VMS = 20


@dataclass
class Figures:
    operations: int = 0
    requests: int = 0
    server_errors: int = 0
    schema_violations: int = 0
    failed_checks: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)
    examples: list[str] = field(default_factory=list)

    def line(self) -> str:
        other = {k: v for k, v in self.failed_checks.items()
                 if k != "not_a_server_error" and k not in SCHEMA_CHECKS}
        return (f"operations={self.operations} requests={self.requests} "
                f"server_errors={self.server_errors} schema_violations={self.schema_violations} "
                f"other_failed_checks={dict(other)} engine_errors={len(self.errors)}")


def _describe(case: Any, response: Any, check: str, message: str) -> str:
    req = f"{case.method} {case.formatted_path}"
    status = getattr(response, "status_code", "?") if response is not None else "no response"
    body = ""
    if response is not None:
        try:
            body = response.content[:300].decode(errors="replace")
        except Exception:
            body = ""
    return (f"[{check}] {req} query={case.query!r} body={str(case.body)[:200]!r} -> {status} "
            f"{body} :: {message[:300]}")


def run(base_url: str, token: str, max_examples: int = 10, seed: int = 9) -> Figures:
    """Fuzz every operation of ``base_url``'s ``/openapi.json`` with bearer ``token``."""
    import schemathesis
    from schemathesis.engine import Status, events, from_schema

    config = schemathesis.Config.from_dict({
        "seed": seed,
        "headers": {"Authorization": f"Bearer {token}"},
        "generation": {"max-examples": max_examples, "deterministic": True},
        "phases": {"stateful": {"enabled": False}},
        "request-timeout": 60,
        "continue-on-failure": True,  # count every failure, not the first of each operation
    })
    schema = schemathesis.openapi.from_url(f"{base_url}/openapi.json", config=config)

    @schema.hook("map_case")
    def _few_vms(_ctx: Any, case: Any) -> Any:
        # Valid requests for up to 10,000 VMs are legal and each takes seconds to store; the
        # fuzz asks for at most MAX_VMS so that a run stays within CI time. Out-of-range counts
        # (negative tests) are left alone.
        body = case.body
        if isinstance(body, dict) and isinstance(body.get("count"), int) \
                and not isinstance(body["count"], bool) and MAX_VMS < body["count"] <= 10_000:
            case.body = {**body, "count": MAX_VMS}
        return case

    figures = Figures()
    labels: set[str] = set()
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            rec = event.recorder
            labels.add(rec.label)
            figures.requests += sum(1 for i in rec.interactions.values() if i.response is not None)
            for case_id, checks in rec.checks.items():
                for node in checks:
                    if node.status != Status.FAILURE:
                        continue
                    figures.failed_checks[node.name] += 1
                    if node.name == "not_a_server_error":
                        figures.server_errors += 1
                    elif node.name in SCHEMA_CHECKS:
                        figures.schema_violations += 1
                    if len(figures.examples) < 40:
                        node_case = rec.cases[case_id].value if case_id in rec.cases else None
                        inter = rec.interactions.get(case_id)
                        msg = str(node.failure_info.failure) if node.failure_info else ""
                        if node_case is not None:
                            figures.examples.append(_describe(
                                node_case, inter.response if inter else None, node.name, msg))
        elif isinstance(event, events.NonFatalError):
            figures.errors.append(f"{event.label}: {event.info.message}"[:500])
        elif isinstance(event, events.FatalError):
            figures.errors.append(f"fatal: {event.exception!r}")
    figures.operations = len(labels)
    return figures


if __name__ == "__main__":
    out = run(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 10)
    print(out.line())
    for ex in out.examples:
        print(" ", ex)
    for err in out.errors:
        print("  error:", err)
