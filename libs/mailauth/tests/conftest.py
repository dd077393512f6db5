"""A real authoritative DNS server (knotd) on loopback, a resolver pointed at it, and the
independent reference tools (spfquery, opendkim-testmsg) reading the same zones."""

from __future__ import annotations

import secrets
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from mailauth.dns import Nameserver, Resolver
from mailstack.dnsserver import AuthoritativeDns

sys.path.insert(0, str(Path(__file__).parent))

from authreference import ReferenceTools


@pytest.fixture(scope="session")
def dns_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthoritativeDns]:
    with AuthoritativeDns(Path(tmp_path_factory.mktemp("knot"))) as server:
        yield server


@pytest.fixture(scope="session")
def reference(
    dns_server: AuthoritativeDns, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ReferenceTools]:
    with ReferenceTools(dns_server, Path(tmp_path_factory.mktemp("reference"))) as tools:
        yield tools


@pytest.fixture
def resolver(dns_server: AuthoritativeDns) -> Resolver:
    return Resolver([Nameserver("127.0.0.1", dns_server.port)], timeout=2.0)


@pytest.fixture
def zone() -> str:
    """A zone name no other test uses (nothing cached for it anywhere)."""
    return f"z{secrets.token_hex(4)}.test"
