"""Benchmark: EC2 DescribeInstances of 20,000 instances (all pages, boto3) next to the REST
listing of the same VMs, in the same run.

Starts a real daemon (``vocloud serve`` on a temp SQLite store, loops idle), fills it with VMs
through the service layer (as bench_list.py does), makes an EC2 access key over REST and times:

* ``GET /api/v1/vms`` (httpx, full response read and JSON-decoded), the figure of bench_list.py;
* boto3's ``describe_instances`` paginator with MaxResults=1000 (the EC2 maximum), every page
  fetched, signed and parsed by botocore — what an EC2 tool pays to list the same VMs.

No target: EC2's XML and its page size cost more than one JSON document; the figure shows by how
much, and that listing a site of 20,000 VMs through EC2 stays a matter of seconds.

Usage: .venv/bin/python bench/bench_ec2.py [--vms 20000] [--repeat 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import re
import tempfile
import time
from pathlib import Path

import boto3
import httpx
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from bench.support import bench_daemon, fill_store


def _raw_pages(endpoint: str, key: dict[str, str], client: httpx.Client) -> int:
    """Every page as signed HTTP requests whose XML is not parsed (only ``nextToken`` is read):
    the daemon's share of the boto3 figure."""
    creds = Credentials(key["access_key_id"], key["secret_access_key"])
    token, count = "", 0
    while True:
        body = "Action=DescribeInstances&Version=2016-11-15&MaxResults=1000" + \
            (f"&NextToken={token}" if token else "")
        req = AWSRequest(method="POST", url=endpoint, data=body,
                         headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
        SigV4Auth(creds, "ec2", "vocloud").add_auth(req)
        p = req.prepare()
        r = client.post(p.url, content=p.body, headers=dict(p.headers.items()))
        r.raise_for_status()
        count += r.text.count("<instanceId>")
        m = re.search(r"<nextToken>([^<]+)</nextToken>", r.text)
        if m is None:
            return count
        token = m.group(1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vms", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="vocloud-bench-ec2-") as tmp:
        data_dir = Path(tmp)
        t0 = time.perf_counter()
        fill_store(data_dir, args.vms, "CPU=1\nMEMORY=1024\n")
        fill_s = time.perf_counter() - t0
        with bench_daemon(data_dir) as d:
            port = int(d.base_url.rsplit(":", 1)[1])
            url = d.api
            with httpx.Client(headers={"Authorization": f"Bearer {d.token}"}, timeout=120) as client:
                key = client.post(f"{url}/access-keys", json={}).json()
                rest_times, ec2_times, raw_times = [], [], []
                rest_count = ec2_count = pages = 0
                ec2 = boto3.client("ec2", endpoint_url=f"http://127.0.0.1:{port}/ec2/",
                                   region_name="vocloud", aws_access_key_id=key["access_key_id"],
                                   aws_secret_access_key=key["secret_access_key"],
                                   config=Config(retries={"max_attempts": 1}, read_timeout=300))
                for _ in range(args.repeat):
                    t = time.perf_counter()
                    r = client.get(f"{url}/vms")
                    r.raise_for_status()
                    rest_count = len(r.json())
                    rest_times.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    ec2_count = pages = 0
                    for page in ec2.get_paginator("describe_instances").paginate(
                            PaginationConfig={"PageSize": 1000}):
                        pages += 1
                        ec2_count += sum(len(res["Instances"]) for res in page["Reservations"])
                    ec2_times.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    raw_count = _raw_pages(f"http://127.0.0.1:{port}/ec2/", key, client)
                    raw_times.append(time.perf_counter() - t)
                    assert raw_count == args.vms, raw_count
    assert rest_count == args.vms, f"REST listed {rest_count} VMs, expected {args.vms}"
    assert ec2_count == args.vms, f"EC2 listed {ec2_count} instances, expected {args.vms}"
    rest_best, ec2_best = min(rest_times), min(ec2_times)
    result = {
        "figure": f"DescribeInstances of {args.vms} instances (boto3, all {pages} pages)",
        "ec2_best_s": round(ec2_best, 3), "ec2_median_s": round(sorted(ec2_times)[len(ec2_times) // 2], 3),
        "rest_best_s": round(rest_best, 4), "ratio": round(ec2_best / rest_best, 1),
        "server_only_best_s": round(min(raw_times), 3),
        "pages": pages, "fill_s": round(fill_s, 2),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{'figure':58} {'best':>9} {'median':>9}")
    print(f"{result['figure']:58} {ec2_best:>8.3f}s {result['ec2_median_s']:>8.3f}s")
    print(f"{'REST GET /api/v1/vms of the same VMs, same run':58} {rest_best:>8.3f}s "
          f"{sorted(rest_times)[len(rest_times) // 2]:>8.3f}s")
    print(f"{'  the same pages unparsed (signed HTTP; the daemon share)':58} {min(raw_times):>8.3f}s "
          f"{sorted(raw_times)[len(raw_times) // 2]:>8.3f}s")
    print(f"  EC2/REST: {ec2_best / rest_best:.1f}x (filled {args.vms} VMs in {fill_s:.1f}s)")


if __name__ == "__main__":
    main()
