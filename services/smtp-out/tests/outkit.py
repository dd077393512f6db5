"""What the smtp-out tests share: the queue of an account, dkimpy's DNS lookups through Knot."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import dns.message
import dns.query
import httpx
from mailstack.dnsserver import AuthoritativeDns

HOST = "127.0.0.1"
#: smtp-out's lease (seconds) and concurrency in the test stack.
LEASE = 10
CONCURRENCY = 10


def queue_of(admin: httpx.Client, account: str) -> list[dict[str, Any]]:
    """The queue entries submitted by ``account``."""
    entries = admin.get("/queue").json()["entries"]
    return [e for e in entries if e["account"] == account]


def txt_lookup(dns_server: AuthoritativeDns) -> Callable[..., bytes]:
    """dkimpy's ``dnsfunc``: the TXT record at a name, asked of Knot directly."""

    def lookup(name: bytes, timeout: int = 5) -> bytes:
        query = dns.message.make_query(name.decode().rstrip("."), "TXT")
        answer = dns.query.udp(query, HOST, port=dns_server.port, timeout=timeout)
        return b"".join(b"".join(r.strings) for rrset in answer.answer for r in rrset)

    return lookup
