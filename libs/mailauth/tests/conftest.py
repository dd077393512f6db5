"""A real authoritative DNS server (knotd) on loopback, and a resolver pointed at it."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from mailauth.dns import Nameserver, Resolver
from mailstack.dnsserver import AuthoritativeDns


@pytest.fixture(scope="session")
def dns_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthoritativeDns]:
    with AuthoritativeDns(Path(tmp_path_factory.mktemp("knot"))) as server:
        yield server


@pytest.fixture
def resolver(dns_server: AuthoritativeDns) -> Resolver:
    return Resolver([Nameserver("127.0.0.1", dns_server.port)], timeout=2.0)


@pytest.fixture
def zone() -> str:
    """A zone name no other test uses (nothing cached for it anywhere)."""
    return f"z{secrets.token_hex(4)}.test"
