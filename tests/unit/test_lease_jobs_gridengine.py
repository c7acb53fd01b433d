"""Grid Engine lease jobs: job states from recorded ``qstat -xml`` (real SGE 8.1 output)."""

from __future__ import annotations

from pathlib import Path

import pytest

from vocloud.batch.lease_jobs import GridEngineLeaseJobs, lease_script, parse_qstat_jobs
from vocloud.batch.runner import CommandFailed
from vocloud.model.host_lease import JobView

DATA = Path(__file__).parent / "data" / "batch" / "gridengine"


def test_running_waiting_failed_and_gone_jobs() -> None:
    xml = (DATA / "hosts_busy.xml").read_text()
    views = parse_qstat_jobs(xml, ["2", "3", "4", "1", "99"])
    assert views == {"2": JobView.RUNNING, "3": JobView.RUNNING, "4": JobView.PENDING,
                     "1": JobView.GONE, "99": JobView.GONE}


def test_a_deleting_job_is_gone_and_an_empty_listing_means_all_gone() -> None:
    xml = ("<?xml version='1.0'?><job_info><queue_info/><job_info><job_list state='running'>"
           "<JB_job_number>7</JB_job_number><state>dr</state></job_list>"
           "<job_list state='pending'><JB_job_number>8</JB_job_number><state>hqw</state></job_list>"
           "</job_info></job_info>")
    assert parse_qstat_jobs(xml, ["7", "8"]) == {"7": JobView.GONE, "8": JobView.PENDING}
    assert parse_qstat_jobs("", ["7"]) == {"7": JobView.GONE}


def test_garbage_from_qstat_is_a_clear_error() -> None:
    with pytest.raises(CommandFailed, match="no XML"):
        parse_qstat_jobs("error: commlib error", ["1"])


def test_no_jobs_asked_runs_nothing_and_the_script_is_the_shared_one() -> None:
    assert GridEngineLeaseJobs().states([]) == {}
    script = lease_script(3, "abc123", "http://10.0.0.1:8080", ["/usr/bin/python3", "-m", "x"])
    assert "abc123" not in script.split("<<")[0]  # the token only in the here-document


def test_the_client_commands_see_the_cells_ports_and_nothing_else(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A cell reached through ``SGE_QMASTER_PORT``/``SGE_EXECD_PORT`` (no /etc/services entry,
    as the real-cell test runs it) needs them passed to ``qsub``; the daemon's other variables
    (an administrator token) stay out."""
    qsub = tmp_path / "qsub"
    qsub.write_text("#!/bin/sh\ncat > /dev/null\nenv > \"$0.env\"\necho 42\n")
    qsub.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    monkeypatch.setenv("SGE_QMASTER_PORT", "6444")
    monkeypatch.setenv("SGE_EXECD_PORT", "6445")
    monkeypatch.setenv("VOCLOUD_TOKEN", "secret")
    script = lease_script(3, "abc123", "http://10.0.0.1:8080", ["/usr/bin/python3"])
    assert GridEngineLeaseJobs().submit(3, script, 3600, "lease") == "42"
    env = dict(line.split("=", 1) for line in (tmp_path / "qsub.env").read_text().splitlines()
               if "=" in line)
    assert env["SGE_QMASTER_PORT"] == "6444" and env["SGE_EXECD_PORT"] == "6445"
    assert "VOCLOUD_TOKEN" not in env


def test_qdel_of_a_finished_job_is_no_error_but_other_refusals_are(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Real ``qdel`` of a job that has left: exit 1, the reason on *stdout*, stderr empty."""
    qdel = tmp_path / "qdel"
    qdel.write_text('#!/bin/sh\nif [ "$1" = 7 ]; then echo "denied: job \\"7\\" does not exist"; '
                    'else echo "root - you do not have the necessary privileges"; fi\nexit 1\n')
    qdel.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    GridEngineLeaseJobs().cancel("7")
    with pytest.raises(CommandFailed, match="necessary privileges"):
        GridEngineLeaseJobs().cancel("8")
