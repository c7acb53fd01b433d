"""CommandRunner (real subprocesses, no batch system) and the FakeRunner the adapter tests share."""

from __future__ import annotations

import sys

import pytest

from tests.support.batch_fakes import FakeRunner, data, failed  # noqa: F401 - tested here too
from vocloud.batch.runner import CommandFailed, CommandRunner, parse_json_list, parse_json_object
from vocloud.errors import DriverError


def test_runs_and_returns_stdout() -> None:
    assert CommandRunner().run([sys.executable, "-c", "print('hi')"]) == "hi\n"


def test_env_is_added_to_the_inherited_environment() -> None:
    out = CommandRunner(env={"VOCLOUD_T": "x"}).run(
        [sys.executable, "-c", "import os; print(os.environ['VOCLOUD_T'], 'PATH' in os.environ)"])
    assert out.split() == ["x", "True"]


def test_missing_command_is_a_driver_error() -> None:
    with pytest.raises(DriverError, match="no-such-batch-tool: command not found"):
        CommandRunner().run(["no-such-batch-tool", "--json"])


def test_nonzero_exit_carries_code_and_stderr() -> None:
    with pytest.raises(CommandFailed) as info:
        CommandRunner().run([sys.executable, "-c",
                             "import sys; sys.stderr.write('slurm_load_jobs error: Unable to contact'); "
                             "sys.exit(1)"])
    err = info.value
    assert isinstance(err, DriverError)
    assert err.returncode == 1
    assert err.stderr == "slurm_load_jobs error: Unable to contact"
    assert "exited with 1: slurm_load_jobs error" in err.message
    assert err.to_dict()["details"]["returncode"] == 1


def test_timeout_is_a_driver_error() -> None:
    with pytest.raises(CommandFailed, match=r"no answer within 0\.2 s"):
        CommandRunner(timeout_s=0.2).run([sys.executable, "-c", "import time; time.sleep(5)"])


def test_empty_command_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        CommandRunner().run([])


@pytest.mark.parametrize("text", ["", "{", '{"jobs": [1,', "not json", "[1, 2]", "42"])
def test_garbled_json_object(text: str) -> None:
    with pytest.raises(DriverError, match="squeue --json"):
        parse_json_object(text, "squeue --json")


def test_json_list_accepts_empty_output_and_rejects_objects() -> None:
    assert parse_json_list("", "condor_q -json") == []
    assert parse_json_list(" [ {\"a\": 1} ]", "condor_q -json") == [{"a": 1}]
    with pytest.raises(DriverError, match="expected a JSON array"):
        parse_json_list("{}", "condor_q -json")
    with pytest.raises(DriverError, match="not valid JSON"):
        parse_json_list("[{", "condor_q -json")


def test_fake_runner_matches_longest_prefix_and_raises() -> None:
    fake = FakeRunner({("a",): "short", ("a", "b"): "long", ("x",): failed(["x"], "boom")})
    assert fake.run(["a", "b", "c"]) == "long"
    assert fake.run(["a", "c"]) == "short"
    with pytest.raises(CommandFailed, match="boom"):
        fake.run(["x"])
    with pytest.raises(AssertionError):
        fake.run(["y"])
    assert fake.calls == [["a", "b", "c"], ["a", "c"], ["x"], ["y"]]
