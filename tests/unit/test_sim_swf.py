"""SWF reader: header, good lines, and every kind of bad input (lenient and strict)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from vocloud.errors import InvalidInput
from vocloud.sim.jobs import F
from vocloud.sim.swf import check_line, parse_values, read_swf
from vocloud.sim.synth import swf_line, swf_text

HEADER = """;            Note: THIS IS A CLEANED VERSION OF THE LOG
;         Version: 2.2
;   UnixStartTime: 1091615532
;        TimeZone: 3600\t # DEPRECATED; use TimeZoneString + tzset()
;  TimeZoneString: Europe/Paris
;        MaxNodes: 70  (dual)
;        MaxProcs: 140
;         MaxJobs: 3
;           Queue:      1   test
;           Queue:      2   short
;       Partition:      1   clrglop195.in2p3.fr
;            Note: Jobs are always serial.
;
"""
GOOD = [swf_line(1, 100, 50, req_time=60), swf_line(2, 100, -1), swf_line(3, 200, 10, group=2)]


def write(tmp_path: Path, text: str, name: str = "t.swf", gz: bool = False) -> Path:
    p = tmp_path / name
    data = text.encode()
    p.write_bytes(gzip.compress(data) if gz else data)
    return p


def test_header_fields_are_parsed(tmp_path: Path) -> None:
    tr = read_swf(write(tmp_path, HEADER + "\n".join(GOOD) + "\n"))
    h = tr.header
    assert h.version == "2.2"
    assert h.unix_start_time == 1091615532
    assert h.max_procs == 140
    assert h.max_nodes == 70
    assert h.max_jobs == 3
    assert h.time_zone == "Europe/Paris"
    assert h.queues == {1: "test", 2: "short"}
    assert h.partitions == {1: "clrglop195.in2p3.fr"}
    assert h.notes == ["THIS IS A CLEANED VERSION OF THE LOG", "Jobs are always serial."]
    assert tr.jobs.labels["queue"] == {1: "test", 2: "short"}


def test_all_18_fields_and_unknowns_kept(tmp_path: Path) -> None:
    tr = read_swf(write(tmp_path, HEADER + "\n".join(GOOD) + "\n"))
    assert len(tr.jobs) == 3
    assert tr.jobs.data.shape == (3, 18)
    j = tr.jobs.row(0)
    assert (j.job, j.submit, j.runtime, j.req_time, j.wait) == (1, 100.0, 50.0, 60.0, -1.0)
    assert tr.jobs.row(1).runtime == -1  # unknown, legal
    assert tr.jobs.row(2).group == 2
    assert tr.report.jobs == 3 and tr.report.skipped_total == 0


def test_gzip_detected_by_magic_not_name(tmp_path: Path) -> None:
    text = HEADER + "\n".join(GOOD) + "\n"
    plain = read_swf(write(tmp_path, text, "a.swf.gz"))  # plain despite the name
    packed = read_swf(write(tmp_path, text, "b.swf", gz=True))  # gzip despite the name
    assert np.array_equal(plain.jobs.data, packed.jobs.data)


def test_ten_field_line_is_skipped_and_counted_with_its_line_number(tmp_path: Path) -> None:
    bad = "4 300 -1 10 1 -1 -1 1 -1 -1"
    p = write(tmp_path, swf_text([GOOD[0], bad, GOOD[2]]))
    tr = read_swf(p)
    assert len(tr.jobs) == 2
    assert tr.report.skipped == {"field_count": 1}
    issue = tr.report.examples[0]
    assert issue.line == 12  # 10 header lines + first job + this one
    assert "expected 18 fields, found 10" in issue.reason


def test_ten_field_line_refused_in_strict_mode_naming_file_and_line(tmp_path: Path) -> None:
    p = write(tmp_path, swf_text([GOOD[0], "4 300 -1 10 1 -1 -1 1 -1 -1"]))
    with pytest.raises(InvalidInput) as err:
        read_swf(p, strict=True)
    assert f"{p}:12:" in err.value.message
    assert "18 fields" in err.value.message


@pytest.mark.parametrize(
    ("line", "kind"),
    [
        (swf_line(9, 300, -5), "negative_runtime"),
        (swf_line(9, 300, 10).replace(" 10 ", " ten ", 1), "non_numeric"),
        (swf_line(9, 300, 10, procs=-3), "negative_value"),
        (swf_line(9, 300, 10).replace("300", "nan", 1), "non_numeric"),
    ],
)
def test_bad_values_skipped_or_refused(tmp_path: Path, line: str, kind: str) -> None:
    p = write(tmp_path, swf_text([GOOD[0], line]))
    tr = read_swf(p)
    assert tr.report.skipped == {kind: 1}
    assert len(tr.jobs) == 1
    with pytest.raises(InvalidInput, match=rf"{p.name}:12: "):
        read_swf(p, strict=True)


def test_time_travel_beyond_tolerance(tmp_path: Path) -> None:
    lines = [swf_line(1, 1000, 1), swf_line(2, 990, 1), swf_line(3, 500, 1), swf_line(4, 1001, 1)]
    p = write(tmp_path, swf_text(lines))
    strict0 = read_swf(p)
    assert strict0.report.skipped == {"time_travel": 2}
    assert "goes back 10 s" in strict0.report.examples[0].reason
    tolerant = read_swf(p, tolerance=60)
    assert tolerant.report.skipped == {"time_travel": 1}  # 990 is within 60 s, 500 is not
    assert list(tolerant.jobs.column(F.JOB)) == [1, 2, 4]
    with pytest.raises(InvalidInput, match=r":12: submit time 990 goes back 10 s"):
        read_swf(p, strict=True)


def test_truncated_gzip_names_file_and_lines_read(tmp_path: Path) -> None:
    lines = [swf_line(i, i * 10, 5) for i in range(1, 3000)]
    data = gzip.compress(swf_text(lines).encode())
    p = tmp_path / "cut.swf.gz"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(InvalidInput) as err:
        read_swf(p)
    msg = err.value.message
    assert str(p) in msg and "truncated or corrupt" in msg
    assert err.value.details["lines_read"] > 0
    assert f"after {err.value.details['lines_read']} complete lines" in msg


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="no such file"):
        read_swf(tmp_path / "nope.swf")
    with pytest.raises(InvalidInput, match="directory"):
        read_swf(tmp_path)


def test_limit_stops_after_n_valid_jobs(tmp_path: Path) -> None:
    p = write(tmp_path, swf_text([swf_line(i, i, 1) for i in range(1, 50)]))
    assert len(read_swf(p, limit=7).jobs) == 7


def test_empty_and_comment_only_files_give_no_jobs(tmp_path: Path) -> None:
    assert len(read_swf(write(tmp_path, "")).jobs) == 0
    assert len(read_swf(write(tmp_path, HEADER)).jobs) == 0


def test_pure_line_checks() -> None:
    values, problem = parse_values(swf_line(1, 5, 3))
    assert problem is None and values is not None
    assert check_line(values, last_submit=0, tolerance=0) is None
    assert check_line(values, last_submit=6, tolerance=0) is not None
    assert check_line(values, last_submit=6, tolerance=1) is None
    assert parse_values("1 2 3")[1] == ("field_count", "expected 18 fields, found 3")
