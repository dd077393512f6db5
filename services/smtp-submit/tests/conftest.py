"""Fixtures: a real stack (redis-server, mailstore-api, smtp-submit) as local processes, serving a
certificate from a throwaway CA (``mailstack.certs``) for ``localhost`` and 127.0.0.1, so every
client here verifies it as a mail client would.

The failed-login delay is short and the limits are small enough to reach in a test; the hourly
limit belongs to the account, so each test that sends makes accounts of its own.
"""

from __future__ import annotations

import secrets
import ssl
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from mailstack.certs import ScratchCA
from mailstack.stack import Stack

sys.path.insert(0, str(Path(__file__).resolve().parent))

from submitkit import AUTH_FAIL_MAX_PER_USER, MAX_PER_HOUR, MAX_PER_IP, MAX_RECIPIENTS, Submit


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("submitstack")
    ca = ScratchCA.create()
    cert, key = ca.write(workdir / "tls", "localhost")
    (workdir / "tls" / "ca.pem").write_bytes(ca.pem)
    env = {
        "TLS_CERT_FILE": str(cert),
        "TLS_KEY_FILE": str(key),
        "SUBMIT_MAX_RECIPIENTS": str(MAX_RECIPIENTS),
        "SUBMIT_MAX_MESSAGES_PER_HOUR": str(MAX_PER_HOUR),
        "SUBMIT_AUTH_FAIL_DELAY": "0.05",
        "SUBMIT_AUTH_FAIL_MAX_PER_USER": str(AUTH_FAIL_MAX_PER_USER),
        "SUBMIT_MAX_CONNECTIONS_PER_IP": str(MAX_PER_IP),
    }
    with Stack(workdir, services=("redis", "mailstore-api", "smtp-submit"), env=env) as s:
        yield s


@pytest.fixture(scope="session")
def submit(stack: Stack) -> Submit:
    ca_file = stack.workdir / "tls" / "ca.pem"
    tls = ssl.create_default_context(cafile=str(ca_file))
    tls.check_hostname = False  # connected by address; the chain is still verified
    return Submit(stack, ca_file, tls)


@pytest.fixture(scope="session")
def admin(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=f"{stack.api_url}/api/v1",
        headers={"Authorization": f"Bearer {stack.admin_token}"},
        timeout=30,
    ) as client:
        yield client


@pytest.fixture
def make_user(admin: httpx.Client) -> Callable[[], tuple[str, str]]:
    """A fresh account in the primary domain: (address, password)."""

    def make() -> tuple[str, str]:
        # Hex, not token_urlsafe: swaks (20201014) reads an --auth-password value that begins
        # with "-" as an option of its own, in every form it accepts, and fails the test.
        name, password = f"u{secrets.token_hex(5)}", secrets.token_hex(12)
        response = admin.post("/users", json={"username": name, "password": password})
        assert response.status_code == 201, response.text
        return f"{name}@pokey.onl", password

    return make


@pytest.fixture
def messages(admin: httpx.Client) -> Callable[[str], list[bytes]]:
    """The raw messages in an account's mailbox, oldest first (over the admin REST API)."""

    def read(address: str) -> list[bytes]:
        listing = admin.get(f"/users/{address}/messages", params={"limit": 500})
        assert listing.status_code == 200, listing.text
        out: list[bytes] = []
        for item in listing.json()["messages"]:
            raw = admin.get(f"/users/{address}/messages/{item['id']}/raw")
            assert raw.status_code == 200, raw.text
            out.append(raw.content)
        return out

    return read
