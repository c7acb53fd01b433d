"""The worker units of the parallel run (tests/conftest.py): a module listed as parallel-safe
exists (a renamed module would silently fall back to the serial unit), and the serial unit
holds the modules that start machine-wide things."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import PARALLEL_SAFE, xdist_group_of

TESTS = Path(__file__).resolve().parents[1]


def test_every_listed_module_exists() -> None:
    missing = sorted(rel for rel in PARALLEL_SAFE if not (TESTS / rel).is_file())
    assert missing == []


def test_machine_wide_modules_share_one_unit_and_the_rest_their_own() -> None:
    for rel in ("integration/test_vo_cluster_slurm.py", "integration/test_qemu_isolation.py",
                "e2e/test_demo.py", "integration/test_host_leases_sge.py"):
        assert xdist_group_of(f"tests/{rel}::test_x[sqlite]") == "machine", rel
    xmlrpc = "tests/integration/test_xmlrpc.py::test_accounting[postgres]"
    assert xdist_group_of(xmlrpc) == "integration/test_xmlrpc.py"
    assert xdist_group_of("tests/unit/test_planner.py::test_a") == "unit/test_planner.py"
