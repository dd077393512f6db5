"""Every verb goes through our checks: a NUL octet is refused whatever the command, over a socket."""

from __future__ import annotations

import pytest
from aiosmtpd.smtp import SMTP
from smtp_in.protocol import SMTPProtocol
from smtp_testlib import Mail
from test_protocol import Raw

# Every verb aiosmtpd 1.4.6 implements (and AUTH, which we answer ourselves).
VERBS = [
    "HELO",
    "EHLO",
    "MAIL",
    "RCPT",
    "DATA",
    "RSET",
    "NOOP",
    "QUIT",
    "VRFY",
    "EXPN",
    "HELP",
    "STARTTLS",
    "AUTH",
]


def test_every_aiosmtpd_verb_is_overridden() -> None:
    # Fails when an aiosmtpd release adds a verb that would bypass our checks.
    theirs = {name for name in dir(SMTP) if name.startswith("smtp_")}
    assert theirs == {f"smtp_{verb}" for verb in VERBS}
    # Each is our one wrapper (the same code for all) around aiosmtpd's method or ours.
    wrappers = {vars(SMTPProtocol)[name].__code__ for name in theirs}
    assert len(wrappers) == 1
    assert wrappers.isdisjoint(getattr(SMTP, name).__code__ for name in theirs)


@pytest.mark.parametrize("verb", VERBS)
def test_a_nul_octet_is_refused_for_every_verb(mail: Mail, verb: str) -> None:
    raw = Raw(mail.smtp_port)
    # Before HELO: a HELO/EHLO with a NUL is refused and greets nobody.
    assert (
        raw.cmd(verb.encode() + b" a\x00b") == b"501 5.5.2 Syntax error: NUL octet in command line"
    )
    assert raw.cmd(b"MAIL FROM:<alice@pokey.onl>").startswith(b"503 5.5.1 ")
    assert raw.cmd(b"EHLO client.test").startswith(b"250-")
    # In a transaction, and with the NUL at the end of a valid-looking argument.
    assert raw.cmd(b"MAIL FROM:<alice@pokey.onl>") == b"250 2.1.0 Ok"
    line = verb.encode() + b" <bob@pokey.onl>\x00"
    assert raw.cmd(line) == b"501 5.5.2 Syntax error: NUL octet in command line"
    assert raw.cmd(b"NOOP") == b"250 2.0.0 OK"  # the session is still in step
    assert raw.cmd(b"QUIT") == b"221 2.0.0 Bye"
    raw.close()


def test_a_nul_octet_in_the_verb_is_not_echoed(mail: Mail) -> None:
    raw = Raw(mail.smtp_port)
    assert raw.cmd(b"EH\x00LO client.test") == b"500 5.5.1 Error: command not recognized"
    assert raw.cmd(b"\x00") == b"500 5.5.1 Error: command not recognized"
    assert raw.cmd(b"HELO client.test") == b"250 mail.pokey.onl"
    raw.close()
