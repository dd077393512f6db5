"""Sender authentication end to end: smtp-in against a real Knot server, real keys and signatures.

Each test publishes a zone of its own (nothing cached from another test), sends over SMTP from
127.0.0.1 and reads what the mailstore stored (or that nothing was): the Authentication-Results
header smtp-in wrote, the refusals DMARC calls for, the flags, and the log line's verdicts.
"""

from __future__ import annotations

import json
import secrets
import smtplib
import socket
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from mailauth.results import parse_our_results
from mailstack import proxyheaders
from mailstack.authkit import arc_seal, message, rsa_key, sign
from mailstack.dnsserver import AuthoritativeDns, txt
from mailstack.logs import wait_for_records
from mailstack.stack import Stack
from smtp_testlib import Mail, SmtpProcess, split_trace

AUTHSERV_ID = "mail.pokey.onl"  # the stack's MAIL_HOSTNAME


@pytest.fixture(scope="module")
def dns_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthoritativeDns]:
    with AuthoritativeDns(Path(tmp_path_factory.mktemp("knot"))) as server:
        yield server


@pytest.fixture(scope="module")
def checked(
    stack: Stack, dns_server: AuthoritativeDns, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SmtpProcess]:
    """An smtp-in whose checks ask the Knot server."""
    proc = SmtpProcess(
        stack,
        {"DNS_NAMESERVERS": dns_server.nameserver, "DNS_TIMEOUT": "2"},
        tmp_path_factory.mktemp("checked") / "smtp-in.log",
    )
    yield proc
    proc.terminate()


@pytest.fixture
def sender_zone(dns_server: AuthoritativeDns) -> Callable[..., str]:
    """Publish a fresh sender domain with the given SPF and DMARC records and a DKIM key."""

    def publish(spf: str = "v=spf1 ip4:127.0.0.1 -all", dmarc: str | None = None) -> str:
        zone = f"s{secrets.token_hex(4)}.test"
        records = [f"@ TXT {txt(spf)}", rsa_key().published("sel")]
        if dmarc is not None:
            records.append(f"_dmarc TXT {txt(dmarc)}")
        dns_server.serve(zone, records)
        return zone

    return publish


def send(
    port: int, sender: str, rcpt: str, data: bytes, helo: str = "client.test"
) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", port, local_hostname=helo, timeout=30) as client:
        client.ehlo()
        assert client.mail(sender)[0] == 250
        assert client.rcpt(rcpt)[0] == 250
        try:
            return client.data(data)
        except smtplib.SMTPDataError as exc:
            return exc.smtp_code, exc.smtp_error


def send_to_new_user(
    mail: Mail, port: int, sender: str, data: bytes, helo: str = "client.test"
) -> tuple[str, int, bytes]:
    """:func:`send` to a new account: (its name, the reply to DATA)."""
    user = mail.add_user()
    return (user, *send(port, sender, f"{user}@pokey.onl", data, helo))


def one_stored(mail: Mail, user: str) -> bytes:
    stored = mail.stored(user)
    assert len(stored) == 1, stored
    return stored[0]


def api_summary(mail: Mail, user: str) -> dict[str, Any]:
    status, body = mail.api("GET", f"/api/v1/users/{user}/messages")
    assert status == 200, body
    (listed,) = json.loads(body)["messages"]
    return dict(listed)


def test_a_signed_aligned_message_passes_everything(
    mail: Mail, checked: SmtpProcess, sender_zone: Callable[..., str]
) -> None:
    zone = sender_zone(dmarc="v=DMARC1; p=reject")
    signed = sign(message(zone), rsa_key(), zone)
    user, code, _ = send_to_new_user(mail, checked.port, f"alice@{zone}", signed)
    assert code == 250
    stored = one_stored(mail, user)
    verdicts = parse_our_results(stored, AUTHSERV_ID)
    assert verdicts["spf"] == "pass"
    assert verdicts["dkim"] == [{"result": "pass", "domain": zone, "selector": "sel"}]
    assert (verdicts["dmarc"], verdicts["dmarc_policy"]) == ("pass", "reject")
    trace, rest = split_trace(stored)
    assert trace[-1].startswith((b"\t", b" "))  # the folded Authentication-Results ends the trace
    assert rest == signed.replace(b"\r\n", b"\n")  # the message itself byte-exact
    record = wait_for_records(checked.logs, {"event": "message", "result": "delivered"})[-1]
    assert (record["spf"], record["dmarc"], record["dkim"]) == ("pass", "pass", [f"pass:{zone}"])
    # The admin API reads the same verdicts back from the stored header.
    listed = api_summary(mail, user)
    assert listed["authentication"] == {
        "spf": "pass",
        "dkim": [{"result": "pass", "domain": zone, "selector": "sel"}],
        "arc": "none",
        "dmarc": "pass",
        "dmarc_policy": "reject",
    }
    assert listed["spam"] == {"flagged": False, "score": None, "scanner_unavailable": False}
    status, body = mail.api("GET", f"/api/v1/users/{user}/messages/{listed['id']}")
    assert status == 200 and json.loads(body)["authentication"] == listed["authentication"]


def test_dmarc_reject_refuses_with_550_and_stores_nothing(
    mail: Mail, checked: SmtpProcess, sender_zone: Callable[..., str]
) -> None:
    zone = sender_zone(spf="v=spf1 -all", dmarc="v=DMARC1; p=reject")
    user, code, text = send_to_new_user(mail, checked.port, f"ceo@{zone}", message(zone))
    assert code == 550
    assert text.startswith(b"5.7.1 ") and zone.encode() in text
    assert mail.stored(user) == []
    record = wait_for_records(checked.logs, {"event": "message", "result": "dmarc_reject"})[-1]
    assert (record["spf"], record["dmarc"], record["dmarc_policy"]) == ("fail", "fail", "reject")


def test_a_forged_signature_is_refused_under_p_reject(
    mail: Mail, checked: SmtpProcess, sender_zone: Callable[..., str]
) -> None:
    zone = sender_zone(spf="v=spf1 -all", dmarc="v=DMARC1; p=reject")
    signed = sign(message(zone, body="Pay the invoice.\r\n"), rsa_key(), zone)
    altered = signed.replace(b"Pay the invoice.", b"Pay the attacker.")
    user, code, _ = send_to_new_user(mail, checked.port, f"ceo@{zone}", altered)
    assert code == 550
    assert mail.stored(user) == []


def test_dmarc_quarantine_is_stored_flagged(
    mail: Mail, checked: SmtpProcess, sender_zone: Callable[..., str]
) -> None:
    zone = sender_zone(spf="v=spf1 -all", dmarc="v=DMARC1; p=quarantine")
    user, code, _ = send_to_new_user(mail, checked.port, f"ceo@{zone}", message(zone))
    assert code == 250
    trace, _ = split_trace(one_stored(mail, user))
    assert b"X-Spam: Yes" in trace
    assert parse_our_results(one_stored(mail, user), AUTHSERV_ID)["dmarc"] == "fail"
    listed = api_summary(mail, user)
    assert listed["spam"]["flagged"] is True
    assert (listed["authentication"]["dmarc"], listed["authentication"]["dmarc_policy"]) == (
        "fail",
        "quarantine",
    )


def test_dmarc_policy_tag_stores_a_reject_flagged(
    mail: Mail,
    stack: Stack,
    dns_server: AuthoritativeDns,
    spawn_smtp: Callable[..., SmtpProcess],
    sender_zone: Callable[..., str],
) -> None:
    tagging = spawn_smtp(stack, DNS_NAMESERVERS=dns_server.nameserver, DMARC_POLICY="tag")
    zone = sender_zone(spf="v=spf1 -all", dmarc="v=DMARC1; p=reject")
    user, code, _ = send_to_new_user(mail, tagging.port, f"ceo@{zone}", message(zone))
    assert code == 250
    stored = one_stored(mail, user)
    assert b"X-Spam: Yes" in split_trace(stored)[0]
    assert parse_our_results(stored, AUTHSERV_ID)["dmarc_policy"] == "reject"


def test_spf_fail_alone_never_refuses(
    mail: Mail, checked: SmtpProcess, sender_zone: Callable[..., str]
) -> None:
    zone = sender_zone(spf="v=spf1 -all")  # no DMARC record
    user, code, _ = send_to_new_user(mail, checked.port, f"alice@{zone}", message(zone))
    assert code == 250
    verdicts = parse_our_results(one_stored(mail, user), AUTHSERV_ID)
    assert (verdicts["spf"], verdicts["dmarc"]) == ("fail", "none")
    assert b"X-Spam" not in split_trace(one_stored(mail, user))[0]


def test_forged_fields_that_claim_to_be_ours_are_removed(
    mail: Mail, checked: SmtpProcess, sender_zone: Callable[..., str]
) -> None:
    zone = sender_zone(spf="v=spf1 -all", dmarc="v=DMARC1; p=quarantine")
    forged = (
        f"Authentication-Results: {AUTHSERV_ID.upper()}; spf=pass smtp.mailfrom=ceo@{zone};\r\n"
        f"  dkim=pass header.d={zone}; dmarc=pass header.from={zone}\r\n"
        "Authentication-Results: other.example; spf=pass\r\n"
        "X-Spam: No\r\n"
        "X-Spam-Score: -100\r\n"
    ).encode()
    user, code, _ = send_to_new_user(mail, checked.port, f"ceo@{zone}", forged + message(zone))
    assert code == 250
    stored = one_stored(mail, user)
    trace, rest = split_trace(stored)
    assert rest.startswith(b"Authentication-Results: other.example; spf=pass\n")
    assert b"X-Spam: No" not in stored and b"-100" not in stored
    assert parse_our_results(stored, AUTHSERV_ID)["dmarc"] == "fail"
    assert b"X-Spam: Yes" in trace


def test_the_null_sender_is_checked_by_its_helo(
    mail: Mail, checked: SmtpProcess, dns_server: AuthoritativeDns
) -> None:
    helo = f"h{secrets.token_hex(4)}.test"
    dns_server.serve(helo, [f"@ TXT {txt('v=spf1 ip4:127.0.0.1 -all')}"])
    user, code, _ = send_to_new_user(mail, checked.port, "<>", message(helo), helo=helo)
    assert code == 250
    stored = one_stored(mail, user)
    verdicts = parse_our_results(stored, AUTHSERV_ID)
    assert verdicts["spf"] == "pass"
    assert f"spf=pass smtp.helo={helo};".encode() in b"".join(split_trace(stored)[0])
    assert verdicts["dmarc"] == "none"  # no DMARC record for the HELO domain


def test_a_mailing_list_arc_chain_is_recorded(
    mail: Mail, checked: SmtpProcess, dns_server: AuthoritativeDns, sender_zone: Callable[..., str]
) -> None:
    author = sender_zone(dmarc="v=DMARC1; p=none")
    lists = f"l{secrets.token_hex(4)}.test"
    dns_server.serve(
        lists, [f"@ TXT {txt('v=spf1 ip4:127.0.0.1 -all')}", rsa_key().published("arc")]
    )
    original = sign(message(author, subject="Meeting"), rsa_key(), author)
    relayed = original.replace(b"Subject: Meeting", b"Subject: [team] Meeting")
    sealed = arc_seal(relayed, rsa_key(), lists, "arc", f"dkim=pass header.d={author}")
    user, code, _ = send_to_new_user(mail, checked.port, f"bounces@{lists}", sealed)
    assert code == 250
    verdicts = parse_our_results(one_stored(mail, user), AUTHSERV_ID)
    assert verdicts["arc"] == "pass"
    assert verdicts["dkim"][0]["result"] == "fail"  # the list changed the subject


@pytest.fixture
def silent_dns() -> Iterator[str]:
    """A UDP socket that reads queries and never answers: every lookup times out."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{sock.getsockname()[1]}"


def test_dns_trouble_is_recorded_and_the_message_stored(
    mail: Mail, stack: Stack, spawn_smtp: Callable[..., SmtpProcess], silent_dns: str
) -> None:
    proc = spawn_smtp(stack, DNS_NAMESERVERS=silent_dns, DNS_TIMEOUT="0.5")
    user, code, _ = send_to_new_user(mail, proc.port, "alice@example.net", message("example.net"))
    assert code == 250
    verdicts = parse_our_results(one_stored(mail, user), AUTHSERV_ID)
    assert (verdicts["spf"], verdicts["dmarc"]) == ("temperror", "temperror")


def test_auth_temperror_tempfail_answers_451(
    mail: Mail, stack: Stack, spawn_smtp: Callable[..., SmtpProcess], silent_dns: str
) -> None:
    proc = spawn_smtp(
        stack, DNS_NAMESERVERS=silent_dns, DNS_TIMEOUT="0.5", AUTH_TEMPERROR="tempfail"
    )
    user, code, text = send_to_new_user(
        mail, proc.port, "alice@example.net", message("example.net")
    )
    assert (code, text[:6]) == (451, b"4.7.5 ")
    assert mail.stored(user) == []


def test_checks_off_writes_no_verdicts_but_still_removes_forgeries(
    mail: Mail, stack: Stack, spawn_smtp: Callable[..., SmtpProcess]
) -> None:
    proc = spawn_smtp(stack, AUTH_CHECKS="false")
    forged = f"Authentication-Results: {AUTHSERV_ID}; dmarc=pass\r\nX-Spam: No\r\n".encode()
    user, code, _ = send_to_new_user(
        mail, proc.port, "a@example.net", forged + message("example.net")
    )
    assert code == 250
    stored = one_stored(mail, user)
    assert b"Authentication-Results" not in stored and b"X-Spam" not in stored


def test_a_killed_verifier_process_is_replaced(
    mail: Mail, checked: SmtpProcess, sender_zone: Callable[..., str]
) -> None:
    zone = sender_zone(dmarc="v=DMARC1; p=reject")
    user = mail.add_user()
    signed = sign(message(zone), rsa_key(), zone)
    assert send(checked.port, f"alice@{zone}", f"{user}@pokey.onl", signed)[0] == 250
    # The verifiers: children of the forkserver, itself a child of smtp-in.
    workers = [
        p
        for p in psutil.Process(checked.proc.pid).children(recursive=True)
        if p.ppid() != checked.proc.pid
    ]
    assert workers, "no verifier processes"
    workers[0].kill()
    workers[0].wait(10)
    assert send(checked.port, f"alice@{zone}", f"{user}@pokey.onl", signed)[0] == 250
    second = mail.stored(user)[-1]
    assert parse_our_results(second, AUTHSERV_ID)["dkim"][0]["result"] == "pass"
    wait_for_records(checked.logs, {"event": "verifier_pool_broken"})


def test_spf_checks_the_client_a_proxy_header_names(
    mail: Mail,
    stack: Stack,
    dns_server: AuthoritativeDns,
    sender_zone: Callable[..., str],
    tmp_path: Path,
) -> None:
    """Behind a balancer (PROXY_PROTOCOL=true) SPF judges the client, not the balancer."""
    proc = SmtpProcess(
        stack,
        {
            "DNS_NAMESERVERS": dns_server.nameserver,
            "DNS_TIMEOUT": "2",
            "PROXY_PROTOCOL": "true",
            "PROXY_TRUSTED_NETWORKS": "127.0.0.1/32",
        },
        tmp_path / "smtp-in.log",
    )
    try:
        zone = sender_zone(spf="v=spf1 ip4:203.0.113.25 -all")
        verdicts = []
        for client in ("203.0.113.25", "203.0.113.26"):
            user = mail.add_user()
            sock = socket.create_connection(("127.0.0.1", proc.port), timeout=30)
            sock.sendall(proxyheaders.v2(client, 4025))
            with sock, sock.makefile("rb") as replies:
                assert replies.readline().startswith(b"220 ")
                for line in (
                    b"HELO client.test",
                    f"MAIL FROM:<alice@{zone}>".encode(),
                    f"RCPT TO:<{user}@pokey.onl>".encode(),
                    b"DATA",
                    message(zone) + b".",
                    b"QUIT",
                ):
                    sock.sendall(line + b"\r\n")
                    assert replies.readline()[:1] in (b"2", b"3")
            verdicts.append(parse_our_results(one_stored(mail, user), AUTHSERV_ID)["spf"])
        assert verdicts == ["pass", "fail"]
    finally:
        proc.terminate()
