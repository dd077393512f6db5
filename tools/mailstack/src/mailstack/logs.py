"""The services' JSON log lines, and waiting for the one a test expects.

The services write their log out a few times a second (``mailcommon.logging``), so a line logged
a moment ago may not be in the file yet: a test waits for the line it expects instead of for a
time. To check that something was *not* logged, it first makes the service log a line of its own
(:func:`mark_smtp`, :func:`mark_pop3`, :func:`mark_http`) and waits for that one: the log is
written in order, so everything logged before the mark is out once the mark is.
"""

from __future__ import annotations

import json
import secrets
import socket
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any

from mailstack.ports import wait_until

#: How long a test waits for a log line: generous, for a loaded 2-core machine.
LOG_TIMEOUT = 30.0

Record = dict[str, Any]
#: Which records a test waits for: the fields they carry, or a test of the whole record.
Where = Mapping[str, object] | Callable[[Record], bool]


def records(text: str) -> list[Record]:
    """The JSON objects among the lines of ``text`` (a ``name | `` prefix and other lines skipped)."""
    found: list[Record] = []
    for line in text.splitlines():
        start = line.find("{")
        if start < 0:
            continue
        try:
            value = json.loads(line[start:])
        except ValueError:
            continue
        if isinstance(value, dict):
            found.append(value)
    return found


def _test(where: Where) -> Callable[[Record], bool]:
    if callable(where):
        return where
    return lambda record: all(record.get(key) == value for key, value in where.items())


def wait_for_records(
    read: Callable[[], str], where: Where, count: int = 1, timeout: float = LOG_TIMEOUT
) -> list[Record]:
    """Poll ``read()`` (a log's text) until at least ``count`` of its JSON lines match ``where``;
    returns every line that does, oldest first."""
    test = _test(where)

    def found() -> list[Record] | None:
        matching = [record for record in records(read()) if test(record)]
        return matching if len(matching) >= count else None

    try:
        return wait_until(found, timeout, f"{count} log line(s) matching {where}")
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}; the log ends with:\n{read()[-3000:]}") from None


def mark_http(base_url: str) -> Callable[[Record], bool]:
    """Make the mailstore log an access line of a request of our own; a test for that line."""
    request_id = f"log-mark-{secrets.token_hex(8)}"
    url = f"{base_url}/healthz"
    request = urllib.request.Request(url, headers={"X-Request-ID": request_id})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=30):  # noqa: S310 (loopback URL we built)
            pass
    except urllib.error.HTTPError:
        pass  # any answer is logged
    return lambda record: record.get("request_id") == request_id


def mark_smtp(host: str, port: int) -> Callable[[Record], bool]:
    """Make smtp-in log the refusal of a command of our own; a test for that line."""
    verb = f"XMARK{secrets.token_hex(8).upper()}"
    with socket.create_connection((host, port), timeout=30) as sock, sock.makefile("rb") as replies:
        replies.readline()  # the greeting
        sock.sendall(f"{verb}\r\n".encode())
        replies.readline()  # 500: not recognized
        sock.sendall(b"QUIT\r\n")
        replies.readline()
    # aiosmtpd's warning names the verb (our 500 reply no longer echoes what the client sent).
    return lambda record: verb in str(record.get("event"))


def mark_pop3(host: str, port: int) -> Callable[[Record], bool]:
    """Make pop3 log a session of our own (one NOOP, then QUIT); a test for its session line.

    The line is told by its peer address, our source port: only the local stack sees it.
    """
    with socket.create_connection((host, port), timeout=30) as sock, sock.makefile("rb") as replies:
        peer = "{}:{}".format(*sock.getsockname()[:2])
        replies.readline()  # the greeting
        sock.sendall(b"NOOP\r\nQUIT\r\n")
        replies.readline()
        replies.readline()
    return lambda record: record.get("event") == "session" and record.get("peer") == peer
