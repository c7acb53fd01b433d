"""The NoCloud seed: file contents (pure) and, where an ISO tool exists, the image itself."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from vocloud.drivers.base import DomainSpec, NicSpec
from vocloud.drivers.context import (
    SEED_LABEL,
    build_seed_iso,
    context_sh,
    hostname_for,
    seed_files,
    shell_quote,
)
from vocloud.errors import InvalidInput


def spec(context: dict[str, str], nics: tuple[NicSpec, ...] = (), name: str = "worker 7") -> DomainSpec:
    return DomainSpec(vm_id=7, deploy_id="vc-7", name=name, cpu=1, vcpu=1, memory_mib=128,
                      nics=nics, context=context)


def yaml_value(doc: str, key: str) -> str:
    """Our YAML scalars are JSON strings, so a line-level lookup plus json.loads reads them back."""
    for line in doc.splitlines():
        if line.strip().startswith(f"{key}:"):
            return str(json.loads(line.split(":", 1)[1].strip()))
    raise AssertionError(f"{key} not in {doc!r}")


def test_meta_data_names_instance_and_host() -> None:
    files = seed_files(spec({"HOSTNAME": "wn-07"}))
    assert yaml_value(files["meta-data"], "instance-id") == "vc-7"
    assert yaml_value(files["meta-data"], "local-hostname") == "wn-07"


def test_hostname_falls_back_to_a_dns_safe_vm_name() -> None:
    assert hostname_for(spec({}, name="worker 7 (atlas)")) == "worker-7-atlas"
    assert hostname_for(spec({}, name="***")) == "vc-7"


def test_user_data_is_cloud_config_with_keys_and_context_file() -> None:
    ctx = {"SSH_PUBLIC_KEY": "ssh-ed25519 AAAA one\nssh-rsa BBBB two", "VO_NAME": "atlas"}
    doc = seed_files(spec(ctx))["user-data"]
    assert doc.startswith("#cloud-config\n")
    assert '  - "ssh-ed25519 AAAA one"' in doc and '  - "ssh-rsa BBBB two"' in doc
    payload = base64.b64decode(yaml_value(doc, "content")).decode()
    assert payload == context_sh(ctx)


def test_values_cannot_inject_yaml_structure() -> None:
    doc = seed_files(spec({"HOSTNAME": "h1", "SSH_PUBLIC_KEY": 'x"\nruncmd: [reboot]'}))["user-data"]
    assert "\nruncmd:" not in doc


@pytest.mark.parametrize("value", ["plain", "it's", "a'b'c", "$HOME `id` $(id)", "two\nlines", ""])
def test_context_sh_round_trips_through_a_real_shell(tmp_path: Path, value: str) -> None:
    script = tmp_path / "context.sh"
    script.write_text(context_sh({"VALUE": value, "OTHER": "x"}))
    out = subprocess.run(["sh", "-c", f'. {shell_quote(str(script))}; printf %s "$VALUE"'],
                         capture_output=True, text=True, check=True).stdout
    assert out == value


@pytest.mark.parametrize("key", ["1ABC", "A-B", "A B", "", "A;rm"])
def test_bad_variable_names_are_rejected(key: str) -> None:
    with pytest.raises(InvalidInput, match="context variable name"):
        seed_files(spec({key: "v"}))


def test_bad_hostname_is_rejected() -> None:
    with pytest.raises(InvalidInput, match="HOSTNAME"):
        seed_files(spec({"HOSTNAME": "bad_host.name"}))


def test_network_config_matches_nics_by_mac() -> None:
    nics = (NicSpec("pub", "10.0.0.5", "02:00:0A:00:00:05"),
            NicSpec("priv", "192.168.1.9", "02:00:c0:a8:01:09"))
    ctx = {"ETH0_GATEWAY": "10.0.0.1", "ETH0_MASK": "255.255.255.0", "ETH1_MASK": "16",
           "DNS": "10.0.0.2 10.0.0.3"}
    doc = seed_files(spec(ctx, nics))["network-config"]
    assert doc.startswith("version: 2\n")
    assert '"02:00:0a:00:00:05"' in doc and '["10.0.0.5/24"]' in doc
    assert '["192.168.1.9/16"]' in doc
    assert 'gateway4: "10.0.0.1"' in doc
    assert '"10.0.0.2", "10.0.0.3"' in doc


def test_no_nics_is_an_empty_network_config() -> None:
    assert seed_files(spec({}))["network-config"] == "version: 2\nethernets: {}\n"


@pytest.mark.skipif(not any(shutil.which(t) for t in ("xorriso", "genisoimage", "mkisofs")),
                    reason="no ISO tool (apt-get install xorriso or genisoimage)")
def test_iso_is_labelled_cidata_and_holds_the_files(tmp_path: Path) -> None:
    iso = build_seed_iso(spec({"VALUE": "42"}), tmp_path / "seed.iso")
    data = iso.read_bytes()
    # ISO9660 primary volume descriptor at sector 16; volume id at offset 40, 32 bytes.
    pvd = data[16 * 2048:17 * 2048]
    assert pvd[1:6] == b"CD001"
    assert pvd[40:72].decode().strip() == SEED_LABEL
    for name in (b"meta-data", b"user-data", b"network-config", b"context.sh"):
        assert name in data
    assert b"VALUE='42'" in data
    assert not (tmp_path / "seed.iso.part").exists()


@pytest.mark.parametrize(("text", "ctype"), [
    ("#!/bin/sh\necho hi\n", "text/x-shellscript"),
    ("#cloud-config\nruncmd: [ls]\n", "text/cloud-config"),
    ("just some words", "text/plain"),
])
def test_users_user_data_is_a_second_multipart_part(text: str, ctype: str) -> None:
    """EC2's UserData (base64 in CONTEXT/USER_DATA) reaches cloud-init beside vocloud's own
    cloud-config, as a MIME multipart that Python's email parser (like cloud-init's) reads."""
    import email

    ctx = {"USER_DATA": base64.b64encode(text.encode()).decode(), "USER_DATA_ENCODING": "base64"}
    doc = seed_files(spec(ctx))["user-data"]
    msg = email.message_from_string(doc)
    assert msg.is_multipart()
    parts = [p for p in msg.walk() if not p.is_multipart()]
    assert [p.get_content_type() for p in parts] == ["text/cloud-config", ctype]
    payloads = [p.get_payload(decode=True) for p in parts]
    assert all(isinstance(x, bytes) for x in payloads)
    assert bytes(payloads[0]).decode().startswith("#cloud-config\n")
    assert bytes(payloads[1]).decode() == text
    assert doc == seed_files(spec(ctx))["user-data"]  # deterministic (the boundary too)


def test_undecodable_user_data_stays_out_of_the_seed() -> None:
    ctx = {"USER_DATA": "!!not base64!!", "USER_DATA_ENCODING": "base64"}
    assert seed_files(spec(ctx))["user-data"].startswith("#cloud-config\n")
    plain = seed_files(spec({"USER_DATA": "#!/bin/sh\ntrue\n"}))["user-data"]
    assert "text/x-shellscript" in plain
