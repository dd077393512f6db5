"""The seed write-up's journey: its telnet transcript over a raw socket, and mpop with its .mpoprc
(plain text allowed) and with TLS (STLS and implicit), keep on and keep off."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from mailstack import mpop
from mailstack.stack import Stack
from pop3kit import Mail, Pop3Proc, Raw

SEED_BODY = b"Hello Bob, this is a test message over the internet!\n"  # 53 + CRLF = 54 octets


def test_seed_telnet_transcript(stack: Stack, mail: Mail) -> None:
    user, _ = mail.user(password="password")
    mail.deliver(user, SEED_BODY)
    r = Raw(stack.pop3_port)
    assert r.line().startswith(b"+OK")
    assert r.cmd(f"USER {user}").startswith(b"+OK")
    assert r.cmd("PASS password") == f"+OK {user}'s maildrop has 1 messages (54 octets)".encode()
    assert r.cmd("LIST") == b"+OK 1 messages (54 octets)"
    assert r.multi() == [b"1 54"]
    assert r.cmd("STAT") == b"+OK 1 54"
    assert r.cmd("RETR 1") == b"+OK 54 octets"
    assert r.multi() == [b"Hello Bob, this is a test message over the internet!"]
    assert r.cmd("QUIT") == b"+OK mail.pokey.onl POP3 server signing off"
    assert r.closed()
    r.close()


def mpoprc(tmp: Path, port: int, user: str, pw: str, *, keep: str, tls: str = "") -> Path:
    maildir = mpop.maildir(tmp)
    return mpop.write_rc(
        tmp,
        "defaults\n"
        f"{tls or 'tls off'}\n"
        "auth user\n"
        "\n"
        "account bobatpokey\n"
        "host 127.0.0.1\n"
        f"port {port}\n"
        f"user {user}\n"
        f"password {pw}\n"
        f"delivery maildir {maildir}\n"
        f"uidls_file {tmp / 'uidls'}\n"
        f"keep {keep}\n"
        "\n"
        "account default : bobatpokey\n",
    )


def fetched(tmp: Path) -> list[bytes]:
    return sorted(p.read_bytes() for p in (tmp / "Maildir" / "new").iterdir())


def test_mpop_seed_config_keep_on_twice(stack: Stack, mail: Mail, tmp_path: Path) -> None:
    user, pw = mail.user(password="password")
    mail.deliver(user, SEED_BODY)
    rc = mpoprc(tmp_path, stack.pop3_port, user, pw, keep="on")
    out = mpop.run(rc)
    assert "new: 1 message in 54 bytes" in out, out
    assert len(fetched(tmp_path)) == 1
    assert fetched(tmp_path)[0].endswith(SEED_BODY)
    out = mpop.run(rc)
    assert "new: no messages" in out, out
    assert len(fetched(tmp_path)) == 1
    assert len(mail.messages(user)) == 1


def test_mpop_keep_off_deletes(stack: Stack, mail: Mail, tmp_path: Path) -> None:
    user, pw = mail.user()
    for i in range(3):
        mail.deliver(user, f"Subject: {i}\n\n.line {i}\n".encode())
    mpop.run(mpoprc(tmp_path, stack.pop3_port, user, pw, keep="off"))
    got = fetched(tmp_path)
    assert len(got) == 3
    assert all(b"\n.line " in m for m in got)  # byte-stuffing undone by the client
    assert mail.messages(user) == []


@pytest.mark.parametrize("starttls", ["on", "off"])
def test_mpop_over_tls(
    stack: Stack,
    mail: Mail,
    tmp_path: Path,
    pop3_factory: Callable[[dict[str, str]], Pop3Proc],
    starttls: str,
) -> None:
    strict = pop3_factory({"POP3_ALLOW_PLAINTEXT_AUTH": "false"})
    user, pw = mail.user()
    mail.deliver(user, SEED_BODY)
    tls = (
        "tls on\n"
        f"tls_starttls {starttls}\n"
        f"tls_trust_file {stack.secrets_dir / 'tls' / 'cert.pem'}\n"
        "tls_host_override mail.pokey.onl"
    )
    port = strict.port if starttls == "on" else strict.pop3s_port
    rc = mpoprc(tmp_path, port, user, pw, keep="on", tls=tls)
    mpop.run(rc)
    assert len(fetched(tmp_path)) == 1
    mpop.run(rc)
    assert len(fetched(tmp_path)) == 1
    rc = mpoprc(tmp_path, port, user, pw, keep="off", tls=tls)
    mpop.run(rc)
    assert mail.messages(user) == []


def test_mpop_refused_without_tls_on_strict_server(
    mail: Mail, tmp_path: Path, pop3_factory: Callable[[dict[str, str]], Pop3Proc]
) -> None:
    strict = pop3_factory({"POP3_ALLOW_PLAINTEXT_AUTH": "false"})
    user, pw = mail.user()
    rc = mpoprc(tmp_path, strict.port, user, pw, keep="on")
    result = mpop.attempt(rc)
    assert result.returncode != 0
