"""SigV4 canonicalisation against the example values AWS publishes (IAM ListUsers walkthrough of
"Signature Version 4 signing process", and the get-vanilla case of the SigV4 test suite)."""

from __future__ import annotations

import hashlib

import pytest

from vocloud.service import sigv4

SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"


def test_iam_list_users_example() -> None:
    headers = {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8",
               "Host": "iam.amazonaws.com", "X-Amz-Date": "20150830T123600Z"}
    auth = sigv4.parse_authorization(
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, "
        "SignedHeaders=content-type;host;x-amz-date, "
        "Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7")
    canonical = sigv4.canonical_request("GET", "/", "Action=ListUsers&Version=2010-05-08", headers,
                                        auth.signed_headers, sigv4.EMPTY_SHA256)
    assert hashlib.sha256(canonical.encode()).hexdigest() == \
        "f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59"
    assert sigv4.signing_key(SECRET, "20150830", "us-east-1", "iam").hex() == \
        "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9"
    assert sigv4.signature(SECRET, auth, "20150830T123600Z", canonical) == auth.signature
    assert sigv4.signature(SECRET + "x", auth, "20150830T123600Z", canonical) != auth.signature


def test_get_vanilla() -> None:
    auth = sigv4.parse_authorization(
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, "
        "SignedHeaders=host;x-amz-date, "
        "Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31")
    canonical = sigv4.canonical_request(
        "GET", "/", "", {"host": "example.amazonaws.com", "x-amz-date": "20150830T123600Z"},
        auth.signed_headers, sigv4.EMPTY_SHA256)
    assert sigv4.signature(SECRET, auth, "20150830T123600Z", canonical) == auth.signature


def test_canonical_parts() -> None:
    assert sigv4.canonical_query("b=2&a=x+y&a=%41") == "a=A&a=x%20y&b=2"
    assert sigv4.canonical_uri("/ec2/") == "/ec2/"
    assert sigv4.canonical_uri("/a/./b/../c") == "/a/c"
    assert sigv4.canonical_uri("/a%20b") == "/a%2520b"
    assert sigv4.canonical_headers({"X-A": "  a   b  "}, ("x-a",)) == "x-a:a b\n"


@pytest.mark.parametrize("header", [
    "", "AWS4-HMAC-SHA1 Credential=a/b/c/d/aws4_request, SignedHeaders=host, Signature=" + "0" * 64,
    "AWS4-HMAC-SHA256 Credential=a/b/c/aws4_request, SignedHeaders=host, Signature=" + "0" * 64,
    "AWS4-HMAC-SHA256 Credential=a/b/c/d/aws4_request, SignedHeaders=x-amz-date, Signature=" + "0" * 64,
    "AWS4-HMAC-SHA256 Credential=a/b/c/d/aws4_request, SignedHeaders=host, Signature=zz",
    "AWS4-HMAC-SHA256 Credential=a/b/c/d/aws4_request, SignedHeaders=host",
    "AWS4-HMAC-SHA256 garbage",
    "AWS4-HMAC-SHA256 " + "x" * 5000,
])
def test_malformed_headers_are_refused(header: str) -> None:
    with pytest.raises(sigv4.SignatureFormatError):
        sigv4.parse_authorization(header)


def test_unsigned_header_missing_from_request() -> None:
    with pytest.raises(sigv4.SignatureFormatError):
        sigv4.canonical_headers({"host": "h"}, ("host", "x-amz-date"))


def test_signature_version_2_example() -> None:
    """AWS's published Signature Version 2 example (Elastic MapReduce DescribeJobFlows)."""
    from vocloud.service import sigv2

    params = [("AWSAccessKeyId", "AKIAIOSFODNN7EXAMPLE"), ("Action", "DescribeJobFlows"),
              ("SignatureMethod", "HmacSHA256"), ("SignatureVersion", "2"),
              ("Timestamp", "2011-10-03T15:19:30"), ("Version", "2009-03-31"),
              ("Signature", "ignored")]
    text = sigv2.string_to_sign("GET", "ElasticMapReduce.amazonaws.com", "/", params)
    assert text.endswith("&Timestamp=2011-10-03T15%3A19%3A30&Version=2009-03-31")
    assert sigv2.signature("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "HmacSHA256", text) == \
        "i91nKc4PWAt0JJIdXwz9HxZCJDdiy6cf/Mj6vPxyYIs="
    assert sigv2.parse_time("2011-10-03T15:19:30.123Z") == sigv2.parse_time("2011-10-03T15:19:30")
    assert sigv2.parse_time("yesterday") is None
