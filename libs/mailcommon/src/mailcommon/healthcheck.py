"""Container health probe shared by every image: ``python -m mailcommon.healthcheck URL``.

``http://...`` must answer 200; ``tcp://host:port`` must accept a connection. Exit 0 when healthy,
1 otherwise, with one line saying why (Docker shows it in ``docker inspect``).
"""

from __future__ import annotations

import socket
import sys
import urllib.error
import urllib.parse
import urllib.request

TIMEOUT = 3.0


def probe(target: str) -> str | None:
    """None when ``target`` is healthy, else the reason it is not."""
    url = urllib.parse.urlsplit(target)
    try:
        if url.scheme == "tcp":
            with socket.create_connection((url.hostname or "127.0.0.1", url.port or 0), TIMEOUT):
                return None
        if url.scheme in {"http", "https"}:
            with urllib.request.urlopen(target, timeout=TIMEOUT) as response:  # noqa: S310
                return None if response.status == 200 else f"HTTP {response.status}"
    except (OSError, urllib.error.URLError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return f"unsupported target {target!r}"


def main() -> None:
    if len(sys.argv) != 2:
        print("usage: python -m mailcommon.healthcheck http://HOST:PORT/PATH | tcp://HOST:PORT")
        sys.exit(2)
    reason = probe(sys.argv[1])
    print("healthy" if reason is None else f"unhealthy: {reason}")
    sys.exit(0 if reason is None else 1)


if __name__ == "__main__":
    main()
