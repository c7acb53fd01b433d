"""EC2 actions: parameters -> one service call -> the response body EC2 clients expect.

Each handler takes the service facade, the authenticated actor and the request's
:class:`~vocloud.api.ec2.protocol.Params`, and returns the body (a dict the protocol module
renders). The handlers decide nothing: ids, states, rights, quotas and EC2 error codes come from
``service/ec2.py``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any
from xml.sax.saxutils import escape

from vocloud.api.ec2.protocol import Params, ProtocolError, Raw, iso_time
from vocloud.service.auth import Actor
from vocloud.service.cloud import Cloud
from vocloud.service.ec2 import (
    STATE_CODE,
    Instance,
    StateChange,
    owner_account,
    parse_instance_id,
)

ZONE = "vocloud-a"
Handler = Callable[[Cloud, Actor, Params, str], dict[str, Any]]


def _state(name: str) -> dict[str, Any]:
    return {"code": STATE_CODE[name], "name": name}


def _instance(i: Instance, region: str) -> dict[str, Any]:
    state = i.ec2_state
    return {
        "instanceId": i.instance_id, "imageId": i.image_ref, "instanceState": _state(state),
        "privateDnsName": "", "dnsName": "", "reason": i.error[:200] if state == "stopped" else "",
        "keyName": i.key_name or None, "amiLaunchIndex": i.launch_index,
        "instanceType": i.instance_type, "launchTime": iso_time(i.created_at),
        "placement": {"availabilityZone": _zone(region),
                      "tenancy": "default"},
        "monitoring": {"state": "disabled"},
        "privateIpAddress": i.ip, "ipAddress": i.ip,
        "architecture": "x86_64", "rootDeviceType": "instance-store", "virtualizationType": "hvm",
        "hypervisor": "xen", "clientToken": i.client_token or None,
        "tagSet": [{"key": k, "value": v} for k, v in i.tags],
        "stateReason": ({"code": "Server.InternalError", "message": i.error[:200]}
                        if state == "stopped" and i.error else None),
        "groupSet": [],
    }


def _instance_xml(i: Instance, zone: str) -> str:
    """One instance as XML: the fast path of DescribeInstances (20,000 instances are 20 pages
    of 1000), the same elements as :func:`_instance` renders, written in one f-string."""
    state = i.ec2_state
    tags = "".join(f"<item><key>{escape(k)}</key><value>{escape(v)}</value></item>" for k, v in i.tags)
    reason = escape(i.error[:200]) if state == "stopped" else ""
    extra = []
    if i.key_name:
        extra.append(f"<keyName>{escape(i.key_name)}</keyName>")
    if i.client_token:
        extra.append(f"<clientToken>{escape(i.client_token)}</clientToken>")
    if i.ip:
        extra.append(f"<privateIpAddress>{i.ip}</privateIpAddress><ipAddress>{i.ip}</ipAddress>")
    if reason:
        extra.append(f"<stateReason><code>Server.InternalError</code><message>{reason}</message>"
                     "</stateReason>")
    return (f"<item><reservationId>{escape(i.reservation)}</reservationId>"
            f"<ownerId>{owner_account(i.owner_id)}</ownerId><groupSet/><instancesSet><item>"
            f"<instanceId>{i.instance_id}</instanceId><imageId>{escape(i.image_ref)}</imageId>"
            f"<instanceState><code>{STATE_CODE[state]}</code><name>{state}</name></instanceState>"
            f"<privateDnsName/><dnsName/><reason>{reason}</reason>"
            f"<amiLaunchIndex>{i.launch_index}</amiLaunchIndex>"
            f"<instanceType>{escape(i.instance_type)}</instanceType>"
            f"<launchTime>{iso_time(i.created_at)}</launchTime>"
            f"<placement><availabilityZone>{zone}</availabilityZone><tenancy>default</tenancy>"
            f"</placement><monitoring><state>disabled</state></monitoring>{''.join(extra)}"
            f"<architecture>x86_64</architecture><rootDeviceType>instance-store</rootDeviceType>"
            f"<virtualizationType>hvm</virtualizationType><hypervisor>xen</hypervisor>"
            f"<tagSet>{tags}</tagSet><groupSet/></item></instancesSet></item>")


def _zone(region: str) -> str:
    return f"{region}{ZONE[-2:]}" if region else ZONE


def _ids(p: Params, name: str = "InstanceId") -> list[int]:
    return [parse_instance_id(v) for v in p.strings(name)]


def run_instances(cloud: Cloud, who: Actor, p: Params, region: str) -> dict[str, Any]:
    image = p.text("ImageId", required=True, max_len=64)
    assert image is not None
    min_count = p.integer("MinCount", 1, 1, 10_000)
    max_count = p.integer("MaxCount", 1, 1, 10_000)
    assert min_count is not None and max_count is not None
    user_data = p.text("UserData", max_len=22000)  # EC2: 16 KB before base64
    reservation, found = cloud.ec2.run_instances(
        who, image, p.text("InstanceType", max_len=64), min_count, max_count, user_data=user_data,
        key_name=p.text("KeyName", max_len=255), client_token=p.text("ClientToken", max_len=64),
        tags=p.tag_specifications("instance"))
    return {"reservationId": reservation, "ownerId": owner_account(who.user_id), "groupSet": [],
            "instancesSet": [_instance(i, region) for i in found]}


def describe_instances(cloud: Cloud, who: Actor, p: Params, region: str) -> dict[str, Any]:
    ids = _ids(p)
    found, token = cloud.ec2.describe_instances(
        who, ids=ids or None, filters=p.filters(), max_results=p.integer("MaxResults", None, 0, 1_000_000),
        next_token=p.text("NextToken", max_len=64))
    zone = _zone(region)
    return {"reservationSet": Raw("".join(_instance_xml(i, zone) for i in found)), "nextToken": token}


def _changes(key: str, changes: list[StateChange]) -> dict[str, Any]:
    return {key: [{"instanceId": c.instance_id, "currentState": _state(c.current),
                   "previousState": _state(c.previous)} for c in changes]}


def _verb(verb: str) -> Handler:
    def handler(cloud: Cloud, who: Actor, p: Params, region: str) -> dict[str, Any]:
        del region
        changes = cloud.ec2.change_state(who, _ids(p), verb, force=p.boolean("Force"))
        if verb == "reboot":
            return {"return": True}
        return _changes("instancesSet", changes)
    return handler


def describe_instance_status(cloud: Cloud, who: Actor, p: Params, region: str) -> dict[str, Any]:
    ids = _ids(p)
    found, token = cloud.ec2.describe_instances(
        who, ids=ids or None, filters=p.filters(), max_results=p.integer("MaxResults", None, 0, 1_000_000),
        next_token=p.text("NextToken", max_len=64))
    if not p.boolean("IncludeAllInstances"):
        found = [i for i in found if i.ec2_state == "running"]
    out = []
    for i in found:
        ok = "ok" if i.ec2_state == "running" else "not-applicable"
        summary = {"status": ok, "details": [{"name": "reachability",
                                              "status": "passed" if ok == "ok" else "initializing"}]}
        out.append({"instanceId": i.instance_id, "availabilityZone": ZONE if not region else f"{region}a",
                    "instanceState": _state(i.ec2_state),
                    "instanceStatus": summary, "systemStatus": summary})
    return {"instanceStatusSet": out, "nextToken": token}


def describe_images(cloud: Cloud, who: Actor, p: Params, region: str) -> dict[str, Any]:
    del region
    images = cloud.ec2.describe_images(who, ids=p.strings("ImageId"), owners=p.strings("Owner"),
                                       filters=p.filters())
    return {"imagesSet": [{
        "imageId": o["id"], "imageLocation": o["location"], "imageState": o["state"],
        "imageOwnerId": owner_account(o["owner"]), "isPublic": o["public"], "architecture": "x86_64",
        "imageType": "machine", "name": o["name"], "description": o["description"],
        "rootDeviceType": "instance-store", "virtualizationType": "hvm", "hypervisor": "xen",
        "tagSet": [{"key": k, "value": v} for k, v in o["tags"]],
    } for o in images]}


def create_tags(cloud: Cloud, who: Actor, p: Params, region: str) -> dict[str, Any]:
    del region
    cloud.ec2.create_tags(who, p.strings("ResourceId"), [(k, v or "") for k, v in p.tags()])
    return {"return": True}


def delete_tags(cloud: Cloud, who: Actor, p: Params, region: str) -> dict[str, Any]:
    del region
    cloud.ec2.delete_tags(who, p.strings("ResourceId"), p.tags())
    return {"return": True}


def describe_tags(cloud: Cloud, who: Actor, p: Params, region: str) -> dict[str, Any]:
    del region
    tags = cloud.ec2.describe_tags(who, p.filters())
    return {"tagSet": [{"resourceId": t["resource_id"], "resourceType": t["resource_type"],
                        "key": t["key"], "value": t["value"]} for t in tags]}


def _key(k: dict[str, Any]) -> dict[str, Any]:
    return {"keyPairId": k["pair_id"], "keyName": k["name"], "keyFingerprint": k["fingerprint"],
            "keyType": k["key_type"], "createTime": iso_time(k["created_at"])}


def create_key_pair(cloud: Cloud, who: Actor, p: Params, region: str) -> dict[str, Any]:
    del region
    name = p.text("KeyName", required=True, max_len=255)
    assert name is not None
    k = cloud.ec2.create_key_pair(who, name, p.text("KeyType", max_len=16) or "rsa")
    return {"keyPairId": k["pair_id"], "keyName": k["name"], "keyFingerprint": k["fingerprint"],
            "keyMaterial": k["material"]}


def import_key_pair(cloud: Cloud, who: Actor, p: Params, region: str) -> dict[str, Any]:
    del region
    name = p.text("KeyName", required=True, max_len=255)
    material = p.text("PublicKeyMaterial", required=True, max_len=16384)
    assert name is not None and material is not None
    try:
        raw = base64.b64decode(material, validate=True)
    except (binascii.Error, ValueError):
        raise ProtocolError("InvalidParameterValue", "PublicKeyMaterial must be base64") from None
    k = cloud.ec2.import_key_pair(who, name, raw)
    return {"keyPairId": k["pair_id"], "keyName": k["name"], "keyFingerprint": k["fingerprint"]}


def describe_key_pairs(cloud: Cloud, who: Actor, p: Params, region: str) -> dict[str, Any]:
    del region
    keys = cloud.ec2.describe_key_pairs(who, p.strings("KeyName"), p.strings("KeyPairId"), p.filters())
    out = []
    for k in keys:
        row = _key(k)
        if p.boolean("IncludePublicKey"):
            row["publicKey"] = k["public_key"]
        out.append(row)
    return {"keySet": out}


def delete_key_pair(cloud: Cloud, who: Actor, p: Params, region: str) -> dict[str, Any]:
    del region
    cloud.ec2.delete_key_pair(who, p.text("KeyName", max_len=255), p.text("KeyPairId", max_len=64))
    return {"return": True}


def describe_instance_types(cloud: Cloud, who: Actor, p: Params, region: str) -> dict[str, Any]:
    del who, region
    wanted = p.strings("InstanceType")
    types = [t for t in cloud.ec2.instance_types.values() if not wanted or t.name in wanted]
    return {"instanceTypeSet": [{
        "instanceType": t.name, "currentGeneration": True, "bareMetal": False,
        "hypervisor": "xen", "supportedRootDeviceTypes": ["instance-store"],
        "vCpuInfo": {"defaultVCpus": t.vcpu, "defaultCores": t.vcpu, "defaultThreadsPerCore": 1},
        "memoryInfo": {"sizeInMiB": t.memory_mb},
        "processorInfo": {"supportedArchitectures": ["x86_64"]},
    } for t in types]}


def describe_regions(cloud: Cloud, who: Actor, p: Params, region: str) -> dict[str, Any]:
    del cloud, who, p
    name = region or "vocloud"
    return {"regionInfo": [{"regionName": name, "regionEndpoint": "/ec2/",
                            "optInStatus": "opt-in-not-required"}]}


def describe_availability_zones(cloud: Cloud, who: Actor, p: Params, region: str) -> dict[str, Any]:
    del cloud, who, p
    name = region or "vocloud"
    return {"availabilityZoneInfo": [{"zoneName": f"{name}a", "zoneState": "available",
                                      "regionName": name, "zoneId": f"{name}-az1",
                                      "zoneType": "availability-zone", "messageSet": []}]}


def describe_account_attributes(cloud: Cloud, who: Actor, p: Params, region: str) -> dict[str, Any]:
    del p, region
    q = cloud.accounts.get_quota(who, "user", who.user_id)
    limit = q["vms"]["limit"]
    limit = limit if limit >= 0 else 10_000
    attrs = {"supported-platforms": ["VPC"], "default-vpc": ["none"], "max-instances": [str(limit)],
             "max-elastic-ips": ["0"], "vpc-max-elastic-ips": ["0"]}
    return {"accountAttributeSet": [
        {"attributeName": k, "attributeValueSet": [{"attributeValue": v} for v in vs]}
        for k, vs in attrs.items()]}


def get_console_output(cloud: Cloud, who: Actor, p: Params, region: str) -> dict[str, Any]:
    """The guest's console log (base64, as EC2 sends it); MANAGE right, as ``vm log``."""
    del region
    text = p.text("InstanceId", required=True, max_len=64)
    assert text is not None
    vm_id = parse_instance_id(text)
    log = cloud.ec2.console_output(who, vm_id)
    return {"instanceId": text, "timestamp": iso_time(None),
            "output": base64.b64encode(log.encode("utf-8", "replace")[-65536:]).decode()}


def describe_addresses(cloud: Cloud, who: Actor, p: Params, region: str) -> dict[str, Any]:
    """No elastic IPs here: an empty list (libcloud's list_nodes asks for them)."""
    del cloud, who, p, region
    return {"addressesSet": []}


ACTIONS: dict[str, Handler] = {
    "RunInstances": run_instances,
    "DescribeInstances": describe_instances,
    "TerminateInstances": _verb("terminate"),
    "StopInstances": _verb("stop"),
    "StartInstances": _verb("start"),
    "RebootInstances": _verb("reboot"),
    "DescribeInstanceStatus": describe_instance_status,
    "DescribeImages": describe_images,
    "CreateTags": create_tags,
    "DeleteTags": delete_tags,
    "DescribeTags": describe_tags,
    "CreateKeyPair": create_key_pair,
    "ImportKeyPair": import_key_pair,
    "DescribeKeyPairs": describe_key_pairs,
    "DeleteKeyPair": delete_key_pair,
    "DescribeInstanceTypes": describe_instance_types,
    "DescribeRegions": describe_regions,
    "DescribeAvailabilityZones": describe_availability_zones,
    "DescribeAccountAttributes": describe_account_attributes,
    "DescribeAddresses": describe_addresses,
    "GetConsoleOutput": get_console_output,
}
