"""Instance types: the administrator's text -> sizes; every bad entry named."""

from __future__ import annotations

import pytest

from vocloud.errors import InvalidInput
from vocloud.model.instance_types import InstanceType, parse_instance_types


def test_defaults_are_opennebulas_occi_sizes() -> None:
    types = parse_instance_types("")
    assert list(types) == ["small", "medium", "large"]
    assert types["medium"] == InstanceType("medium", cpu_centi=400, memory_mb=4096, vcpu=4)
    assert types["small"].attributes() == {"CPU": "1", "VCPU": "1", "MEMORY": "1024"}


def test_fractional_cpu_and_explicit_vcpu() -> None:
    types = parse_instance_types("tiny=0.25:256, gpu.big=16:65536:32\nhalf=1.5:2048")
    assert types["tiny"].attributes() == {"CPU": "0.25", "VCPU": "1", "MEMORY": "256"}
    assert types["gpu.big"].vcpu == 32
    assert types["half"].attributes()["CPU"] == "1.5"
    assert types["half"].vcpu == 2


@pytest.mark.parametrize(("text", "names"), [
    ("small", "small"), ("small=1", "small"), ("small=1:2:3:4", "small"), ("=1:2", "=1:2"),
    ("a=1:1024, a=2:2048", "defined twice"), ("x=0:1024", "at least 0.01"), ("x=1:0", "MEMORY_MB"),
    ("x=1:-5", "MEMORY_MB"), ("x=1:1024:0", "VCPU"), ("x=abc:1024", "CPU"), ("9x=1:1", "9x"),
    ("x=1:1024:1e3", "VCPU"), (" , ,", "no type"),
])
def test_bad_entries_are_named(text: str, names: str) -> None:
    with pytest.raises(InvalidInput, match="instance_types") as err:
        parse_instance_types(text)
    assert names in str(err.value)
