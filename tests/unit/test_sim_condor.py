"""HTCondor history reader: JSON array, JSON lines, CSV; bad records skipped or refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vocloud.errors import InvalidInput
from vocloud.sim.condor import read_condor_history
from vocloud.sim.jobs import F
from vocloud.sim.vomap import map_vos, parse_rules

RECORDS = [  # newest first, as condor_history prints
    {"ClusterId": 12, "ProcId": 0, "QDate": 1_700_000_600, "JobStartDate": 1_700_000_660,
     "CompletionDate": 1_700_004_260, "RequestCpus": 8, "RequestMemory": 16000,
     "AcctGroup": "group_cms.prod", "x509UserProxyVOName": "cms", "Owner": "bob", "JobStatus": 4},
    {"ClusterId": 11, "ProcId": 3, "QDate": 1_700_000_000, "JobStartDate": 1_700_000_030,
     "RemoteWallClockTime": 120.0, "RequestCpus": 1, "RequestMemory": 2000,
     "AcctGroup": "group_atlas", "Owner": "alice", "JobStatus": 4, "MaxWallTimeMins": 10},
    {"ClusterId": 13, "ProcId": 0, "QDate": 1_700_000_300, "RequestCpus": 1,
     "Owner": "carol", "JobStatus": 3},  # removed before it started
]


def test_json_array_sorted_and_converted(tmp_path: Path) -> None:
    p = tmp_path / "h.json"
    p.write_text(json.dumps(RECORDS))
    tr = read_condor_history(p)
    t = tr.jobs
    assert tr.start_time == 1_700_000_000
    assert list(t.column(F.SUBMIT)) == [0, 300, 600]  # re-sorted by QDate, from 0
    first = t.row(0)
    assert first.job == 11 * 100000 + 3
    assert first.runtime == 120 and first.wait == 30 and first.req_time == 600
    assert first.req_mem == 2000 * 1024  # KiB per processor
    assert t.row(1).runtime == -1 and t.row(1).alloc_procs == 0  # never started
    assert t.row(1).status == 5
    last = t.row(2)
    assert last.runtime == 3600 and last.req_procs == 8 and last.req_mem == 16000 * 1024 / 8


def test_vo_from_proxy_then_group_then_owner(tmp_path: Path) -> None:
    p = tmp_path / "h.json"
    p.write_text(json.dumps(RECORDS))
    t = read_condor_history(p).jobs
    codes, names = map_vos(t, parse_rules("vo"))
    assert [names[c] for c in codes] == ["group_atlas", "carol", "cms"]
    codes, names = map_vos(t, parse_rules(r"rules:group=group_([a-z]+).*:\1,*=*:other"))
    assert [names[c] for c in codes] == ["atlas", "other", "cms"]


def test_json_lines_and_csv(tmp_path: Path) -> None:
    jl = tmp_path / "h.jsonl"
    jl.write_text("\n".join(json.dumps(r) for r in RECORDS) + "\n")
    assert len(read_condor_history(jl).jobs) == 3
    csv = tmp_path / "h.csv"
    csv.write_text("ClusterId,ProcId,QDate,JobStartDate,RemoteWallClockTime,RequestCpus,Owner\n"
                   "1,0,100,110,50,1,alice\n2,0,90,95,5,2,bob\n")
    t = read_condor_history(csv).jobs
    assert list(t.column(F.RUNTIME)) == [5, 50]
    assert t.label("user", int(t.row(0).user)) == "bob"


def test_bad_records_skipped_with_line_or_refused(tmp_path: Path) -> None:
    p = tmp_path / "h.jsonl"
    p.write_text('{"ClusterId": 1, "QDate": 5, "RemoteWallClockTime": 3}\n'
                 '{"ClusterId": 2}\n'
                 '{"ClusterId": 3, "QDate": "soon"}\n'
                 'not json\n'
                 '{"ClusterId": 4, "QDate": 9, "RemoteWallClockTime": -7}\n')
    tr = read_condor_history(p)
    assert len(tr.jobs) == 1
    assert tr.report.skipped == {"bad_record": 4}
    reasons = {i.line: i.reason for i in tr.report.examples}
    assert "no QDate" in reasons[2]
    assert "QDate is not a number" in reasons[3]
    assert "not valid JSON" in reasons[4]
    with pytest.raises(InvalidInput, match=r"h\.jsonl:2: no QDate"):
        read_condor_history(p, strict=True)


def test_csv_row_with_extra_fields(tmp_path: Path) -> None:
    p = tmp_path / "h.csv"
    p.write_text("ClusterId,QDate\n1,5\n2,6,oops\n")
    tr = read_condor_history(p)
    assert len(tr.jobs) == 1 and tr.report.skipped == {"bad_record": 1}


def test_broken_json_array_is_an_error(tmp_path: Path) -> None:
    p = tmp_path / "h.json"
    p.write_text('[{"QDate": 1},')
    with pytest.raises(InvalidInput, match="not valid JSON"):
        read_condor_history(p)
