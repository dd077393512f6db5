"""Hostile message content survives the trip SMTP → Maildir → POP3 byte for byte.

Message bodies drawn by hypothesis out of the lines that break naive servers: ``.`` alone (the end
of DATA), lines beginning with dots, empty lines, NUL, 8-bit and non-UTF-8 octets, a line of
spaces, ``From `` lines, long lines. Each goes in with smtplib (which dot-stuffs and sends CRLF),
comes out with RETR (which the client un-stuffs): the body lines must be exactly those sent, and
LIST/RETR must agree on the size. Nothing is lost, nothing ends early, nothing is injected.
"""

from __future__ import annotations

import poplib
import secrets
import smtplib
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

HOST = "127.0.0.1"

LINE = st.one_of(
    st.sampled_from(
        [
            b".",
            b"..",
            b"...",
            b". ",
            b".\x00",
            b"",
            b" ",
            b"From me",
            b">From me",
            b"\x00",
            b"\xff\xfe",
        ]
    ),
    st.binary(max_size=120).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    st.binary(max_size=20).map(lambda b: b"." + b.replace(b"\r", b"").replace(b"\n", b"")),
    st.integers(min_value=900, max_value=990).map(lambda n: b"y" * n),
)


@pytest.fixture(scope="module")
def roundtrip_user(admin: Any) -> tuple[str, str]:
    name, password = f"rt{secrets.token_hex(5)}", secrets.token_urlsafe(12)
    created = admin.post("/users", json={"username": name, "password": password})
    assert created.status_code == 201, created.text
    return name, password


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(lines=st.lists(LINE, min_size=1, max_size=30))
def test_hostile_body_lines_round_trip(
    stack: Any, roundtrip_user: tuple[str, str], lines: list[bytes]
) -> None:
    user, password = roundtrip_user
    body = b"\r\n".join(lines) + b"\r\n"
    message = b"Subject: round trip\r\nX-Marker: rt\r\n\r\n" + body
    with smtplib.SMTP(HOST, stack.smtp_port, timeout=30) as smtp:
        refused = smtp.sendmail("sender@outside.test", [f"{user}@pokey.onl"], message)
        assert refused == {}
    pop = poplib.POP3(HOST, stack.pop3_port, timeout=30)
    try:
        pop.user(user)
        pop.pass_(password)
        count, _ = pop.stat()
        assert count == 1
        listed = int(pop.list(1).split()[2])
        response, got, octets = pop.retr(1)
        assert response.startswith(b"+OK")
        # the size announced is what the client holds: every line plus its CRLF
        assert listed == octets == sum(len(line) + 2 for line in got), (listed, octets)
        blank = got.index(b"")
        assert b"X-Marker: rt" in got[:blank]
        assert got[blank + 1 :] == lines
        pop.dele(1)
    finally:
        pop.quit()
