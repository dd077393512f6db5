"""Addresses like a real mail server, end to end over SMTP, POP3 and REST: two domains, logins
with the full address or the bare name (poplib and mpop), aliases, catch-alls, postmaster@ and
abuse@, quotas. The stack's domains are pokey.onl (primary) and example.test."""

from __future__ import annotations

import base64
import poplib
import secrets
import smtplib
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from mailstack import mpop

HOST = "127.0.0.1"


def send(stack: Any, recipients: list[str], body: bytes, size: bool = True) -> tuple[int, bytes]:
    """One transaction: the last RCPT or DATA reply that was not 250 (or DATA's 250)."""
    with smtplib.SMTP(HOST, stack.smtp_port, local_hostname="client.test", timeout=30) as smtp:
        smtp.ehlo()
        options = [f"SIZE={len(body)}"] if size else []
        assert smtp.mail("alice@remote.test", options)[0] == 250
        for rcpt in recipients:
            code, text = smtp.rcpt(rcpt)
            if code != 250:
                return code, text
        return smtp.data(body)


def pop3_messages(stack: Any, ctx: ssl.SSLContext, user: str, password: str) -> list[bytes]:
    client = poplib.POP3_SSL(HOST, stack.pop3s_port, context=ctx, timeout=30)
    try:
        client.user(user)
        client.pass_(password)
        count = len(client.list()[1])
        return [b"\n".join(client.retr(i)[1]) for i in range(1, count + 1)]
    finally:
        client.quit()


def new_domain(admin: httpx.Client) -> str:
    name = f"d{secrets.token_hex(4)}.test"
    assert admin.post("/domains", json={"name": name}).status_code == 201
    return name


def test_two_domains_with_one_local_part_are_two_mailboxes(
    stack: Any,
    admin: httpx.Client,
    make_user: Callable[..., tuple[str, str]],
    tls_context: ssl.SSLContext,
) -> None:
    local = f"bob{secrets.token_hex(3)}"
    _, pw_primary = make_user(local)  # a bare name: the primary domain, pokey.onl
    _, pw_other = make_user(f"{local}@example.test")
    assert admin.get(f"/users/{local}").json()["username"] == f"{local}@pokey.onl"
    assert send(stack, [f"{local}@pokey.onl"], b"Subject: one\r\n\r\nto pokey\r\n")[0] == 250
    assert send(stack, [f"{local}@Example.TEST"], b"Subject: two\r\n\r\nto example\r\n")[0] == 250

    for login in (local, f"{local}@pokey.onl", f"{local.upper()}@POKEY.ONL"):
        [message] = pop3_messages(stack, tls_context, login, pw_primary)
        assert b"to pokey" in message
    [message] = pop3_messages(stack, tls_context, f"{local}@example.test", pw_other)
    assert b"to example" in message
    with pytest.raises(poplib.error_proto):  # the other account's password is not this one's
        pop3_messages(stack, tls_context, f"{local}@example.test", pw_primary)


def test_auth_plain_takes_the_full_address_and_the_bare_name(
    stack: Any,
    make_user: Callable[..., tuple[str, str]],
    tls_context: ssl.SSLContext,
) -> None:
    local = f"pl{secrets.token_hex(3)}"
    _, password = make_user(local)
    for name in (local, f"{local}@pokey.onl"):
        client = poplib.POP3_SSL(HOST, stack.pop3s_port, context=tls_context, timeout=30)
        token = base64.b64encode(f"\0{name}\0{password}".encode()).decode()
        reply = client._shortcmd(f"AUTH PLAIN {token}")  # poplib has no AUTH of its own
        assert reply.startswith(b"+OK"), reply
        client.quit()


def test_mpop_logs_in_with_the_full_address(
    stack: Any, make_user: Callable[..., tuple[str, str]], tmp_path: Path
) -> None:
    local = f"mp{secrets.token_hex(3)}"
    _, password = make_user(f"{local}@example.test")
    assert send(stack, [f"{local}@example.test"], b"Subject: mpop\r\n\r\nfetched\r\n")[0] == 250
    maildir = mpop.maildir(tmp_path)
    rc = mpop.write_rc(
        tmp_path,
        f"account default\nhost {HOST}\nport {stack.pop3s_port}\ntls on\ntls_starttls off\n"
        "tls_certcheck off\nauth user\n"
        f"user {local}@example.test\npassword {password}\nuidls_file {tmp_path}/uidls\n"
        f"delivery maildir {maildir}\nkeep on\n",
    )
    mpop.run(rc, "-q")
    [fetched] = list((maildir / "new").iterdir())
    assert b"fetched" in fetched.read_bytes()


def test_aliases_catch_alls_and_tags(
    stack: Any, admin: httpx.Client, make_user: Callable[..., tuple[str, str]], mailbox: Any
) -> None:
    domain = new_domain(admin)
    a, b, c = (f"{n}@{domain}" for n in ("ann", "ben", "cy"))
    for account in (a, b, c):
        make_user(account)
    r = admin.post("/aliases", json={"address": f"team@{domain}", "targets": [a, b, c]})
    assert r.status_code == 201, r.text
    assert r.json()["accounts"] == [a, b, c]
    assert admin.post("/aliases", json={"address": f"@{domain}", "targets": [c]}).status_code == 201

    # One message to the alias (and to one of its members again): one copy per account.
    code, reply = send(stack, [f"team+news@{domain}", a], b"Subject: team\r\n\r\nfor all\r\n")
    assert code == 250, reply
    for account in (a, b, c):
        assert [m["subject"] for m in mailbox(account)] == ["team"]
    # An exact address wins over the catch-all; anything else of the domain reaches it.
    assert send(stack, [f"ben@{domain}"], b"Subject: exact\r\n\r\nx\r\n")[0] == 250
    assert send(stack, [f"Whoever+x@{domain}"], b"Subject: caught\r\n\r\nx\r\n")[0] == 250
    assert [m["subject"] for m in mailbox(b)] == ["team", "exact"]
    assert [m["subject"] for m in mailbox(c)] == ["team", "caught"]
    # Refused at creation: a loop, a target that does not exist.
    first = admin.post("/aliases", json={"address": f"x1@{domain}", "targets": [a]})
    assert first.status_code == 201
    second = admin.post("/aliases", json={"address": f"x2@{domain}", "targets": [f"x1@{domain}"]})
    assert second.status_code == 201
    assert admin.delete(f"/aliases/x1@{domain}").status_code == 204
    loop = admin.post("/aliases", json={"address": f"x1@{domain}", "targets": [f"x2@{domain}"]})
    assert (loop.status_code, loop.json()["error"]["code"]) == (422, "alias_loop")
    dangling = admin.post("/aliases", json={"address": f"y@{domain}", "targets": [f"no@{domain}"]})
    assert (dangling.status_code, dangling.json()["error"]["code"]) == (422, "unknown_target")


def test_postmaster_and_abuse_always_reach_someone(
    stack: Any, admin: httpx.Client, make_user: Callable[..., tuple[str, str]], mailbox: Any
) -> None:
    domain = new_domain(admin)
    # No account in this domain: postmaster@ and abuse@ go to POSTMASTER_ADDRESS or (unset, as
    # here) the first account created on the server.
    first = admin.get("/users").json()["users"][0]["username"]
    before = len(mailbox(first))
    for role in ("postmaster", "Abuse"):
        code, reply = send(stack, [f"{role}@{domain}"], f"Subject: {role}\r\n\r\nx\r\n".encode())
        assert code == 250, reply
    assert [m["subject"] for m in mailbox(first)[before:]] == ["postmaster", "Abuse"]
    # An alias points them elsewhere (in a domain whose postmaster@ smtp-in has not looked up:
    # it reuses an answer for up to SMTP_RECIPIENT_CACHE_TTL seconds).
    domain = new_domain(admin)
    ops = f"ops@{domain}"
    make_user(ops)
    r = admin.post("/aliases", json={"address": f"postmaster@{domain}", "targets": [ops]})
    assert r.status_code == 201
    assert send(stack, [f"postmaster@{domain}"], b"Subject: to ops\r\n\r\nx\r\n")[0] == 250
    assert [m["subject"] for m in mailbox(ops)] == ["to ops"]


def test_quotas_at_rcpt_and_at_the_end_of_data(
    stack: Any,
    admin: httpx.Client,
    make_user: Callable[..., tuple[str, str]],
    tls_context: ssl.SSLContext,
    mailbox: Any,
) -> None:
    user = f"q{secrets.token_hex(3)}@pokey.onl"
    _, password = make_user(user, quota_bytes=6000)
    other = f"r{secrets.token_hex(3)}@pokey.onl"
    make_user(other)
    body = b"Subject: 2k\r\n\r\n" + (b"x" * 98 + b"\r\n") * 20
    assert send(stack, [user], body)[0] == 250
    assert send(stack, [user], body)[0] == 250
    # Declared too big for the room left: refused at RCPT; undeclared: at the end of DATA.
    big = b"Subject: 3k\r\n\r\n" + (b"y" * 98 + b"\r\n") * 30
    code, reply = send(stack, [user], big)
    assert (code, reply[:5]) == (552, b"5.2.2"), reply
    code, reply = send(stack, [user], big, size=False)
    assert (code, reply[:5]) == (552, b"5.2.2"), reply
    assert len(mailbox(user)) == 2
    # With another recipient who has room, one reply for both: stored for both (see the
    # architecture document, "Quotas"); the account is over its quota from then on.
    code, reply = send(stack, [other, user], big, size=False)
    assert code == 250, reply
    assert len(mailbox(user)) == 3 and len(mailbox(other)) == 1
    code, reply = send(stack, [user], b"Subject: small\r\n\r\nx\r\n")
    assert (code, reply[:5]) == (452, b"4.2.2"), reply
    assert admin.get(f"/users/{user}").json()["bytes"] > 6000
    # POP3 deletes bring the usage down: mail is accepted again.
    client = poplib.POP3_SSL(HOST, stack.pop3s_port, context=tls_context, timeout=30)
    client.user(user)
    client.pass_(password)
    client.dele(1)
    client.dele(3)
    client.quit()
    assert admin.get(f"/users/{user}").json()["messages"] == 1
    assert send(stack, [user], b"Subject: small\r\n\r\nx\r\n")[0] == 250
