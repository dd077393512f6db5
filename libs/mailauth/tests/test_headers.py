"""The header block and the RFC5322.From domain DMARC evaluates."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from mailauth.domains import organizational_domain
from mailauth.headers import (
    SIMPLE_FROM,
    header_from_domain,
    parsed_from_domain,
    split_header_block,
)


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        (b"From: a@b.example\r\nTo: c@d.example\r\n\r\nbody\r\n", "b.example"),
        (b"From: A <a@B.Example>\n\nbody", "b.example"),
        (b'From: "x@evil.example" <a@good.example>\r\n\r\n', "good.example"),
        (b"From: Ann\r\n <ann@b.example>\r\nSubject: folded\r\n\r\n", "b.example"),
        (b"From: a@b\xc3\xbccher.example\r\n\r\n", "xn--bcher-kva.example"),  # SMTPUTF8
        (b"From: a@b.example", "b.example"),  # no body, no empty line
    ],
)
def test_the_single_from_domain(message: bytes, expected: str) -> None:
    assert header_from_domain(message) == expected


@pytest.mark.parametrize(
    "message",
    [
        b"Subject: no from\r\n\r\n",
        b"From: a@b.example\r\nFrom: c@d.example\r\n\r\n",
        b"From: a@b.example, c@d.example\r\n\r\n",
        b"From: nobody\r\n\r\n",
        b"From:\r\n\r\n",
        b"From: a@[192.0.2.1]\r\n\r\n",
        b"From: alice@example.org)<bob@example.net>\r\n\r\n",
        b"From: a@b\xff.example\r\n\r\n",  # not UTF-8
        b"\r\nFrom: a@b.example\r\n",  # an empty header block: that From is body
    ],
)
def test_no_single_from_domain_is_none(message: bytes) -> None:
    assert header_from_domain(message) is None


def test_from_fields_in_the_body_are_not_read() -> None:
    assert header_from_domain(b"To: x@y.example\n\nFrom: a@b.example\n") is None
    message = b"From: a@b.example\r\n\r\nFrom: c@d.example\r\n"
    assert header_from_domain(message) == "b.example"
    assert split_header_block(message) == (b"From: a@b.example\r\n", b"\r\nFrom: c@d.example\r\n")


@pytest.mark.parametrize(
    ("domain", "org"),
    [
        ("mail.example.co.uk", "example.co.uk"),
        ("co.uk", "co.uk"),
        ("a.b.example.com", "example.com"),
        ("news.zone.test", "zone.test"),  # an unlisted TLD: the default "*" rule
    ],
)
def test_organizational_domains(domain: str, org: str) -> None:
    assert organizational_domain(domain) == org


@settings(max_examples=500, deadline=None)
@given(value=st.from_regex(SIMPLE_FROM, fullmatch=True))
def test_the_quick_from_reading_agrees_with_the_email_parser(value: bytes) -> None:
    """Every From field the pattern reads gives the email package's answer."""
    field = b"From:" + value
    assert header_from_domain(field + b"\r\n\r\nbody") == parsed_from_domain(field)


PIECES = [b"a", b"Z", b".", b"@", b"<", b">", b'"', b" ", b"\t", b"(", b")", b",", b"\\"]
PIECES += [b"x.example", b"=?utf-8?q?a?=", b"\xc3\xbc", b":", b";", b"[", b"]", b"-", b"\r\n "]


@example(value=b"a@=?utf-8?q?a?=")  # CI found it: the parser decodes the encoded word
@settings(max_examples=500, deadline=None)
@given(value=st.lists(st.sampled_from(PIECES), max_size=14).map(b"".join))
def test_near_misses_read_either_way_give_one_answer(value: bytes) -> None:
    """Fields built of the characters that matter: where the pattern takes one, the same answer."""
    field = b"From: " + value + b"\r\n"
    if SIMPLE_FROM.fullmatch(field.partition(b":")[2]) is not None:
        assert header_from_domain(field + b"\r\n") == parsed_from_domain(field)
