"""Fixtures: a stack with smtp-submit and smtp-out (redis-server, mailstore-api as local
processes), Knot publishing the zones, and remote MXs (aiosmtpd receivers, :mod:`outreceiver`) each
on an address of its own in 127.0.0.0/8, all on the port smtp-out sends to
(``SMTP_OUT_REMOTE_PORT``).

The queue's back-off is one second (``QUEUE_RETRY_BASE``), smtp-out polls five times a second and
leases for ten seconds, so retries and a crashed worker's entries come round within a test.
"""

from __future__ import annotations

import itertools
import secrets
import ssl
import sys
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from mailauth.signing import DkimSigner
from mailstack.certs import ScratchCA
from mailstack.dnsserver import AuthoritativeDns, txt
from mailstack.ports import free_port
from mailstack.stack import Stack

sys.path.insert(0, str(Path(__file__).resolve().parent))

from outkit import CONCURRENCY, LEASE
from outreceiver import Behaviour, Receiver

HOST = "127.0.0.1"
DOMAIN = "pokey.onl"
_addresses = itertools.count(2)


@pytest.fixture(scope="session")
def dns_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthoritativeDns]:
    with AuthoritativeDns(tmp_path_factory.mktemp("knot")) as server:
        yield server


@pytest.fixture(scope="session")
def remote_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def stack(
    tmp_path_factory: pytest.TempPathFactory, dns_server: AuthoritativeDns, remote_port: int
) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("outstack")
    env = {
        "DNS_NAMESERVERS": dns_server.nameserver,
        "DNS_TIMEOUT": "2",
        "SMTP_OUT_REMOTE_PORT": str(remote_port),
        "SMTP_OUT_POLL_INTERVAL": "0.2",
        "SMTP_OUT_LEASE_SECONDS": str(LEASE),
        "SMTP_OUT_CONCURRENCY": str(CONCURRENCY),
        "SMTP_OUT_CONNECT_TIMEOUT": "5",
        "SMTP_OUT_COMMAND_TIMEOUT": "20",
        "QUEUE_RETRY_BASE": "1",
        "QUEUE_RETRY_MAX": "2",
    }
    services = ("redis", "mailstore-api", "smtp-submit", "smtp-out")
    with Stack(workdir, services=services, env=env) as running:
        # The keys smtp-out signs pokey.onl's mail with (made here first, on the same volume:
        # the signer reads the file the first comer wrote), published as an operator would.
        keys = DkimSigner(running.secrets_dir).keys(DOMAIN)
        dns_server.serve(DOMAIN, [f"{key.record_name}. TXT {txt(key.record)}" for key in keys])
        yield running


@pytest.fixture(scope="session")
def receiver_tls(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    """The remote MXs' certificate: from a CA smtp-out does not know (it verifies nothing)."""
    workdir = tmp_path_factory.mktemp("mxtls")
    cert, key = ScratchCA.create().write(workdir, "mx.remote.test")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


@pytest.fixture(scope="session")
def broken_tls(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    """A receiver that offers STARTTLS but can only do TLS 1.0, which no client of ours accepts:
    every handshake fails."""
    workdir = tmp_path_factory.mktemp("oldtls")
    cert, key = ScratchCA.create().write(workdir, "mx.remote.test")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    with warnings.catch_warnings():  # deprecated: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1
        context.maximum_version = ssl.TLSVersion.TLSv1
    return context


@pytest.fixture
def remote(
    dns_server: AuthoritativeDns, remote_port: int, receiver_tls: ssl.SSLContext
) -> Iterator[Callable[..., tuple[str, Receiver]]]:
    """``remote(Behaviour(...))``: a fresh domain whose MX is a new receiver; (domain, receiver)."""
    started: list[Receiver] = []

    def make(
        behaviour: Behaviour | None = None, tls: ssl.SSLContext | None = None
    ) -> tuple[str, Receiver]:
        address = f"127.0.0.{next(_addresses)}"
        receiver = Receiver(address, remote_port, tls or receiver_tls, behaviour).start()
        started.append(receiver)
        domain = f"r{secrets.token_hex(4)}.test"
        dns_server.serve(domain, ["@ MX 10 mx", f"mx A {address}"])
        return domain, receiver

    yield make
    for receiver in started:
        receiver.stop()


@pytest.fixture(scope="session")
def admin(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=f"{stack.api_url}/api/v1",
        headers={"Authorization": f"Bearer {stack.admin_token}"},
        timeout=30,
    ) as client:
        yield client


@pytest.fixture(scope="session")
def internal(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=f"{stack.api_url}/internal/v1",
        headers={"Authorization": f"Bearer {stack.service_token}"},
        timeout=30,
    ) as client:
        yield client


@pytest.fixture
def make_user(admin: httpx.Client) -> Callable[[], tuple[str, str]]:
    """A fresh account in pokey.onl: (address, password)."""

    def make() -> tuple[str, str]:
        name, password = f"u{secrets.token_hex(5)}", secrets.token_urlsafe(12)
        response = admin.post("/users", json={"username": name, "password": password})
        assert response.status_code == 201, response.text
        return f"{name}@{DOMAIN}", password

    return make


@pytest.fixture(scope="session")
def submit_tls(stack: Stack) -> ssl.SSLContext:
    """Trusts the stack's generated certificate (named after the host, reached by address)."""
    context = ssl.create_default_context(cadata=stack.read_secret("tls/cert.pem").decode())
    context.check_hostname = False
    return context


@pytest.fixture
def messages(admin: httpx.Client) -> Callable[[str], list[bytes]]:
    """The raw messages in an account's mailbox, oldest first."""

    def read(address: str) -> list[bytes]:
        listing = admin.get(f"/users/{address}/messages", params={"limit": 500})
        assert listing.status_code == 200, listing.text
        return [
            admin.get(f"/users/{address}/messages/{item['id']}/raw").content
            for item in listing.json()["messages"]
        ]

    return read
