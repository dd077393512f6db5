"""The recipient rules: local domains only, +tags, case, and no relay trick gets through."""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import pytest
from aiosmtpd.smtp import SMTP
from hypothesis import given, settings
from hypothesis import strategies as st
from smtp_in.addresses import check_recipient, check_sender, normalize_domain
from smtp_in.protocol import SMTPProtocol

LOCAL = frozenset({"pokey.onl", "example.test", "xn--bcher-kva.test"})


@pytest.mark.parametrize(
    ("address", "user"),
    [
        ("bob@pokey.onl", "bob"),
        ("Bob@POKEY.ONL", "bob"),
        ("bob+tag@pokey.onl", "bob"),
        ("BOB+Some.Tag-1@example.test", "bob"),
        ("bob+@pokey.onl", "bob"),
        ('"bob"@pokey.onl', "bob"),
        ('"bob+x"@pokey.onl', "bob"),
        ("bob@pokey.onl.", "bob"),
        ("bob@bücher.test", "bob"),
        ("bob@xn--bcher-kva.test", "bob"),
        ("first.last_1-2@pokey.onl", "first.last_1-2"),
    ],
)
def test_local_recipients_map_to_user(address: str, user: str) -> None:
    assert check_recipient(address, LOCAL).username == user


@pytest.mark.parametrize(
    "address",
    [
        "bob@remote.test",
        "bob@pokey.onl.remote.test",
        "bob@sub.pokey.onl",
        "bob@[127.0.0.1]",
        "bob@[IPv6:::1]",
        "bob@localhost",
        '"bob@pokey.onl"@remote.test',
        "bob%pokey.onl@remote.test",
        "pokey.onl!bob@remote.test",
    ],
)
def test_foreign_domains_are_relay_denied(address: str) -> None:
    check = check_recipient(address, LOCAL)
    assert check.username is None
    assert check.reply is not None and check.reply.startswith("550 5.7.1 ")


@pytest.mark.parametrize(
    "address",
    [
        "bob%remote.test@pokey.onl",  # percent hack
        '"bob@remote.test"@pokey.onl',  # quoted local part hiding an address
        '"bob%remote.test"@pokey.onl',
        "remote.test!bob@pokey.onl",  # bang path
        "bob+x%remote.test@pokey.onl",  # percent hack in a tag
        "bob+x@remote.test@pokey.onl",  # an @ in the tag
        '"bob\\@remote.test"@pokey.onl',
        '"unterminated@pokey.onl',
        "@remote.test:bob@pokey.onl@x",
        "jürgen@pokey.onl",
        "-bob@pokey.onl",
        ".bob@pokey.onl",
        "a" * 65 + "@pokey.onl",
        "@pokey.onl",
    ],
)
def test_tricks_name_no_user(address: str) -> None:
    check = check_recipient(address, LOCAL)
    assert check.username is None
    assert check.reply is not None
    assert check.reply.split()[:2] in (["550", "5.1.1"], ["501", "5.1.3"], ["550", "5.7.1"])


@pytest.mark.parametrize("address", ["bob@a\u200db.de", "bob@xn--zz.de", "bob@bad_name.test"])
def test_a_domain_that_is_no_name_is_refused_553(address: str) -> None:
    check = check_recipient(address, LOCAL)
    assert check.username is None
    assert check.reply == f"553 5.1.2 <{address}>: Bad destination domain name"


def test_idna_2008_domains() -> None:
    local = frozenset({"xn--strae-oqa.de"})
    assert check_recipient("bob@straße.de", local).username == "bob"
    assert check_recipient("bob@xn--strae-oqa.de", local).username == "bob"
    check = check_recipient("bob@strasse.de", local)
    assert check.username is None and check.reply is not None
    assert check.reply.startswith("550 5.7.1 ")


@pytest.mark.parametrize("address", ["bob", "bob@", "bob\r\n@pokey.onl", "bob@pokey\x00.onl"])
def test_malformed_addresses(address: str) -> None:
    check = check_recipient(address, LOCAL)
    assert check.username is None
    assert check.reply is not None and check.reply.startswith("501 5.1.3 ")


def test_sender_rules() -> None:
    assert check_sender("<>") is None
    assert check_sender("alice@pokey.onl") is None
    assert check_sender("jürgen@bücher.test") is None
    refusal = check_sender("alice\r@pokey.onl")
    assert refusal is not None and refusal.startswith("553 5.1.7 ")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("Pokey.ONL", "pokey.onl"),
        ("pokey.onl.", "pokey.onl"),
        ("bücher.test", "xn--bcher-kva.test"),
        # IDNA 2008 (UTS 46, non-transitional): ß is kept, not mapped to "ss" as IDNA 2003 does.
        ("straße.de", "xn--strae-oqa.de"),
        ("Straße.DE", "xn--strae-oqa.de"),
        ("XN--STRAE-OQA.de", "xn--strae-oqa.de"),
        ("faß.de", "xn--fa-hia.de"),
        ("strasse.de", "strasse.de"),
        ("a\u200db.de", None),  # a joiner outside its context (IDNA 2008 CONTEXTJ)
        ("xn--zz.de", None),  # an A-label that does not decode
        ("-bücher.test", None),
        ("[127.0.0.1]", None),
        ("bad_name.test", None),
        ("-x.test", None),
        ("", None),
        ("a..b", None),
    ],
)
def test_normalize_domain(given: str, expected: str | None) -> None:
    assert normalize_domain(given) == expected


class _Limits:
    """What aiosmtpd's ``_getaddr`` reads of its instance."""

    def __init__(self, local_part_limit: int) -> None:
        self.local_part_limit = local_part_limit


ADDRESS_LIKE = st.text(alphabet=st.sampled_from('<>@."\\ :,;()[]a-zA-Z0é+\x00'), max_size=40)


@settings(max_examples=600, deadline=None)
@given(
    arg=st.one_of(
        ADDRESS_LIKE,
        st.builds(lambda a, r: f"<{a}>{r}", ADDRESS_LIKE, ADDRESS_LIKE),
        st.sampled_from(["", "<>", "<bob@pokey.onl> SIZE=10", "bob@pokey.onl", "<@a,@b:c@d>"]),
    ),
    limit=st.sampled_from([0, 5, 64]),
)
def test_our_address_parse_is_aiosmtpds(arg: str, limit: int) -> None:
    def outcome(parse: Callable[[], object]) -> object:
        try:
            return parse()
        except Exception as exc:  # the email parser's own slips (IndexError) on odd input
            return type(exc)

    ours = outcome(lambda: SMTPProtocol._getaddr(cast(SMTPProtocol, _Limits(limit)), arg))
    theirs = outcome(lambda: SMTP._getaddr(cast(SMTP, _Limits(limit)), arg))
    assert ours == ((None, None) if theirs is IndexError else theirs)
