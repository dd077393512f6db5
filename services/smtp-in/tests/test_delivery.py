"""Messages through smtp-in into the real mailstore: stored byte-exact apart from our trace headers."""

from __future__ import annotations

import json
import re
import smtplib
from pathlib import Path

from smtp_testlib import Mail, split_trace

# The shared folder sits next to the repository (``../shared``); the check is skipped without it.
REPO = Path(__file__).resolve().parents[3]
SEED = REPO.parent / "shared" / "seed" / "reading-mail-with-pop3.txt"
SEED_BODY = b"Hello Bob, this is a test message over the internet!\r\n"


def smtp(mail: Mail) -> smtplib.SMTP:
    client = smtplib.SMTP("127.0.0.1", mail.smtp_port, local_hostname="client.test", timeout=30)
    client.ehlo()
    return client


def test_seed_message_alice_to_bob(mail: Mail) -> None:
    # The seed's session: alice@pokey.onl sends bob@pokey.onl one line (54 octets with CRLF).
    if SEED.exists():
        assert SEED_BODY.rstrip(b"\r\n").decode() in SEED.read_text()
    bob = mail.add_user("bob")
    before = set(mail.stored_names(bob))
    with smtp(mail) as client:
        code, _ = client.mail("alice@pokey.onl")
        assert code == 250
        assert client.rcpt("bob@pokey.onl")[0] == 250
        code, text = client.data(SEED_BODY)
    assert code == 250
    match = re.fullmatch(rb"2\.0\.0 Ok: queued as (\S+)", text)
    assert match, text
    message_id = match.group(1).decode()
    new = sorted(set(mail.stored_names(bob)) - before)
    assert len(new) == 1 and new[0].startswith(message_id)
    stored = (mail.maildir(bob) / "new" / new[0]).read_bytes()
    trace, rest = split_trace(stored)
    assert rest == b"Hello Bob, this is a test message over the internet!\n"
    assert trace[0] == b"Return-Path: <alice@pokey.onl>"
    assert trace[1] == b"Received: from client.test ([127.0.0.1])"
    assert trace[2].startswith(b"\tby mail.pokey.onl (maildrop smtp-in) with ESMTP id ")
    assert re.fullmatch(
        rb"\tfor <bob@pokey.onl>; \w{3}, \d\d \w{3} \d{4} [\d:]{8} \+0000", trace[3]
    )

    # Visible through the admin API, raw and listed.
    status, body = mail.api("GET", f"/api/v1/users/{bob}/messages")
    assert status == 200
    assert message_id in [m["id"] for m in json.loads(body)["messages"]]
    status, raw = mail.api("GET", f"/api/v1/users/{bob}/messages/{message_id}/raw")
    assert status == 200
    assert raw.replace(b"\r\n", b"\n") == stored


def test_one_delivery_for_several_recipients(mail: Mail) -> None:
    a, b = mail.add_user(), mail.add_user()
    with smtp(mail) as client:
        client.mail("alice@pokey.onl")
        assert client.rcpt(f"{a}@pokey.onl")[0] == 250
        assert client.rcpt(f"{b.upper()}+list@POKEY.onl")[0] == 250
        assert client.rcpt(f"{a}+again@pokey.onl")[0] == 250  # the same mailbox again
        code, text = client.data(b"Subject: to two\r\n\r\nsame message\r\n")
    assert code == 250
    message_id = text.split()[-1].decode()
    assert [n.split(",")[0] for n in mail.stored_names(a)] == [message_id.split(",")[0]]
    assert [n.split(",")[0] for n in mail.stored_names(b)] == [message_id.split(",")[0]]
    stored = mail.stored(a)[0]
    assert stored == mail.stored(b)[0]
    trace, rest = split_trace(stored)
    assert not any(line.startswith(b"\tfor ") for line in trace)  # several recipients: no "for"
    assert trace[2].endswith(b";") and trace[3].endswith(b"+0000")  # Received: by ...; <date>
    assert rest == b"Subject: to two\n\nsame message\n"


def test_utf8_addresses_and_8bit_body(mail: Mail) -> None:
    bob = mail.add_user()
    body = "Subject: Grüße\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nÄpfel, 日本語, emoji 😀\r\n"
    raw = body.encode("utf-8") + b"latin-1 octets: \xe9\xe8\xff\r\n"
    with smtp(mail) as client:
        assert client.has_extn("smtputf8") and client.has_extn("8bitmime")
        code, _ = client.mail("jürgen@bücher.test", ["SMTPUTF8", "BODY=8BITMIME"])
        assert code == 250
        assert client.rcpt(f"{bob}@pokey.onl")[0] == 250
        code, text = client.rcpt("jürgen@pokey.onl")
        assert (code, text[:5]) == (550, b"5.1.1")
        code, _ = client.data(raw)
    assert code == 250
    trace, rest = split_trace(mail.stored(bob)[0])
    assert trace[0] == "Return-Path: <jürgen@bücher.test>".encode()
    assert b" with UTF8SMTP id " in trace[2]
    assert rest == raw.replace(b"\r\n", b"\n")


def test_non_ascii_address_without_smtputf8_is_refused(mail: Mail) -> None:
    with smtp(mail) as client:
        client.command_encoding = "utf-8"  # a client that sends UTF-8 without saying SMTPUTF8
        code, text = client.mail("jürgen@bücher.test")
        assert code == 553 and text.startswith(b"5.6.7"), text
        client.rset()
        assert client.mail("alice@pokey.onl")[0] == 250
        client.command_encoding = "utf-8"
        code, text = client.docmd("RCPT TO:<bøb@pokey.onl>")
        assert code == 553 and text.startswith(b"5.6.7"), text


def test_lines_beginning_with_dots(mail: Mail) -> None:
    bob = mail.add_user()
    body = b"Subject: dots\r\n\r\n.\r\n..\r\n.leading dot\r\n...three\r\nend\r\n."
    with smtp(mail) as client:
        client.mail("alice@pokey.onl")
        client.rcpt(f"{bob}@pokey.onl")
        code, _ = client.data(body)  # smtplib dot-stuffs; the server must undo exactly that
    assert code == 250
    _, rest = split_trace(mail.stored(bob)[0])
    assert rest == b"Subject: dots\n\n.\n..\n.leading dot\n...three\nend\n.\n"


def test_bare_lf_stored_consistently(mail: Mail) -> None:
    bob = mail.add_user()
    with smtp(mail) as client:
        client.mail("alice@pokey.onl")
        client.rcpt(f"{bob}@pokey.onl")
        client.putcmd("DATA")
        assert client.getreply()[0] == 354
        client.send(b"Subject: lf\r\n\r\none\ntwo\r\nthree\r\r\nfour\r\n.\r\n")
        code, _ = client.getreply()
    assert code == 250
    _, rest = split_trace(mail.stored(bob)[0])
    assert rest == b"Subject: lf\n\none\ntwo\nthree\r\nfour\n"


def test_null_sender_bounces_are_accepted(mail: Mail) -> None:
    bob = mail.add_user()
    with smtp(mail) as client:
        code, _ = client.docmd("MAIL FROM:<>")
        assert code == 250
        assert client.rcpt(f"{bob}@pokey.onl")[0] == 250
        assert client.data(b"Subject: bounce\r\n\r\nreturned\r\n")[0] == 250
    trace, _ = split_trace(mail.stored(bob)[0])
    assert trace[0] == b"Return-Path: <>"


def test_helo_client_gets_smtp_protocol(mail: Mail) -> None:
    bob = mail.add_user()
    client = smtplib.SMTP("127.0.0.1", mail.smtp_port, local_hostname="old.client", timeout=30)
    try:
        assert client.helo()[0] == 250
        assert client.mail("alice@pokey.onl")[0] == 250
        assert client.rcpt(f"{bob}@pokey.onl")[0] == 250
        assert client.data(b"hi\r\n")[0] == 250
    finally:
        client.quit()
    trace, rest = split_trace(mail.stored(bob)[0])
    assert b" with SMTP id " in trace[2]
    assert trace[1] == b"Received: from old.client ([127.0.0.1])"
    assert rest == b"hi\n"


def test_several_transactions_on_one_connection(mail: Mail) -> None:
    bob = mail.add_user()
    with smtp(mail) as client:
        for i in range(5):
            client.sendmail("alice@pokey.onl", [f"{bob}@pokey.onl"], f"Subject: {i}\r\n\r\n{i}\r\n")
    bodies = sorted(split_trace(m)[1] for m in mail.stored(bob))
    assert bodies == [f"Subject: {i}\n\n{i}\n".encode() for i in range(5)]
