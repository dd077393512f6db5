"""Submission against the whole stack (local processes or ``STACK=compose``): an account sends
over 587 (STARTTLS) and 465 (implicit TLS), trusting the stack's generated certificate, and the
recipient reads the message over POP3; no AUTH, no mail; mail for other domains goes to the
outbound queue (the local stack runs no smtp-out, so it stays there; under compose smtp-out may
already have worked it, see below)."""

from __future__ import annotations

import email
import poplib
import smtplib

HOST = "127.0.0.1"


def pop3_messages(stack, tls_context, user: str, password: str) -> list[bytes]:
    client = poplib.POP3_SSL(HOST, stack.pop3s_port, context=tls_context, timeout=30)
    try:
        client.user(user)
        client.pass_(password)
        count, _ = client.stat()
        return [b"\n".join(client.retr(n + 1)[1]) for n in range(count)]
    finally:
        client.quit()


def test_submit_on_both_ports_and_read_over_pop3(stack, make_user, tls_context):
    sender, sender_pw = make_user()
    rcpt, rcpt_pw = make_user()
    frm, to = f"{sender}@pokey.onl", f"{rcpt}@pokey.onl"
    with smtplib.SMTP(HOST, stack.submit_port, timeout=30) as c:
        c.starttls(context=tls_context)
        c.login(frm, sender_pw)
        c.sendmail(frm, [to], f"From: {frm}\r\nTo: {to}\r\nSubject: via 587\r\n\r\nhi\r\n")
    with smtplib.SMTP_SSL(HOST, stack.submits_port, context=tls_context, timeout=30) as c:
        c.login(sender, sender_pw)  # the bare name is the primary domain's account
        c.sendmail(frm, [to], f"From: {frm}\r\nTo: {to}\r\nSubject: via 465\r\n\r\nhi\r\n")
    got = [email.message_from_bytes(m) for m in pop3_messages(stack, tls_context, rcpt, rcpt_pw)]
    assert [m["Subject"] for m in got] == ["via 587", "via 465"]
    assert all(m["Message-ID"] and m["Date"] for m in got)
    assert all("(maildrop smtp-submit) with ESMTPSA" in m["Received"] for m in got)


def test_no_auth_no_mail_and_remote_recipients_queued(stack, make_user, tls_context, admin):
    sender, sender_pw = make_user()
    frm = f"{sender}@pokey.onl"
    with smtplib.SMTP(HOST, stack.submit_port, timeout=30) as c:
        c.ehlo()
        assert not c.has_extn("auth")
        assert c.docmd("AUTH", "PLAIN")[0] == 530
        c.starttls(context=tls_context)
        c.ehlo()
        assert c.mail(frm) == (530, b"5.7.0 Authentication required")
        c.login(frm, sender_pw)
        assert c.mail(frm)[0] == 250
        assert c.rcpt("someone@elsewhere.invalid") == (250, b"2.1.5 Ok")
        code, text = c.data(f"From: {frm}\r\nTo: someone@elsewhere.invalid\r\n\r\nout\r\n")
    assert code == 250
    entry_id = text.decode().rsplit(" ", 1)[-1]
    shown = admin.get(f"/queue/{entry_id}")
    if stack.kind == "local":  # no smtp-out: the entry waits in the queue
        assert shown.status_code == 200, shown.text
        assert shown.json()["sender"] == frm
        assert [r["address"] for r in shown.json()["recipients"]] == ["someone@elsewhere.invalid"]
        assert admin.delete(f"/queue/{entry_id}").status_code == 204
    elif shown.status_code == 200:  # compose's smtp-out has not settled it yet
        assert shown.json()["sender"] == frm
