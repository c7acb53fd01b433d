"""Tests of the template language: ONE syntax, JSON, TOML, the Template API and VMTemplate."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vocloud.errors import InvalidInput, ParseError
from vocloud.model.template import MAX_MEMORY_MIB, Template, parse_size_mib, parse_template
from vocloud.model.vmspec import DiskRef, NicRef, VMTemplate

EXAMPLE = """\
NAME = "worker"            # comments with # to end of line
CPU=1
VCPU = 2
MEMORY=512                 # MiB
DISK=[IMAGE="base",TARGET="vda"]
DISK=[ IMAGE_ID = 3,
       TARGET = "vdb" ]      # vectors may span lines; repeated vectors are a list
NIC=[NETWORK="private"]
CONTEXT=[HOSTNAME="$NAME", SSH_PUBLIC_KEY="ssh-ed25519 AAA...", VO="atlas", TOKEN=YES]
SCHED_REQUIREMENTS="FREE_CPU > 1 & HYPERVISOR = \\"qemu\\""
SCHED_RANK="-RUNNING_VMS"
DESCRIPTION="multi
line strings are allowed inside double quotes"
"""


def parse_error(text: str, fmt: str = "auto") -> ParseError:
    with pytest.raises(ParseError) as info:
        parse_template(text, fmt)
    return info.value


# --------------------------------------------------------------------------------------------
# ONE syntax: good input
# --------------------------------------------------------------------------------------------


def test_example_template_parses_to_the_data_model() -> None:
    t = parse_template(EXAMPLE)
    assert t.to_dict() == {
        "NAME": "worker",
        "CPU": "1",
        "VCPU": "2",
        "MEMORY": "512",
        "DISK": [{"IMAGE": "base", "TARGET": "vda"}, {"IMAGE_ID": "3", "TARGET": "vdb"}],
        "NIC": {"NETWORK": "private"},
        "CONTEXT": {
            "HOSTNAME": "$NAME",
            "SSH_PUBLIC_KEY": "ssh-ed25519 AAA...",
            "VO": "atlas",
            "TOKEN": "YES",
        },
        "SCHED_REQUIREMENTS": 'FREE_CPU > 1 & HYPERVISOR = "qemu"',
        "SCHED_RANK": "-RUNNING_VMS",
        "DESCRIPTION": "multi\nline strings are allowed inside double quotes",
    }
    assert list(t) == [
        *("NAME", "CPU", "VCPU", "MEMORY", "DISK", "NIC", "CONTEXT"),
        *("SCHED_REQUIREMENTS", "SCHED_RANK", "DESCRIPTION"),
    ]


def test_comments_and_blank_lines_are_ignored_but_hash_inside_values_is_kept() -> None:
    t = parse_template('# header\n\n   # indented\nA = "x # not a comment"  # a comment\nB=a#b\n')
    assert t.to_dict() == {"A": "x # not a comment", "B": "a#b"}


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "  \t\n# c\n   "])
def test_empty_template_is_valid(text: str) -> None:
    t = parse_template(text)
    assert len(t) == 0
    assert t == Template()
    assert t.to_one() == ""


def test_keys_are_case_insensitive_and_stored_upper() -> None:
    t = parse_template("cpu=1\nDisk=[image=base, Target=vda]\n")
    assert t.to_dict() == {"CPU": "1", "DISK": {"IMAGE": "base", "TARGET": "vda"}}
    assert "cpu" in t and "CPU" in t and "memory" not in t
    assert t.get("Cpu") == "1"


def test_multi_line_vector_with_trailing_comma() -> None:
    t = parse_template("DISK = [\n  IMAGE = base,\n\n  TARGET = vda,\n]\nCPU = 2\n")
    assert t.to_dict() == {"DISK": {"IMAGE": "base", "TARGET": "vda"}, "CPU": "2"}


def test_empty_vector() -> None:
    assert parse_template("CONTEXT=[]").to_dict() == {"CONTEXT": {}}


def test_repeated_vectors_collect_into_a_list_in_order() -> None:
    t = parse_template("NIC=[NETWORK=a]\nCPU=1\nNIC=[NETWORK=b]\nNIC=[NETWORK_ID=7]\n")
    assert t.vectors("NIC") == [{"NETWORK": "a"}, {"NETWORK": "b"}, {"NETWORK_ID": "7"}]
    assert list(t) == ["NIC", "CPU"]


def test_repeated_scalar_is_kept_but_get_refuses_to_choose() -> None:
    t = parse_template("FEATURE=acpi\nFEATURE=pae\n")
    assert t.attrs["FEATURE"] == ["acpi", "pae"]
    with pytest.raises(InvalidInput, match="FEATURE is given 2 times"):
        t.get("FEATURE")


def test_double_quoted_escapes() -> None:
    t = parse_template(r'A="say \"hi\"" ' "\n" r'B="back\\slash" ' "\n" r'C="a\nb\tc" ' "\n" r'D="\d+"')
    assert t.to_dict() == {"A": 'say "hi"', "B": "back\\slash", "C": "a\nb\tc", "D": "\\d+"}


def test_single_quoted_strings() -> None:
    t = parse_template("A='it\\'s'\nB='say \"hi\"'\nC=''\nDISK=[IMAGE='base']\n")
    assert t.to_dict() == {"A": "it's", "B": 'say "hi"', "C": "", "DISK": {"IMAGE": "base"}}


def test_crlf_line_endings() -> None:
    t = parse_template('CPU=1\r\nDISK=[IMAGE="a",\r\n TARGET="vda"]\r\nNAME="x"\r\n')
    assert t.to_dict() == {"CPU": "1", "DISK": {"IMAGE": "a", "TARGET": "vda"}, "NAME": "x"}


def test_unquoted_words_keep_punctuation() -> None:
    t = parse_template("RANK=-RUNNING_VMS\nURL=http://x/y?a#frag\nPATH=/var/lib/one\n")
    assert t.to_dict() == {"RANK": "-RUNNING_VMS", "URL": "http://x/y?a#frag", "PATH": "/var/lib/one"}


# --------------------------------------------------------------------------------------------
# ONE syntax: bad input, with exact positions
# --------------------------------------------------------------------------------------------


def test_unterminated_string_is_reported_where_it_started() -> None:
    err = parse_error('CPU=1\nNAME = "worker\nMEMORY=2\n')
    assert (err.line, err.column) == (2, 8)
    assert "unterminated string" in err.reason
    assert str(err).startswith("template:2:8: ")


def test_unterminated_single_quoted_string() -> None:
    err = parse_error("A=1\n\n  B='abc\\'")
    assert (err.line, err.column) == (3, 5)


def test_missing_equals_names_what_was_found() -> None:
    err = parse_error("CPU 1")
    assert (err.line, err.column) == (1, 5)
    assert err.reason == "expected '=' after CPU, found '1'"


def test_missing_equals_at_end_of_line() -> None:
    err = parse_error("CPU=1\nMEMORY\n")
    assert (err.line, err.column) == (2, 7)
    assert "found end of line" in err.reason


def test_missing_value() -> None:
    err = parse_error("CPU=")
    assert (err.line, err.column) == (1, 5)
    assert err.reason == "missing value for CPU"


def test_missing_closing_bracket_before_next_attribute() -> None:
    err = parse_error('DISK=[IMAGE="a"\nNIC=[NETWORK="x"]\n')
    assert (err.line, err.column) == (2, 1)
    assert "expected ',' or ']'" in err.reason and "'NIC'" in err.reason


def test_missing_closing_bracket_at_end_of_input_points_at_the_opening() -> None:
    err = parse_error('CPU=1\nDISK=[IMAGE="a",\n  TARGET="vda"\n')
    assert (err.line, err.column) == (2, 6)
    assert "missing ']'" in err.reason


def test_stray_comma_in_vector() -> None:
    err = parse_error('DISK=[IMAGE="a",,TARGET="b"]')
    assert (err.line, err.column) == (1, 17)
    assert err.reason == "unexpected ',' in vector DISK"


def test_leading_comma_in_vector() -> None:
    err = parse_error("CPU=1\nDISK=[ ,IMAGE=a]")
    assert (err.line, err.column) == (2, 8)


def test_stray_comma_after_top_level_value() -> None:
    err = parse_error("CPU=1,")
    assert (err.line, err.column) == (1, 6)
    assert "expected end of line" in err.reason


def test_two_attributes_on_one_line() -> None:
    err = parse_error("CPU=1 MEMORY=2")
    assert (err.line, err.column) == (1, 7)


@pytest.mark.parametrize(
    ("text", "line", "column", "reason"),
    [
        ("MY-KEY=1", 1, 3, "invalid character '-'"),
        ("CPU=1\n1CPU=1", 2, 1, "must start with a letter"),
        ("CPU!=1", 1, 4, "invalid character '!'"),
        ("DISK=[IM.AGE=a]", 1, 9, "invalid character '.'"),
        ('"CPU"=1', 1, 1, "expected an attribute name, found string"),
        ("=1", 1, 1, "expected an attribute name, found '='"),
    ],
)
def test_bad_key_characters(text: str, line: int, column: int, reason: str) -> None:
    err = parse_error(text)
    assert (err.line, err.column) == (line, column)
    assert reason in err.reason


def test_vector_inside_a_vector() -> None:
    err = parse_error("CPU=1\nDISK=[IMAGE=[X=1]]")
    assert (err.line, err.column) == (2, 13)
    assert "cannot contain another vector" in err.reason


def test_key_repeated_inside_one_vector() -> None:
    err = parse_error("DISK=[IMAGE=a,\n image=b]")
    assert (err.line, err.column) == (2, 2)


def test_scalar_and_vector_under_one_key() -> None:
    err = parse_error('DISK="a"\nDISK=[IMAGE=x]')
    assert (err.line, err.column) == (2, 1)
    assert "line 1" in err.reason


def test_error_names_the_source() -> None:
    with pytest.raises(ParseError, match=r"^worker\.tpl:1:5: "):
        parse_template("CPU 1", source="worker.tpl")


def test_parse_error_is_an_invalid_input() -> None:
    with pytest.raises(InvalidInput):
        parse_template("CPU=[", "one")


# --------------------------------------------------------------------------------------------
# JSON and TOML
# --------------------------------------------------------------------------------------------


def test_json_has_the_same_data_model() -> None:
    t = parse_template('{"cpu": 1, "MEMORY": "2G", "DISK": [{"IMAGE": "base", "SIZE": 10}], "HA": true}')
    assert t.to_dict() == {"CPU": "1", "MEMORY": "2G", "DISK": {"IMAGE": "base", "SIZE": "10"}, "HA": "YES"}
    assert t == parse_template('CPU=1\nMEMORY=2G\nDISK=[IMAGE=base,SIZE="10"]\nHA=YES')


def test_json_numbers_and_lists() -> None:
    t = parse_template(
        '  {"CPU": 0.5, "VCPU": 2.0, "OFF": false, "NIC": [{"NETWORK_ID": 1}, {"NETWORK": "b"}], "E": []}'
    )
    assert t.to_dict() == {
        "CPU": "0.5",
        "VCPU": "2",
        "OFF": "NO",
        "NIC": [{"NETWORK_ID": "1"}, {"NETWORK": "b"}],
    }


def test_json_syntax_error_has_line_and_column() -> None:
    err = parse_error('{\n  "CPU": 1,\n  "MEMORY": \n}')
    assert (err.line, err.column) == (4, 1)
    err = parse_error('{"CPU": 1,}', "json")
    assert (err.line, err.column) == (1, 11)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"CPU": 1, "cpu": 2}', "given twice"),
        ('{"CPU": null}', "CPU has no value"),
        ('{"DISK": {"IMAGE": {"X": 1}}}', "cannot contain another vector"),
        ('{"DISK": [{"IMAGE": "a"}, "b"]}', "mixes vectors"),
        ('{"A": [[1]]}', "list inside a list"),
        ('{"A-B": 1}', "invalid character '-'"),
        ('{"CPU": NaN}', "finite"),
    ],
)
def test_json_outside_the_data_model(text: str, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        parse_template(text)


def test_json_must_be_an_object() -> None:
    with pytest.raises(InvalidInput, match="must be an object"):
        parse_template("[1, 2]", "json")


TOML = """\
name = "worker"
cpu = 1.5
memory = "2G"

[[disk]]
image = "base"
target = "vda"

[[disk]]
image_id = 3

[context]
vo = "atlas"
token = true
"""


def test_toml_explicit_and_detected_by_table_headers() -> None:
    expected = {
        "NAME": "worker",
        "CPU": "1.5",
        "MEMORY": "2G",
        "DISK": [{"IMAGE": "base", "TARGET": "vda"}, {"IMAGE_ID": "3"}],
        "CONTEXT": {"VO": "atlas", "TOKEN": "YES"},
    }
    assert parse_template(TOML, "toml").to_dict() == expected
    assert parse_template(TOML).to_dict() == expected


def test_toml_inline_tables_are_detected_without_headers() -> None:
    t = parse_template('DISK = [{IMAGE = "a"}, {IMAGE_ID = 2}]\nCPU = 1\n')
    assert t.to_dict() == {"DISK": [{"IMAGE": "a"}, {"IMAGE_ID": "2"}], "CPU": "1"}


def test_text_valid_in_both_is_read_as_one_unless_told() -> None:
    assert parse_template("X = 0x1F").get("X") == "0x1F"
    assert parse_template("X = 0x1F", "toml").get("X") == "31"


def test_toml_syntax_error_has_line_and_column() -> None:
    err = parse_error("CPU = 1\n[CONTEXT]\nVO = atlas\n")
    assert (err.line, err.column) == (3, 6)
    err = parse_error("[CONTEXT\nVO = 'atlas'\n", "toml")
    assert (err.line, err.column) == (1, 9)


def test_toml_error_at_end_of_document() -> None:
    err = parse_error("CPU = 1\nMEMORY = ", "toml")
    assert (err.line, err.column) == (2, 10)


def test_toml_error_when_the_text_shows_toml_syntax() -> None:
    err = parse_error('CPU = 1\nDISK = [{IMAGE = "a"},\n  {IMAGE_ID = }]\n')
    assert (err.line, err.column) == (3, 15)


def test_without_toml_syntax_the_one_error_is_reported() -> None:
    err = parse_error("MY-KEY=1")  # valid TOML, but nothing TOML-only: the ONE error is the useful one
    assert (err.line, err.column) == (1, 3)
    err = parse_error("X=1\nB='abc\\'")  # ONE: unterminated; TOML would read a literal string
    assert (err.line, err.column) == (2, 3)


def test_header_like_line_inside_a_one_string_stays_one() -> None:
    t = parse_template('DESCRIPTION="notes:\n[CONTEXT]\nend"\nCPU=1\n')
    assert t.to_dict() == {"DESCRIPTION": "notes:\n[CONTEXT]\nend", "CPU": "1"}


def test_explicit_format_wins() -> None:
    err = parse_error('{"CPU": 1}', "one")
    assert (err.line, err.column) == (1, 1)
    with pytest.raises(ParseError):
        parse_template("CPU=1", "json")


def test_unknown_format() -> None:
    with pytest.raises(InvalidInput, match="unknown template format"):
        parse_template("CPU=1", "yaml")


# --------------------------------------------------------------------------------------------
# Template API
# --------------------------------------------------------------------------------------------


def test_typed_getters() -> None:
    t = parse_template("CPU=0.5\nVCPU=4\nMEMORY=1.5G\nHA=yes\nOFF=0")
    assert t.get_float("CPU") == 0.5
    assert t.get_int("VCPU") == 4
    assert t.get_size_mib("MEMORY") == 1536
    assert t.get_bool("HA") is True
    assert t.get_bool("OFF") is False
    assert t.get_int("MISSING", 7) == 7
    assert t.get("MISSING") is None
    assert t.get_bool("MISSING") is None


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512", 512),
        ("512M", 512),
        ("512mb", 512),
        ("512MiB", 512),
        ("2G", 2048),
        ("2gb", 2048),
        ("2 GiB", 2048),
        ("1T", 1048576),
        ("1.5G", 1536),
        ("1024K", 1),
        ("1K", 1),
        ("0", 0),
    ],
)
def test_size_units(text: str, size: int) -> None:
    assert parse_size_mib(text) == size


@pytest.mark.parametrize("text", ["12Q", "", "G", "-1G", "1.5.2G", "2GG", "1e3"])
def test_bad_sizes(text: str) -> None:
    with pytest.raises(InvalidInput, match="MEMORY must be a size"):
        parse_size_mib(text, "MEMORY")


@pytest.mark.parametrize(
    ("method", "value", "message"),
    [
        ("get_int", "abc", "CPU must be an integer, got 'abc'"),
        ("get_int", "1_000", "must be an integer"),
        ("get_float", "abc", "CPU must be a number, got 'abc'"),
        ("get_float", "nan", "must be a number"),
        ("get_bool", "maybe", "CPU must be YES or NO, got 'maybe'"),
    ],
)
def test_getter_errors_name_attribute_and_value(method: str, value: str, message: str) -> None:
    t = Template({"CPU": value})
    with pytest.raises(InvalidInput, match=message):
        getattr(t, method)("cpu")


def test_vector_and_scalar_accessors_refuse_the_other_kind() -> None:
    t = parse_template("CPU=1\nCONTEXT=[A=1]\nDISK=[IMAGE=a]\nDISK=[IMAGE=b]")
    with pytest.raises(InvalidInput, match="CONTEXT is a vector"):
        t.get("CONTEXT")
    with pytest.raises(InvalidInput, match="CPU must be a vector"):
        t.vectors("CPU")
    with pytest.raises(InvalidInput, match="DISK is given 2 times"):
        t.vector("DISK")
    assert t.vector("context") == {"A": "1"}
    assert t.vector("NIC") is None
    assert t.vectors("NIC") == []
    assert t.vectors("CONTEXT") == [{"A": "1"}]


def test_accessors_return_copies() -> None:
    t = parse_template("DISK=[IMAGE=a]")
    t.vectors("DISK")[0]["IMAGE"] = "changed"
    copied = t.to_dict()["DISK"]
    assert isinstance(copied, dict)
    copied["IMAGE"] = "changed"
    assert t.vector("DISK") == {"IMAGE": "a"}


def test_set_normalizes_and_empty_list_removes() -> None:
    t = Template()
    t.set("disk", [{"image": "a"}])
    t.set("nic", [{"NETWORK": "x"}, {"NETWORK": "y"}])
    t.set("cpu", "2")
    assert t.to_dict() == {"DISK": {"IMAGE": "a"}, "NIC": [{"NETWORK": "x"}, {"NETWORK": "y"}], "CPU": "2"}
    t.set("DISK", [])
    assert "DISK" not in t
    assert len(t) == 2
    with pytest.raises(InvalidInput, match="invalid character"):
        t.set("BAD KEY", "1")


def test_constructor_rejects_keys_equal_but_for_case() -> None:
    with pytest.raises(InvalidInput, match="given twice"):
        Template({"cpu": "1", "CPU": "2"})


def test_equality() -> None:
    assert parse_template("CPU=1\nMEMORY=2") == parse_template('memory="2"\ncpu=1')
    assert parse_template("CPU=1") != parse_template("CPU=2")
    assert Template() != {}


def test_merge_overrides_whole_keys_and_leaves_inputs_alone() -> None:
    base = parse_template("CPU=1\nMEMORY=512\nCONTEXT=[A=1,B=2]\nDISK=[IMAGE=a]")
    extra = parse_template("MEMORY=1G\nCONTEXT=[C=3]\nNIC=[NETWORK=n]")
    merged = base.merge(extra)
    assert merged.to_dict() == {
        "CPU": "1",
        "MEMORY": "1G",
        "CONTEXT": {"C": "3"},
        "DISK": {"IMAGE": "a"},
        "NIC": {"NETWORK": "n"},
    }
    assert list(merged) == ["CPU", "MEMORY", "CONTEXT", "DISK", "NIC"]
    assert base.get("MEMORY") == "512"
    context = merged.attrs["CONTEXT"]
    assert isinstance(context, dict)
    context["C"] = "changed"
    assert extra.vector("CONTEXT") == {"C": "3"}


def test_to_one_is_canonical_and_round_trips() -> None:
    t = parse_template(EXAMPLE)
    text = t.to_one()
    assert 'SCHED_REQUIREMENTS="FREE_CPU > 1 & HYPERVISOR = \\"qemu\\""\n' in text
    assert 'DESCRIPTION="multi\\nline strings are allowed inside double quotes"\n' in text
    assert 'DISK=[\n  IMAGE_ID="3",\n  TARGET="vdb" ]\n' in text
    assert parse_template(text) == t
    assert parse_template(text).to_one() == text


def test_round_trip_of_awkward_strings() -> None:
    t = Template({"A": 'q"uo\\te\r\n\ttab', "B": "", "C": "[x=1], #y", "D": ["1", "2"], "E": {}})
    assert parse_template(t.to_one(), "one") == t


keys = st.from_regex(r"[A-Z_][A-Z0-9_]{0,6}", fullmatch=True)
texts = st.text(max_size=12)
vectors = st.dictionaries(keys, texts, max_size=4)
values = st.one_of(
    texts,
    vectors,
    st.lists(vectors, min_size=2, max_size=3),
    st.lists(texts, min_size=2, max_size=3),
)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(keys, values, max_size=6))
def test_round_trip_property(attrs: dict[str, object]) -> None:
    t = Template(attrs)
    assert parse_template(t.to_one()) == t
    assert parse_template(json.dumps(t.to_dict())) == t


# --------------------------------------------------------------------------------------------
# VMTemplate
# --------------------------------------------------------------------------------------------


def test_vm_template_from_example() -> None:
    vm = VMTemplate.from_template(parse_template(EXAMPLE))
    assert vm.name == "worker"
    assert (vm.cpu, vm.vcpu, vm.memory_mib) == (1.0, 2, 512)
    assert vm.disks == (
        DiskRef("base", None, "vda", None, {"IMAGE": "base", "TARGET": "vda"}),
        DiskRef(None, 3, "vdb", None, {"IMAGE_ID": "3", "TARGET": "vdb"}),
    )
    assert vm.nics == (NicRef("private", None, None, {"NETWORK": "private"}),)
    assert vm.context["HOSTNAME"] == "$NAME"
    assert vm.requirements == 'FREE_CPU > 1 & HYPERVISOR = "qemu"'
    assert vm.rank == "-RUNNING_VMS"
    assert vm.template == parse_template(EXAMPLE)


def test_vm_template_defaults() -> None:
    vm = VMTemplate.from_template(Template())
    assert (vm.name, vm.cpu, vm.vcpu, vm.memory_mib) == (None, 1.0, 1, 512)
    assert (vm.disks, vm.nics, vm.context, vm.requirements, vm.rank) == ((), (), {}, None, None)


@pytest.mark.parametrize(("cpu", "vcpu"), [("0.5", 1), ("2.5", 3), ("4", 4)])
def test_vcpu_defaults_to_cpu_rounded_up(cpu: str, vcpu: int) -> None:
    assert VMTemplate.from_template(Template({"CPU": cpu})).vcpu == vcpu


def test_vm_template_sizes_ids_and_addresses() -> None:
    t = parse_template("MEMORY=16T\nDISK=[IMAGE_ID=0, SIZE=10G]\nNIC=[NETWORK_ID=2, IP=10.0.0.5]")
    vm = VMTemplate.from_template(t)
    assert vm.memory_mib == MAX_MEMORY_MIB
    assert (vm.disks[0].image_id, vm.disks[0].size_mib) == (0, 10240)
    assert (vm.nics[0].network_id, vm.nics[0].ip) == (2, "10.0.0.5")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("CPU=abc", "CPU must be a number, got 'abc'"),
        ("CPU=0", "CPU must be at least 0.01, got '0'"),
        ("CPU=-1", "CPU must be at least 0.01, got '-1'"),
        ("CPU=0.0004", "CPU must be at least 0.01, got '0.0004'"),
        ("CPU=0.00999", "CPU must be at least 0.01, got '0.00999'"),
        ("CPU=1e-300", "CPU is out of range"),
        ("CPU=1024.001", "CPU must be at most 1024"),
        ("KERNEL=vmlinuz", "KERNEL must be an absolute path"),
        ("KERNEL=/k\nKERNEL_IMAGE=k", "give KERNEL_IMAGE or KERNEL, not both"),
        ("ACCEL=hvf", "ACCEL must be one of kvm, tcg"),
        ("MACHINE=\"pc -device x\"", "MACHINE must be a word"),
        ("SIM_BOOT=maybe", "SIM_BOOT must be one of ok, fail, hang"),
        ("READY_MARKER=\"\"", "READY_MARKER must be one line"),
        ("NIC=[NETWORK=n, MODEL=e1000]", "NIC #1 MODEL must be virtio"),
        ("CPU=2000", "CPU must be at most 1024, got '2000'"),
        ("VCPU=0", "VCPU must be a positive integer, got '0'"),
        ("VCPU=1.5", "VCPU must be a positive integer, got '1.5'"),
        ("MEMORY=12Q", "MEMORY must be a size such as 512, 512M or 2G, got '12Q'"),
        ("MEMORY=0", "MEMORY must be greater than 0, got '0'"),
        ("MEMORY=17T", "MEMORY must be at most 16T"),
        ('NAME="my vm"', "NAME may only use letters, digits, '.', '_' and '-', got 'my vm'"),
        ("NAME=" + "a" * 129, "NAME must be at most 128 characters, got 129"),
        ("DISK=[TARGET=vda]", "DISK #1 needs IMAGE or IMAGE_ID"),
        ("DISK=[IMAGE=a]\nDISK=[IMAGE_ID=x]", "DISK #2 IMAGE_ID must be an id"),
        ("DISK=[IMAGE=a, SIZE=big]", "DISK #1 SIZE must be a size"),
        ("NIC=[IP=10.0.0.1]", "NIC #1 needs NETWORK or NETWORK_ID"),
        ("NIC=[NETWORK=n, IP=10.0.0.300]", "NIC #1 IP must be an IP address, got '10.0.0.300'"),
        ("CONTEXT=[A=1]\nCONTEXT=[B=2]", "CONTEXT is given 2 times"),
        ("DISK=vda", "DISK must be a vector"),
    ],
)
def test_vm_template_errors_name_attribute_and_value(text: str, message: str) -> None:
    t = parse_template(text)
    with pytest.raises(InvalidInput) as info:
        VMTemplate.from_template(t)
    assert message in info.value.message
    assert not isinstance(info.value, ParseError)


def test_vm_template_error_details_are_machine_readable() -> None:
    with pytest.raises(InvalidInput) as info:
        VMTemplate.from_template(parse_template("MEMORY=12Q"))
    assert info.value.to_dict()["details"] == {"attribute": "MEMORY", "value": "12Q"}


_SIMPLE_KEYS = st.sampled_from(["CPU", "cpu", "Name", "_x", "A1", "1A", "a b", "VMID"])
_SIMPLE_VALUES = st.text(alphabet='aZ9 _"\\\n\r\t=[],#\'', max_size=6)
_SIMPLE_LINES = st.lists(st.tuples(_SIMPLE_KEYS, _SIMPLE_VALUES, st.sampled_from(
    ['{k}="{v}"', "{k}={v}", '{k}="{v}', "", "# {v}"])), max_size=5)


@settings(max_examples=400, deadline=None)
@given(_SIMPLE_LINES, st.sampled_from(["", "\n"]))
def test_simple_fast_path_gives_what_the_full_parser_gives(lines: list[tuple[str, str, str]],
                                                           end: str) -> None:
    """``KEY="value"`` lines are read by one regular expression (the stored templates of 10,000
    VMs); anything else, and every error, is the full parser's, and both agree."""
    from vocloud.model.template import _Lexer, _parse_simple, _Parser

    text = "\n".join(form.format(k=k, v=v) for k, v, form in lines) + end
    fast = _parse_simple(text)
    try:
        full = _Parser(_Lexer(text, "t").tokens(), "t").parse()
    except (ParseError, InvalidInput):
        assert fast is None  # the fast path never accepts what the parser refuses
        return
    if fast is not None:
        assert list(fast.attrs.items()) == list(full.attrs.items())


def test_simple_fast_path_declines_repeats_vectors_and_escapes() -> None:
    from vocloud.model.template import _parse_simple

    assert _parse_simple('CPU="1"\nMEMORY="512"\nNAME="w-1"\n') is not None
    for text in ('CPU="1"\ncpu="2"\n', 'DISK=[IMAGE="a"]\n', 'A="x\\"y"\n', "CPU=1\n", " CPU=\"1\"\n"):
        assert _parse_simple(text) is None, text
    with pytest.raises(ParseError):
        parse_template('CPU="1"\nMEMORY="512', fmt="one")
    assert parse_template('CPU="1"\ncpu="2"\n', fmt="one").attrs["CPU"] == ["1", "2"]


@pytest.mark.parametrize("text", [
    'CPU="1"\nMEMORY="512"\n',
    'NAME="a"\nCPU="1"\nNIC=[NETWORK="n"]\nCONTEXT=[X="1", Y="a \\"q\\""]\n'
    'DISK=[IMAGE_ID="3"]\nDISK=[IMAGE_ID="4"]\n',
    'VMID="7"\nCPU="2"\nNAME="b"\nNIC=[NETWORK="n"]\nNIC=[NETWORK="m"]\n',
])
def test_to_one_many_is_to_one_of_each_copy(text: str) -> None:
    """``vm create --count N`` renders what the N templates share once: the text must be what
    setting each VM's keys on a copy and rendering it gives, key order included."""
    base = parse_template(text, fmt="one")
    items: list[dict[str, object]] = [
        {"NIC": [{"NETWORK": "n", "IP": f"10.0.0.{i}"}, {"NETWORK": "m"}], "VMID": str(i),
         "NAME": f"vm-{i}\n\"x\""} for i in range(3)]
    items.append({"NIC": [], "VMID": 9, "NAME": "last"})  # an empty list removes the key
    items.append({"NIC": {"NETWORK": "n"}, "VMID": "10", "NAME": "one"})
    want = []
    for item in items:
        t = base.copy()
        for key, value in item.items():
            t.set(key, value)  # type: ignore[arg-type]
        want.append(t.to_one())
    assert base.to_one_many(items) == want
    assert base.to_one_many([]) == []
    with pytest.raises(ValueError, match="same keys"):
        base.to_one_many([{"VMID": "1"}, {"NAME": "x"}])
