"""Internationalised domains over SMTP: IDNA 2008 (UTS 46), so straße.de is not strasse.de."""

from __future__ import annotations

import json
import smtplib

import pytest
from smtp_testlib import Mail, split_trace


@pytest.mark.parametrize("configured", ["xn--strae-oqa.de", "straße.de"])
def test_rcpt_domains_compare_as_idna_2008(mail: Mail, configured: str) -> None:
    """A domain added over REST in either form is one domain, stored as xn--strae-oqa.de."""
    status, body = mail.api("POST", "/api/v1/domains", {"name": configured})
    assert status in (201, 409), body  # 409: the other form of the name added it already
    listed = json.loads(mail.api("GET", "/api/v1/domains")[1])["domains"]
    assert {d["name"]: d["unicode"] for d in listed}["xn--strae-oqa.de"] == "straße.de"
    bob = mail.add_user()  # in the primary domain: another mailbox
    mail.add_user(f"{bob}@{configured}")
    with smtplib.SMTP("127.0.0.1", mail.smtp_port, local_hostname="idn.test", timeout=30) as client:
        client.ehlo()
        assert client.mail("alice@pokey.onl", ["SMTPUTF8"])[0] == 250
        assert client.rcpt(f"{bob}@straße.de") == (250, b"2.1.5 Ok")
        assert client.rcpt(f"{bob}@XN--STRAE-OQA.DE")[0] == 250
        # IDNA 2003 (Python's "idna" codec) would make straße.de this other domain.
        code, text = client.rcpt(f"{bob}@strasse.de")
        assert (code, text[:5]) == (550, b"5.7.1"), text
        # Not a domain name in IDNA 2008: a joiner out of context, an A-label that does not decode.
        for bad in ("a\u200db.de", "xn--zz.de"):
            code, text = client.rcpt(f"{bob}@{bad}")
            assert code == 553 and text.startswith(b"5.1.2 "), text
        code, _ = client.data(b"Subject: idn\r\n\r\nhallo\r\n")
    assert code == 250
    messages = mail.stored(f"{bob}@xn--strae-oqa.de")
    assert len(messages) == 1  # one copy for the two spellings of one recipient
    assert split_trace(messages[0])[1] == b"Subject: idn\n\nhallo\n"
    assert mail.stored(bob) == []
