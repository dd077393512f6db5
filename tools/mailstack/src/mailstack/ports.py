"""Free loopback ports and readiness probes."""

from __future__ import annotations

import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that nothing listens on right now (the kernel's choice)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


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
    listens.
    """
    try:
        with socket.create_connection((host, port), timeout=2.0) as sock:
            sock.settimeout(2.0)
            return sock.recv(64).startswith((b"+OK", b"220"))
    except OSError:
        return False


def http_ok(url: str) -> bool:
    """True when ``url`` answers 200."""
    try:
        with urllib.request.urlopen(url, timeout=2.0) as response:  # noqa: S310 (loopback URL we built)
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def wait_until(probe: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll ``probe()`` until it is true; raise TimeoutError naming ``what`` otherwise."""
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} not ready after {timeout:.0f} s")
        time.sleep(0.05)


#: The services write their log output every 0.2 s (``mailcommon.logging.FLUSH_INTERVAL``);
#: after this long, every line logged before a read has reached the log.
LOG_SETTLE = 0.5


def settle_logs() -> None:
    """Wait until every line the services logged so far has been written out."""
    time.sleep(LOG_SETTLE)
