"""Container health probe shared by every image: ``python -m mailcommon.healthcheck URL``.

``http://...`` must answer 200. ``smtp://host:port`` must greet with ``220`` and ``pop3://host:port``
with ``+OK``, both within ``TIMEOUT`` seconds; the probe then says QUIT. A bare TCP connect would
not do: the kernel completes the handshake from the listen backlog while the event loop is hung.
With ``PROXY_PROTOCOL=true`` in its environment (the container's own), the probe starts with a
PROXY v2 ``LOCAL`` header, as a balancer's health check does (:mod:`mailcommon.proxy`).
Exit 0 when healthy, 1 otherwise, with one line saying why (Docker shows it in ``docker inspect``).
"""

from __future__ import annotations

import os
import socket
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from mailcommon.proxy import LOCAL_HEADER

TIMEOUT = 3.0
#: What each protocol's server says first when it is serving.
GREETINGS = {"smtp": (b"220",), "pop3": (b"+OK",)}
#: A greeting line is short (RFC 5321: 512 octets); a longer one without an end is not a greeting.
MAX_LINE = 512


def _read_line(sock: socket.socket, deadline: float) -> bytes:
    """One CRLF-ended line (at most ``MAX_LINE`` bytes) read before ``deadline``."""
    line = b""
    while not line.endswith(b"\n") and len(line) < MAX_LINE:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("no complete line in time")
        sock.settimeout(remaining)
        chunk = sock.recv(MAX_LINE - len(line))
        if not chunk:
            raise ConnectionError(f"closed after {line[:80]!r}")
        line += chunk
    return line


def greeting_problem(
    host: str,
    port: int,
    expected: tuple[bytes, ...],
    timeout: float = TIMEOUT,
    *,
    proxy_local: bool = False,
) -> str | None:
    """None when ``host:port`` greets with one of ``expected`` within ``timeout`` s, else why not.

    After a good greeting the probe says QUIT and reads the reply, so the server logs a normal
    end of session rather than a reset.
    """
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((host, port), timeout) as sock:
            if proxy_local:
                sock.sendall(LOCAL_HEADER)
            line = _read_line(sock, deadline)
            if not line.startswith(expected):
                return f"greeting {line[:80]!r}"
            sock.sendall(b"QUIT\r\n")
            _read_line(sock, deadline)
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def probe(target: str) -> str | None:
    """None when ``target`` is healthy, else the reason it is not."""
    url = urllib.parse.urlsplit(target)
    if url.scheme in GREETINGS:
        proxy_local = os.environ.get("PROXY_PROTOCOL", "").lower() in {"1", "true", "yes", "on"}
        return greeting_problem(
            url.hostname or "127.0.0.1",
            url.port or 0,
            GREETINGS[url.scheme],
            proxy_local=proxy_local,
        )
    if url.scheme in {"http", "https"}:
        try:
            with urllib.request.urlopen(target, timeout=TIMEOUT) as response:  # noqa: S310
                return None if response.status == 200 else f"HTTP {response.status}"
        except (OSError, urllib.error.URLError) as exc:
            return f"{type(exc).__name__}: {exc}"
    return f"unsupported target {target!r}"


def main() -> None:
    if len(sys.argv) != 2:
        print("usage: python -m mailcommon.healthcheck http://HOST:PORT/PATH | smtp:// | pop3://")
        sys.exit(2)
    reason = probe(sys.argv[1])
    print("healthy" if reason is None else f"unhealthy: {reason}")
    sys.exit(0 if reason is None else 1)


if __name__ == "__main__":
    main()
