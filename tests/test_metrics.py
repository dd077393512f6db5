"""/metrics on every service: the counters move by exactly what a test did.

The front ends' metrics ports are not published by docker-compose.yml (they stay inside the
compose network), and compose's health checks open POP3 and SMTP sessions every few seconds, so
the counting tests run on the local stack; the mailstore's token check runs on both.
"""

from __future__ import annotations

import poplib
import random
import secrets
import smtplib
import socket
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from cryptography import x509
from mailstack.ports import wait_until
from mailstack.stack import Stack
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

HOST = "127.0.0.1"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> Samples:
    """Every sample of an exposition, by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(found: Samples, name: str, **labels: str) -> float:
    return found.get((name, frozenset(labels.items())), 0.0)


def increments(before: Samples, after: Samples) -> Callable[..., float]:
    """``delta(name, **labels)``: how much a sample grew between two scrapes."""

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    return delta


class POP3From(poplib.POP3):
    """poplib's client, connecting from a loopback address of its own (the failed-login throttle
    counts per address: earlier tests' failures from 127.0.0.1 must not throttle these)."""

    def __init__(self, port: int, source: str) -> None:
        self.source = source
        super().__init__(HOST, port, timeout=30)

    def _create_socket(self, timeout: float) -> socket.socket:
        return socket.create_connection(
            (self.host, self.port), timeout, source_address=(self.source, 0)
        )


def message(number: int) -> bytes:
    """A message as it crosses DATA: CRLF line ends, the last line ended, no line with a dot."""
    return (
        f"From: metrics@outside.test\r\nSubject: counted {number}\r\n\r\n{'x' * (50 + number)}\r\n"
    ).encode()


@pytest.mark.local_only
def test_counters_agree_with_what_happened(
    stack: Stack, make_user: Callable[..., tuple[str, str]]
) -> None:
    n, m, k = 5, 3, 2
    user, password = make_user()
    address = f"{user}@pokey.onl"
    source = f"127.{random.randint(1, 254)}.{random.randint(1, 254)}.{random.randint(2, 254)}"
    names = ("smtp-in", "pop3", "mailstore-api")
    before = {name: samples(stack.metrics(name)) for name in names}

    sent = [message(i) for i in range(n)]
    with smtplib.SMTP(HOST, stack.smtp_port, timeout=30) as smtp:
        for i, data in enumerate(sent):
            to = [address]
            if i == 0:  # one unknown account and one foreign domain, refused at RCPT
                to += [f"nobody-{secrets.token_hex(4)}@pokey.onl", "someone@outside.test"]
            refused = smtp.sendmail("metrics@outside.test", to, data)
            assert set(refused) == set(to[1:])
    for _ in range(m):
        pop = POP3From(stack.pop3_port, source)
        pop.user(user)
        pop.pass_(password)
        pop.retr(1)
        pop.dele(1)
        pop.quit()
    for _ in range(k):
        pop = POP3From(stack.pop3_port, source)
        pop.user(user)
        with pytest.raises(poplib.error_proto, match=r"\[AUTH\]"):
            pop.pass_("not the password")
        pop.quit()

    after = {name: samples(stack.metrics(name)) for name in names}
    smtp_delta = increments(before["smtp-in"], after["smtp-in"])
    assert smtp_delta("maildrop_smtp_messages_total", result="delivered") == n
    assert smtp_delta("maildrop_smtp_bytes_total") == sum(len(data) for data in sent)
    assert smtp_delta("maildrop_smtp_recipients_total", result="accepted") == n
    assert smtp_delta("maildrop_smtp_recipients_total", result="unknown_user") == 1
    assert smtp_delta("maildrop_smtp_recipients_total", result="relay_denied") == 1

    pop3_delta = increments(before["pop3"], after["pop3"])
    assert pop3_delta("maildrop_pop3_sessions_total", result="quit") == m + k
    assert pop3_delta("maildrop_pop3_logins_total", result="ok") == m
    assert pop3_delta("maildrop_pop3_logins_total", result="bad") == k
    assert pop3_delta("maildrop_pop3_logins_total", result="throttled") == 0
    assert pop3_delta("maildrop_pop3_messages_retrieved_total") == m
    assert pop3_delta("maildrop_pop3_messages_deleted_total") == m

    store_delta = increments(before["mailstore-api"], after["mailstore-api"])
    assert store_delta("maildrop_deliveries_total", result="stored") == n
    assert store_delta("maildrop_delivery_seconds_count") == n
    assert store_delta("maildrop_delivery_seconds_sum") > 0
    # Every delivery is in exactly one group commit: the batch sizes add up to n.
    assert store_delta("maildrop_commit_batch_size_sum") == n
    assert 1 <= store_delta("maildrop_commit_batch_size_count") <= n


@pytest.mark.local_only
@pytest.mark.parametrize(
    ("service", "port", "gauge"),
    [
        ("smtp-in", "smtp_port", "maildrop_smtp_connections"),
        ("pop3", "pop3_port", "maildrop_pop3_connections"),
    ],
)
def test_connection_gauges_follow_open_connections(
    stack: Stack, service: str, port: str, gauge: str
) -> None:
    def connections() -> float:
        return value(samples(stack.metrics(service)), gauge)

    wait_until(lambda: connections() == 0 or None, 10, f"{gauge} at 0")
    with socket.create_connection((HOST, getattr(stack, port)), timeout=30) as client:
        assert client.recv(512)[:1] in (b"2", b"+")  # greeted: the server counts it
        assert connections() == 1
    wait_until(lambda: connections() == 0 or None, 10, f"{gauge} back at 0")


@pytest.mark.local_only
@pytest.mark.parametrize("service", ["smtp-in", "pop3"])
def test_certificate_expiry_is_the_served_certificate(stack: Stack, service: str) -> None:
    cert = x509.load_pem_x509_certificate(stack.read_secret("tls/cert.pem"))
    found = samples(stack.metrics(service))
    expiry = value(found, "maildrop_tls_certificate_expiry_seconds")
    assert expiry == cert.not_valid_after_utc.timestamp()


def test_mailstore_metrics_need_a_token(stack: Any) -> None:
    url = f"{stack.api_url}/metrics"
    assert httpx.get(url).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
    answer = httpx.get(url, headers={"Authorization": f"Bearer {stack.admin_token}"})
    assert answer.status_code == 200
    assert answer.headers["content-type"] == CONTENT_TYPE_LATEST
    assert ("maildrop_deliveries_total", frozenset({("result", "stored")})) in samples(answer.text)


@pytest.mark.local_only
def test_metrics_token_opens_metrics_and_nothing_else(tmp_path: Any) -> None:
    token = secrets.token_urlsafe(32)
    with Stack(
        tmp_path, services=("redis", "mailstore-api", "smtp-in"), env={"METRICS_TOKEN": token}
    ) as own:
        bearer = {"Authorization": f"Bearer {token}"}
        for url in (own.metrics_url("mailstore-api"), own.metrics_url("smtp-in")):
            assert httpx.get(url).status_code == 401, url
            answer = httpx.get(url, headers=bearer)
            assert answer.status_code == 200, url
            assert "maildrop_" in answer.text
        service = {"Authorization": f"Bearer {own.service_token}"}
        assert httpx.get(own.metrics_url("mailstore-api"), headers=service).status_code == 401
        # The metrics token is no admin token.
        assert httpx.get(f"{own.api_url}/api/v1/users", headers=bearer).status_code == 401
