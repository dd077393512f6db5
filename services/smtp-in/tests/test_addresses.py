"""The recipient rules: local domains only, +tags, case, and no relay trick gets through."""

from __future__ import annotations

import pytest
from smtp_in.addresses import check_recipient, check_sender, normalize_domain

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
        ("[127.0.0.1]", None),
        ("bad_name.test", None),
        ("-x.test", None),
        ("", None),
        ("a..b", None),
    ],
)
def test_normalize_domain(given: str, expected: str | None) -> None:
    assert normalize_domain(given) == expected
