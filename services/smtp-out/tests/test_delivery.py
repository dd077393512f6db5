"""smtp-out over real sockets: a submission over 587 reaches a remote MX (found through Knot)
DKIM-signed and over STARTTLS; a 4xx is retried after the back-off; a 5xx and a null MX bounce
into the sender's mailbox; a connection dropped after DATA is a deferral (the 250 was lost: the
message arrives twice, as SMTP allows)."""

from __future__ import annotations

import email
import email.policy
import secrets
import smtplib

import dkim
from mailstack.ports import wait_until
from outkit import queue_of, txt_lookup
from outreceiver import Behaviour

HOST = "127.0.0.1"


def submit(stack, tls, user, password, recipients, *, subject="hello", message_id=None):
    """Send a small message over 587 (STARTTLS, AUTH); its Message-ID."""
    message_id = message_id or f"<{secrets.token_hex(8)}@client.test>"
    body = (
        f"From: Sender <{user}>\r\nTo: {', '.join(recipients)}\r\nSubject: {subject}\r\n"
        f"Message-ID: {message_id}\r\n\r\nHello from the test.\r\n"
    )
    with smtplib.SMTP(HOST, stack.submit_port, local_hostname="client.test", timeout=30) as c:
        c.starttls(context=tls)
        c.login(user, password)
        assert c.sendmail(user, recipients, body) == {}
    return message_id


def dsns(messages, account):
    """The delivery status notifications in ``account``'s mailbox, parsed."""
    found = []
    for raw in messages(account):
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        if parsed.get_content_type() == "multipart/report":
            found.append(parsed)
    return found


def test_submission_arrives_signed_over_starttls(  # fixtures by keyword
    *, stack, make_user, submit_tls, remote, dns_server, admin
):
    domain, mx = remote()
    user, pw = make_user()
    rcpt = f"someone@{domain}"
    message_id = submit(stack, submit_tls, user, pw, [rcpt], subject="signed")
    (got,) = wait_until(lambda: mx.received, 30, "the message at the remote MX")
    assert got.sender == user and got.recipients == [rcpt]
    assert got.tls  # STARTTLS was offered, so it was used (certificate unverified)
    assert got.message_id == message_id
    assert b"Return-Path:" not in got.content
    assert b"(maildrop smtp-submit) with ESMTPSA" in got.content
    # Both signatures, d= the From domain, verified by dkimpy against the keys in Knot.
    verifier = dkim.DKIM(got.content)
    lookup = txt_lookup(dns_server)
    parsed = email.message_from_bytes(got.content, policy=email.policy.compat32)
    signatures = parsed.get_all("DKIM-Signature")
    assert len(signatures) == 2
    assert all("d=pokey.onl" in s.replace(" ", "") for s in signatures)
    assert verifier.verify(idx=0, dnsfunc=lookup)
    assert verifier.verify(idx=1, dnsfunc=lookup)
    # Delivered: the entry is gone.
    wait_until(lambda: not queue_of(admin, user), 30, "the entry settled")


def test_a_failed_tls_handshake_falls_back_to_clear(  # fixtures by keyword
    *, stack, make_user, submit_tls, remote, broken_tls, admin
):
    domain, mx = remote(tls=broken_tls)
    user, pw = make_user()
    message_id = submit(stack, submit_tls, user, pw, [f"old@{domain}"])
    (got,) = wait_until(lambda: mx.received, 30, "the message in clear")
    assert got.message_id == message_id and not got.tls
    stack.wait_for_log("smtp-out", {"event": "tls_fallback", "host": f"mx.{domain}"})
    wait_until(lambda: not queue_of(admin, user), 30, "the entry settled")


def test_a_4xx_is_retried_after_the_back_off(stack, make_user, submit_tls, remote, admin):
    domain, mx = remote(Behaviour(tempfail=1))
    user, pw = make_user()
    submit(stack, submit_tls, user, pw, [f"later@{domain}"])
    (got,) = wait_until(lambda: mx.received, 30, "the retried message")
    assert mx.handler.attempts[got.message_id] == 2
    wait_until(lambda: not queue_of(admin, user), 30, "the entry settled")


def test_a_5xx_bounces_into_the_senders_mailbox(  # fixtures by keyword
    *, stack, make_user, submit_tls, remote, admin, messages
):
    domain, mx = remote(Behaviour(reject_rcpt=True))
    user, pw = make_user()
    rcpt = f"nobody@{domain}"
    submit(stack, submit_tls, user, pw, [rcpt], subject="to be refused")
    (report,) = wait_until(lambda: dsns(messages, user), 30, "the bounce")
    text = report.as_string()
    assert f"Final-Recipient: rfc822; {rcpt}" in text
    assert "Action: failed" in text and "Status: 5.1.1" in text
    assert "no such user here" in text
    assert "Subject: to be refused" in text  # the original's header section
    assert mx.received == []
    assert queue_of(admin, user) == []


def test_a_null_mx_bounces(  # fixtures by keyword
    *, stack, make_user, submit_tls, dns_server, admin, messages
):
    domain = f"n{secrets.token_hex(4)}.test"
    dns_server.serve(domain, ["@ MX 0 ."])
    user, pw = make_user()
    submit(stack, submit_tls, user, pw, [f"any@{domain}"])
    (report,) = wait_until(lambda: dsns(messages, user), 30, "the bounce")
    text = report.as_string()
    assert "Action: failed" in text and "Status: 5.1.10" in text
    assert "null MX" in text
    assert queue_of(admin, user) == []


def test_a_domain_with_neither_mx_nor_address_bounces(
    stack, make_user, submit_tls, dns_server, messages
):
    domain = f"e{secrets.token_hex(4)}.test"
    dns_server.serve(domain, ['@ TXT "no mail here"'])
    user, pw = make_user()
    submit(stack, submit_tls, user, pw, [f"any@{domain}"])
    (report,) = wait_until(lambda: dsns(messages, user), 30, "the bounce")
    assert "Status: 5.1.2" in report.as_string()


def test_a_connection_dropped_after_data_is_deferred_and_sent_again(
    stack, make_user, submit_tls, remote, admin
):
    domain, mx = remote(Behaviour(drop=1))
    user, pw = make_user()
    message_id = submit(stack, submit_tls, user, pw, [f"lost@{domain}"])
    first, second = wait_until(lambda: mx.received[1:] and mx.received, 30, "the second copy")
    # The first copy arrived but its 250 never left: SMTP's one duplicate (RFC 5321 6.1).
    assert first.message_id == second.message_id == message_id
    wait_until(lambda: not queue_of(admin, user), 30, "the entry settled")
    assert len(mx.received) == 2


def test_one_message_to_two_domains_and_a_local_account(  # fixtures by keyword
    *, stack, make_user, submit_tls, remote, admin, messages
):
    (a, mx_a), (b, _) = remote(), remote(Behaviour(reject_rcpt=True))
    user, pw = make_user()
    local, _ = make_user()
    submit(stack, submit_tls, user, pw, [f"x@{a}", f"y@{a}", f"z@{b}", local])
    (got,) = wait_until(lambda: mx_a.received, 30, "the message at a's MX")
    assert sorted(got.recipients) == [f"x@{a}", f"y@{a}"]  # one transaction per domain
    (report,) = wait_until(lambda: dsns(messages, user), 30, "the bounce for b")
    text = report.as_string()
    assert f"Final-Recipient: rfc822; z@{b}" in text
    assert f"Final-Recipient: rfc822; x@{a}" not in text
    (stored,) = messages(local)
    assert stored.startswith(f"Return-Path: <{user}>".encode())
    wait_until(lambda: not queue_of(admin, user), 30, "the entry settled")
