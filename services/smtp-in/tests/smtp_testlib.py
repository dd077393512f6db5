"""Helpers shared by smtp-in's tests: the stack handle, extra smtp-in processes, raw SMTP."""

from __future__ import annotations

import itertools
import json
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mailstack.ports import free_port, tcp_ready, wait_until
from mailstack.processes import stop_process
from mailstack.stack import Stack

DOMAINS = "pokey.onl,example.test"
HOST = "127.0.0.1"


@dataclass
class Mail:
    """What a test needs of a running stack: SMTP port, admin API, the Maildirs."""

    stack: Stack
    smtp_port: int
    counter: Iterator[int] = field(default_factory=itertools.count)

    @property
    def api_url(self) -> str:
        return self.stack.api_url

    def api(self, method: str, path: str, body: object | None = None) -> tuple[int, bytes]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.api_url + path,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self.stack.admin_token}",
                "Content-Type": "application/json",
            },
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def add_user(self, name: str | None = None) -> str:
        """Create a user (a fresh name unless given) and return its name."""
        name = name or f"u{os.getpid()}x{next(self.counter)}"
        status, body = self.api("POST", "/api/v1/users", {"username": name, "password": "pw-" * 5})
        assert status in (201, 409), body
        return name

    def maildir(self, user: str) -> Path:
        return self.stack.maildir(user)

    def stored(self, user: str) -> list[bytes]:
        """The messages in ``user``'s Maildir (new/ and cur/), oldest name first."""
        base = self.maildir(user)
        files = sorted(
            p for sub in ("new", "cur") if (base / sub).exists() for p in (base / sub).iterdir()
        )
        return [p.read_bytes() for p in files]

    def stored_names(self, user: str) -> list[str]:
        base = self.maildir(user)
        return sorted(
            p.name
            for sub in ("new", "cur")
            if (base / sub).exists()
            for p in (base / sub).iterdir()
        )


def split_trace(message: bytes) -> tuple[list[bytes], bytes]:
    """(the header lines smtp-in added: Return-Path, Received, then Authentication-Results and
    X-Spam lines when present, continuation lines included; the rest as stored)."""
    assert message.startswith(b"Return-Path: "), message[:200]
    lines = message.split(b"\n")
    assert lines[1].startswith(b"Received: "), message[:300]
    trace, i = [lines[0]], 1
    for prefix in (
        b"Received: ",
        b"Authentication-Results: ",
        b"X-Spam: ",
        b"X-Spam-Score: ",
        b"X-Spam-Checker: ",
    ):
        if lines[i].startswith(prefix):
            trace.append(lines[i])
            i += 1
            while lines[i].startswith((b"\t", b" ")):
                trace.append(lines[i])
                i += 1
    return trace, b"\n".join(lines[i:])


class SmtpProcess:
    """An extra ``python -m smtp_in`` with its own settings, against a stack's mailstore."""

    def __init__(self, stack: Stack, env: dict[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.env = {**stack.environment(), "SMTP_BIND_PORT": str(self.port), **env}
        self.log_path = log_path
        self._log = log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "smtp_in"],
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def ready() -> bool:
            if self.proc.poll() is not None:
                raise RuntimeError(f"smtp-in exited {self.proc.returncode}: {self.logs()}")
            return tcp_ready(HOST, self.port)

        wait_until(ready, 20, "smtp-in")

    def logs(self) -> str:
        """What it has written to its log so far (wait for a line with ``wait_for_records``)."""
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout: float = 20) -> int:
        code = stop_process(self.proc, timeout)
        self._log.close()
        return code


def read_reply(sock: socket.socket, buf: bytearray) -> bytes:
    """One complete (possibly multi-line) SMTP reply from a raw socket."""
    lines: list[bytes] = []
    while True:
        while b"\r\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed; got {bytes(buf)!r} after {lines!r}")
            buf += chunk
        line, _, rest = bytes(buf).partition(b"\r\n")
        buf[:] = rest
        lines.append(line)
        if len(line) < 4 or line[3:4] != b"-":
            return b"\r\n".join(lines)


def wait_for(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    """``mailstack.ports.wait_until`` with a timeout generous for a loaded 2-core machine."""
    wait_until(predicate, timeout, what)
