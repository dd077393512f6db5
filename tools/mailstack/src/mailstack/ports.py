"""Free loopback ports and readiness probes."""

from __future__ import annotations

import random
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from mailcommon.healthcheck import greeting_problem

#: ``free_port`` picks from here up to the start of the kernel's ephemeral range.
LOWEST_PORT = 10_000
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_handed_out: set[int] = set()
_T = TypeVar("_T")


def ephemeral_range() -> tuple[int, int]:
    """The ports the kernel gives to outgoing connections (Linux's default when unknown)."""
    try:
        low, high = _EPHEMERAL_RANGE.read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def _bind(host: str, port: int) -> int | None:
    """Bind ``host:port`` for a moment (port 0: the kernel's choice); the port, or None if taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return None
        bound: int = sock.getsockname()[1]
        return bound


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing uses now and that no outgoing connection will take later.

    The port is picked below the kernel's ephemeral range: a port from that range (what binding
    to port 0 returns) can become the source port of any connection made before the service
    binds it, and the service then fails with "address already in use". This process never
    hands out the same port twice.
    """
    low, _ = ephemeral_range()
    # When the kernel keeps (nearly) every port for outgoing connections: its choice (port 0).
    candidates = range(LOWEST_PORT, low) if low - LOWEST_PORT >= 1000 else range(1)
    for _attempt in range(200):
        port = _bind(host, random.choice(candidates))
        if port is not None and port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free port on {host} in {candidates.start}-{candidates.stop - 1}")


def tcp_ready(host: str, port: int) -> bool:
    """True when a TCP connection to ``host:port`` succeeds."""
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def greets(host: str, port: int) -> bool:
    """True when the server on ``host:port`` sends a positive greeting (``+OK`` or ``220``).

    A bare TCP connect is not enough behind docker-proxy, which accepts before the container
    listens. The same probe as the containers' health check.
    """
    return greeting_problem(host, port, (b"+OK", b"220")) is None


def http_ok(url: str) -> bool:
    """True when ``url`` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:  # noqa: S310 (loopback URL we built)
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def scrape(url: str, token: str | None = None) -> str:
    """The text ``url`` answers (a ``/metrics`` page), sent ``Bearer <token>`` when given."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(url, headers=headers)  # noqa: S310 (loopback URL we built)
    with urllib.request.urlopen(request, timeout=5.0) as response:  # noqa: S310
        return str(response.read().decode())


def wait_until(probe: Callable[[], _T | None], timeout: float, what: str) -> _T:
    """Poll ``probe()`` until it returns something true, and return that; raise TimeoutError
    naming ``what`` after ``timeout`` seconds. The one polling loop of the tests and tools."""
    deadline = time.monotonic() + timeout
    while not (result := probe()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout:.0f} s")
        time.sleep(0.05)
    return result
