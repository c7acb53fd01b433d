"""Bursting decisions (pure): placement tiers, pool burst limits, a region's declaration,
instance-type and AMI choice, its room under instance, core and cost limits, its backoff."""

from __future__ import annotations

import pytest

from vocloud.core.burst import place_tiered, tier_of
from vocloud.core.cloud_region import (
    backoff_delay,
    cores_allowed,
    installation_of,
    pick_ami,
    pick_type,
    region_from,
    region_room,
)
from vocloud.core.placement import HostView, PendingVM, SchedPolicy
from vocloud.errors import InvalidInput


def hv(i: int, cpu: float, used: float = 0, hyp: str = "sim", **attrs: str) -> HostView:
    return HostView(id=i, name=f"h{i}", total_cpu=cpu, total_mem=1 << 20, used_cpu=used, used_mem=0,
                    running_vms=0, attrs={"HYPERVISOR": hyp, **attrs})


def vms(n: int, cpu: float = 2, start: int = 1) -> list[PendingVM]:
    return [PendingVM(id=start + i, cpu=cpu, memory=1024) for i in range(n)]


def test_site_first_even_when_the_cloud_ranks_higher() -> None:
    # packing prefers the host with more running VMs: the cloud would win without tiers
    cloud = HostView(id=9, name="aws", total_cpu=64, total_mem=1 << 20, used_cpu=0, used_mem=0,
                     running_vms=50, attrs={"HYPERVISOR": "ec2"})
    out = place_tiered(vms(3), [hv(1, 4), cloud], SchedPolicy())
    assert [(p.vm_id, p.host_id) for p in out.result.placements] == [(1, 1), (2, 1), (3, 9)]
    assert out.tiers == {1: 0, 2: 0, 3: 1}
    assert set(out.reasons) == {3}
    assert out.reasons[3].startswith("burst to aws (tier 1): site full: 0 of 4 cores free")


def test_site_tiers_are_the_sites_to_change() -> None:
    assert tier_of(hv(1, 4)) == 0 and tier_of(hv(2, 4, hyp="ec2")) == 1
    assert tier_of(hv(3, 4, BURST_TIER="2")) == 2 and tier_of(hv(4, 4, hyp="ec2", BURST_TIER="0")) == 0
    # a partner site's hosts (tier 1) before a public cloud (tier 2)
    hosts = [hv(1, 2), hv(2, 2, BURST_TIER="1"), hv(3, 8, hyp="ec2", BURST_TIER="2")]
    out = place_tiered(vms(4), hosts, SchedPolicy())
    assert [p.host_id for p in out.result.placements] == [1, 2, 3, 3]
    assert "site full: 0 of 2 cores free" in out.reasons[4]


def test_pool_burst_limit_holds_the_rest_for_the_site() -> None:
    pool_of = {1: "atlas", 2: "atlas", 3: "atlas", 4: "atlas", 5: "cms"}
    out = place_tiered(vms(5), [hv(1, 2), hv(9, 64, hyp="ec2")], SchedPolicy(),
                       pool_of=pool_of, room={"atlas": 2, "cms": 0})
    placed = {p.vm_id: p.host_id for p in out.result.placements}
    assert placed == {1: 1, 2: 9, 3: 9}
    assert "pool atlas is at its burst limit" in out.result.unplaced[4]
    assert "pool cms is at its burst limit" in out.result.unplaced[5]


def test_dispatch_limit_counts_every_tier_and_one_tier_is_plain_placement() -> None:
    out = place_tiered(vms(4), [hv(1, 2), hv(9, 64, hyp="ec2")], SchedPolicy(max_dispatch=2))
    assert len(out.result.placements) == 2
    plain = place_tiered(vms(2), [hv(1, 2), hv(2, 2)], SchedPolicy())
    assert [p.host_id for p in plain.result.placements] == [1, 2] and plain.reasons == {}


ATTRS = {"EC2_ENDPOINT": "https://ec2.example", "EC2_REGION": "eu-west-1", "EC2_CREDENTIALS": "aws",
         "EC2_TYPES": "t3.small=1:2048:1, t3.medium=2:4096:2, c5.large=2:4096:2, c5.xlarge=4:8192",
         "EC2_IMAGES": "3=ami-0123, *=ami-0fff"}


def test_region_declaration_and_choices() -> None:
    r = region_from("aws", ATTRS)
    assert pick_type(r, 2, 2, 3000).name == "c5.large"  # fewest cores, least memory, then name
    assert pick_type(r, 0.5, 1, 512).name == "t3.small"
    with pytest.raises(InvalidInput, match="no instance type of eu-west-1 holds CPU=8"):
        pick_type(r, 8, 8, 1024)
    assert pick_ami(r, 3) == "ami-0123" and pick_ami(r, 4) == "ami-0fff" and pick_ami(r, None) == "ami-0fff"
    assert pick_ami(region_from("aws", {**ATTRS, "EC2_IMAGES": "3=ami-0123"}), 3) == "ami-0123"
    with pytest.raises(InvalidInput, match="image 4 has no AMI"):
        pick_ami(region_from("aws", {**ATTRS, "EC2_IMAGES": "3=ami-0123"}), 4)


@pytest.mark.parametrize(("key", "value", "why"), [
    ("EC2_ENDPOINT", "", "EC2_ENDPOINT"), ("EC2_ENDPOINT", "http://a b", "EC2_ENDPOINT"),
    ("EC2_REGION", "EU West", "EC2_REGION"), ("EC2_CREDENTIALS", "", "EC2_CREDENTIALS"),
    ("EC2_CREDENTIALS", "../../etc/shadow", "secret name"), ("EC2_TYPES", "", "EC2_TYPES"),
    ("EC2_TYPES", "x=1", "NAME=CPU:MEMORY"), ("EC2_IMAGES", "ubuntu=ami-1", "EC2_IMAGES"),
    ("EC2_IMAGES", "1=ami 1", "EC2_IMAGES"), ("EC2_MAX_INSTANCES", "-1", "EC2_MAX_INSTANCES"),
    ("EC2_COST_CEILING_HOUR", "nan", "EC2_COST_CEILING_HOUR"), ("EC2_PRICE_CORE_HOUR", "x", "EC2_PRICE"),
])
def test_bad_declarations_name_the_attribute(key: str, value: str, why: str) -> None:
    with pytest.raises(InvalidInput, match=why):
        region_from("aws", {**ATTRS, key: value})


def test_room_under_instance_core_and_cost_limits() -> None:
    r = region_from("aws", {**ATTRS, "EC2_MAX_CORES": "32", "EC2_PRICE_CORE_HOUR": "0.05",
                            "EC2_COST_CEILING_HOUR": "1.0", "EC2_MAX_INSTANCES": "3"})
    assert cores_allowed(r, 64) == 20  # 1.0 $/h at 0.05 $ per core-hour
    assert cores_allowed(region_from("aws", ATTRS), 16) == 16
    assert region_room(r, 64, used_cores=4, instances=2, resting=False) == 20
    assert region_room(r, 64, used_cores=6, instances=3, resting=False) == 6  # instance limit
    assert region_room(r, 64, used_cores=4, instances=2, resting=True) == 4  # resting: no room


def test_backoff_doubles_to_its_cap_and_deploy_ids() -> None:
    r = region_from("aws", {**ATTRS, "EC2_BACKOFF": "10", "EC2_BACKOFF_MAX": "60"})
    assert [backoff_delay(r, n) for n in range(6)] == [0, 10, 20, 40, 60, 60]
    assert installation_of("vcq7x-12") == ("q7x", 12) and installation_of("vc-3") == ("", 3)
    for bad in ("q7x-12", "vcq7x-", "vcQ7X-1", "vcq7x-1;rm"):
        with pytest.raises(InvalidInput):
            installation_of(bad)


def test_site_only_vms_never_leave_the_site() -> None:
    from vocloud.core.burst import SITE_ONLY

    out = place_tiered(vms(3), [hv(1, 2), hv(9, 64, hyp="ec2")], SchedPolicy(),
                       pool_of={2: SITE_ONLY}, room={SITE_ONLY: 0})
    assert {p.vm_id: p.host_id for p in out.result.placements} == {1: 1, 3: 9}
    assert out.result.unplaced[2].endswith("only pool workers and administrators' VMs go beyond the site")
