"""Submission over real sockets: AUTH only after TLS, no AUTH no mail, who may send as whom, the
limits, the fields added, and local delivery read back over the REST API."""

from __future__ import annotations

import base64
import email
import email.policy
import secrets
import smtplib
import socket

import pytest
from submitkit import AUTH_FAIL_MAX_PER_USER, HOST, MAX_PER_HOUR, MAX_RECIPIENTS, message, reply_of


def plain(user: str, password: str, authzid: str = "") -> str:
    return base64.b64encode(f"{authzid}\0{user}\0{password}".encode()).decode()


def test_587_offers_auth_only_after_starttls(submit, make_user):
    user, pw = make_user()
    with smtplib.SMTP(HOST, submit.port, local_hostname="client.test", timeout=30) as c:
        code, _ = c.ehlo()
        assert code == 250
        assert c.has_extn("starttls")
        assert not c.has_extn("auth")
        # A client that tries anyway is told to start TLS; the password never crossed in clear
        # as far as the server is concerned (RFC 3207, RFC 6409 4.3).
        assert c.docmd("AUTH", f"PLAIN {plain(user, pw)}") == (
            530,
            b"5.7.0 Must issue a STARTTLS command first",
        )
        assert c.docmd("AUTH", "LOGIN")[0] == 530
        assert c.docmd("MAIL", f"FROM:<{user}>") == (530, b"5.7.0 Authentication required")
        c.starttls(context=submit.tls)
        c.ehlo()
        assert not c.has_extn("starttls")
        assert set(c.esmtp_features["auth"].split()) == {"LOGIN", "PLAIN"}
        assert c.docmd("AUTH", f"PLAIN {plain(user, pw)}") == (
            235,
            b"2.7.0 Authentication successful",
        )


def test_465_is_tls_from_the_start_and_offers_auth(submit, make_user):
    user, pw = make_user()
    with submit.implicit() as c:
        assert not c.has_extn("starttls")
        assert set(c.esmtp_features["auth"].split()) == {"LOGIN", "PLAIN"}
        c.login(user, pw)
        assert c.mail(user)[0] == 250
    # Plain text on the TLS port is no session: the handshake fails, nothing is greeted.
    with socket.create_connection((HOST, submit.tls_port), timeout=10) as raw:
        raw.sendall(b"EHLO client.test\r\n")
        assert not raw.recv(1024).startswith(b"220")


@pytest.mark.parametrize("port", ["587", "465"])
def test_no_auth_no_mail(submit, make_user, port):
    user, _ = make_user()
    client = submit.starttls() if port == "587" else submit.implicit()
    with client as c:
        assert c.docmd("MAIL", f"FROM:<{user}>") == (530, b"5.7.0 Authentication required")
        assert c.docmd("RCPT", f"TO:<{user}>")[0] == 503  # no transaction either
        assert c.docmd("DATA")[0] == 503


def test_auth_login_mechanism(submit, make_user):
    user, pw = make_user()
    with submit.implicit() as c:
        c.user, c.password = user, pw
        assert c.auth("LOGIN", c.auth_login, initial_response_ok=False)[0] == 235
    with submit.starttls() as c:
        c.user, c.password = user, pw
        assert c.auth("LOGIN", c.auth_login)[0] == 235  # user name as the initial response


def test_plain_with_another_authorization_identity_is_refused(submit, make_user):
    user, pw = make_user()
    other, _ = make_user()
    with submit.starttls() as c:
        code, text = c.docmd("AUTH", f"PLAIN {plain(user, pw, authzid=other)}")
        assert (code, text) == (501, b"5.5.2 Malformed credentials")
        assert c.docmd("AUTH", "PLAIN !!!notbase64")[0] == 501
        assert c.docmd("MAIL", f"FROM:<{other}>")[0] == 530


def test_wrong_password_refused_then_throttled(submit, make_user):
    user, pw = make_user()
    with submit.starttls() as c:
        for _ in range(AUTH_FAIL_MAX_PER_USER):
            code, text = c.docmd("AUTH", f"PLAIN {plain(user, 'wrong')}")
            assert (code, text) == (535, b"5.7.8 Authentication credentials invalid")
        # The name has used up its failures: even the right password is refused for now.
        code, text = c.docmd("AUTH", f"PLAIN {plain(user, pw)}")
        assert (code, text) == (454, b"4.7.0 Too many failed logins, try again later")
        assert c.docmd("MAIL", f"FROM:<{user}>")[0] == 530
    # Counted in Redis, not per connection: a new connection is refused as well.
    with submit.implicit() as c, pytest.raises(smtplib.SMTPAuthenticationError) as refused:
        c.login(user, pw)
    assert reply_of(refused.value)[0] == 454
    # Another account is not affected.
    other, other_pw = make_user()
    with submit.implicit(other, other_pw) as c:
        assert c.mail(other)[0] == 250


def test_sending_as_another_account_is_refused(submit, make_user, messages):
    user, pw = make_user()
    victim, _ = make_user()
    rcpt, _ = make_user()
    with submit.starttls(user, pw) as c:
        code, text = c.mail(victim)
        assert code == 553
        assert text.decode() == (
            f"5.7.1 <{victim}>: Sender address not owned by the authenticated account"
        )
        c.rset()
        assert c.mail("<>")[0] == 553
        c.rset()
        # The envelope is ours, the From: field is somebody else's.
        with pytest.raises(smtplib.SMTPDataError) as refused:
            c.sendmail(user, [rcpt], message(victim, rcpt))
        assert reply_of(refused.value) == (
            553,
            f"5.7.1 <{victim}>: Sender address not owned by the authenticated account",
        )
        # Every address of the From: field counts.
        two = message(user, rcpt).replace(
            f"From: Sender <{user}>".encode(), f"From: {user}, {victim}".encode()
        )
        with pytest.raises(smtplib.SMTPDataError) as refused:
            c.sendmail(user, [rcpt], two)
        assert reply_of(refused.value)[0] == 553
        # No From: field at all, or two of them.
        with pytest.raises(smtplib.SMTPDataError) as refused:
            c.sendmail(user, [rcpt], b"To: x\r\nSubject: none\r\n\r\nbody\r\n")
        assert reply_of(refused.value)[0] == 550
    assert messages(rcpt) == []


def test_own_address_any_case_and_tag(submit, make_user, messages):
    user, pw = make_user()
    rcpt, _ = make_user()
    local, _, domain = user.partition("@")
    tagged = f"{local.upper()}+news@{domain.upper()}"
    with submit.implicit(user, pw) as c:
        c.sendmail(tagged, [rcpt], message(tagged, rcpt))
    assert len(messages(rcpt)) == 1


def test_alias_that_delivers_to_the_account_may_send(submit, make_user, admin, messages):
    user, pw = make_user()
    other, _ = make_user()
    rcpt, _ = make_user()
    team = f"team{secrets.token_hex(3)}@pokey.onl"
    chain = f"chain{secrets.token_hex(3)}@pokey.onl"
    theirs = f"theirs{secrets.token_hex(3)}@pokey.onl"
    assert (
        admin.post("/aliases", json={"address": team, "targets": [user, other]}).status_code == 201
    )
    assert admin.post("/aliases", json={"address": chain, "targets": [team]}).status_code == 201
    assert admin.post("/aliases", json={"address": theirs, "targets": [other]}).status_code == 201
    with submit.starttls(user, pw) as c:
        c.sendmail(team, [rcpt], message(team, rcpt, "as team"))
        c.sendmail(chain, [rcpt], message(chain, rcpt, "as chain"))
        assert c.mail(theirs)[0] == 553
    subjects = [email.message_from_bytes(m)["Subject"] for m in messages(rcpt)]
    assert subjects == ["as team", "as chain"]


def test_catch_all_does_not_make_every_address_yours(submit, make_user, admin):
    user, pw = make_user()
    assert admin.post("/domains", json={"name": "catch.test"}).status_code in (201, 409)
    assert (
        admin.post("/aliases", json={"address": "@catch.test", "targets": [user]}).status_code
        == 201
    )
    with submit.starttls(user, pw) as c:
        assert c.mail("anyone@catch.test")[0] == 553


def test_message_id_and_date_added_and_received_without_client_address(
    submit, make_user, messages, stack
):
    user, pw = make_user()
    rcpt, _ = make_user()
    with submit.starttls(user, pw) as c:
        c.sendmail(user, [rcpt], message(user, rcpt, "bare"))
        kept = "Message-ID: <mine@client.test>\r\nDate: Tue, 01 Dec 2026 10:00:00 +0000\r\n"
        c.sendmail(user, [rcpt], message(user, rcpt, "dressed", extra=kept))
    bare, dressed = (
        email.message_from_bytes(m, policy=email.policy.default) for m in messages(rcpt)
    )
    assert bare["Message-ID"].endswith(f"@{stack.hostname}>")
    assert bare["Date"].datetime is not None
    assert bare["Return-Path"] == f"<{user}>"
    received = bare["Received"]
    assert received.startswith("from client.test")
    assert f"by {stack.hostname} (maildrop smtp-submit) with ESMTPSA id" in received
    assert "(using TLSv1." in received
    assert HOST not in received and user not in received
    assert dressed.get_all("Message-ID") == ["<mine@client.test>"]
    assert dressed.get_all("Date") == ["Tue, 01 Dec 2026 10:00:00 +0000"]


def test_local_delivery_to_accounts_and_aliases(submit, make_user, admin, messages):
    user, pw = make_user()
    a, _ = make_user()
    b, _ = make_user()
    group = f"group{secrets.token_hex(3)}@pokey.onl"
    assert admin.post("/aliases", json={"address": group, "targets": [a, b]}).status_code == 201
    body = message(user, a, "to all")
    with submit.implicit(user, pw) as c:
        assert c.sendmail(user, [a, group], body) == {}
    for account in (a, b):
        (got,) = messages(account)
        assert got.endswith(body.replace(b"\r\n", b"\n"))  # stored with LF line ends


def test_remote_and_unknown_recipients(submit, make_user, messages, admin):
    user, pw = make_user()
    rcpt, _ = make_user()
    with submit.starttls(user, pw) as c:
        c.mail(user)
        assert c.rcpt("someone@elsewhere.example") == (250, b"2.1.5 Ok")
        code, text = c.rcpt("nobody-here@pokey.onl")
        assert code == 550 and text.startswith(b"5.1.1")
        assert c.rcpt("not an address")[0] in (501, 553)
        assert c.rcpt(rcpt)[0] == 250
        code, text = c.data(message(user, rcpt))
        assert code == 250
    (local,) = messages(rcpt)
    assert local.startswith(f"Return-Path: <{user}>".encode())
    # The remote recipient's copy is in the outbound queue (no smtp-out in this stack), once.
    entries = [e for e in admin.get("/queue").json()["entries"] if e["account"] == user]
    assert len(entries) == 1
    (entry,) = entries
    assert entry["sender"] == user
    assert [(r["address"], r["state"]) for r in entry["recipients"]] == [
        ("someone@elsewhere.example", "pending")
    ]
    assert text.decode().endswith(local_id(messages, rcpt, admin))
    queued = submit.stack.data_dir / "queue" / entry["id"]
    body = queued.read_bytes()
    assert b"Return-Path:" not in body  # that is the final receiver's to add
    assert body.startswith(b"Received: from client.test")
    assert body.endswith(message(user, rcpt))


def local_id(messages, account, admin) -> str:
    (item,) = admin.get(f"/users/{account}/messages").json()["messages"]
    return str(item["id"])


def test_remote_only_and_a_retry_with_message_id_is_queued_once(submit, make_user, admin):
    user, pw = make_user()
    body = message(user, "far@elsewhere.example", extra="Message-ID: <once@client.test>\r\n")
    replies = []
    for _ in range(2):  # the client retries the same message (as after a lost reply or a 451)
        with submit.implicit(user, pw) as c:
            c.mail(user)
            assert c.rcpt("far@elsewhere.example")[0] == 250
            replies.append(c.data(body))
    assert replies[0] == replies[1] and replies[0][0] == 250
    entries = [e for e in admin.get("/queue").json()["entries"] if e["account"] == user]
    assert len(entries) == 1
    assert replies[0][1].decode().endswith(entries[0]["id"])


def test_recipients_per_message(submit, make_user):
    user, pw = make_user()
    rcpt, _ = make_user()
    with submit.starttls(user, pw) as c:
        c.mail(user)
        for _ in range(MAX_RECIPIENTS):
            assert c.rcpt(rcpt)[0] == 250
        assert c.rcpt(rcpt) == (452, b"4.5.3 Too many recipients")


def test_messages_per_hour(submit, make_user, messages):
    user, pw = make_user()
    rcpt, _ = make_user()
    with submit.implicit(user, pw) as c:
        for n in range(MAX_PER_HOUR):
            c.sendmail(user, [rcpt], message(user, rcpt, f"n{n}"))
        assert c.mail(user) == (450, b"4.7.1 Too many messages this hour, try again later")
    assert len(messages(rcpt)) == MAX_PER_HOUR
    # The limit is the account's: another account still sends.
    other, other_pw = make_user()
    with submit.implicit(other, other_pw) as c:
        assert c.sendmail(other, [rcpt], message(other, rcpt)) == {}
