"""Helpers shared by the pop3 tests: users and mail through the real APIs, raw sockets, extra
pop3d processes. (Imported by name: conftest puts this directory on sys.path.)"""

from __future__ import annotations

import secrets
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
from mailstack.ports import free_port, tcp_ready, wait_until
from mailstack.processes import stop_process
from mailstack.stack import Stack

HOST = "127.0.0.1"
#: The stack's primary domain (the first of mailstack's MAIL_DOMAINS): a bare name's.
PRIMARY_DOMAIN = "pokey.onl"


def account(user: str) -> str:
    """The address of the account a bare ``user`` name is (locks, logs and fences use it)."""
    return f"{user}@{PRIMARY_DOMAIN}"


STACK_ENV = {
    "POP3_ALLOW_PLAINTEXT_AUTH": "true",
    "POP3_AUTH_FAIL_DELAY": "0.05",
    "POP3_AUTH_FAIL_MAX_PER_IP": "100000",
    "POP3_AUTH_FAIL_MAX_PER_USER": "1000",
    "APOP_ENABLED": "true",
}


@dataclass
class Pop3Proc:
    popen: subprocess.Popen[bytes]
    port: int
    pop3s_port: int
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def logs(self) -> str:
        """What it has written to its log so far (wait for a line with ``wait_for_records``)."""
        return self.log_path.read_text(errors="replace")


class Mail:
    """Users and deliveries through the mailstore's real APIs."""

    def __init__(self, stack: Stack) -> None:
        self.stack = stack
        self.admin = httpx.Client(
            base_url=f"{stack.api_url}/api/v1",
            headers={"Authorization": f"Bearer {stack.admin_token}"},
            timeout=60,
        )
        self.internal = httpx.Client(
            base_url=f"{stack.api_url}/internal/v1",
            headers={"Authorization": f"Bearer {stack.service_token}"},
            timeout=120,
        )

    def user(self, password: str | None = None, **extra: object) -> tuple[str, str]:
        name = f"t{secrets.token_hex(5)}"
        pw = password or secrets.token_urlsafe(12)
        r = self.admin.post("/users", json={"username": name, "password": pw, **extra})
        assert r.status_code == 201, r.text
        return name, pw

    def deliver(self, user: str, data: bytes) -> str:
        r = self.internal.post(
            "/deliveries",
            params={"recipient": user},
            content=data,
            headers={"Content-Type": "message/rfc822"},
        )
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def messages(self, user: str) -> list[str]:
        r = self.admin.get(f"/users/{user}/messages")
        assert r.status_code == 200, r.text
        body = r.json()
        items = body["messages"] if isinstance(body, dict) else body
        return [m["id"] for m in items]

    def raw(self, user: str, message_id: str) -> bytes:
        r = self.admin.get(f"/users/{user}/messages/{message_id}/raw")
        assert r.status_code == 200, r.text
        return r.content


def start_pop3(stack: Stack, workdir: Path, overrides: dict[str, str]) -> Pop3Proc:
    port, sport = free_port(), free_port()
    env = {
        **stack.environment(),
        **STACK_ENV,
        "POP3_BIND_PORT": str(port),
        "POP3S_BIND_PORT": str(sport),
        **overrides,
    }
    log_path = workdir / f"pop3-{port}.log"
    log = log_path.open("ab")
    popen = subprocess.Popen(
        [sys.executable, "-m", "pop3d"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log.close()

    def ready() -> bool:
        if popen.poll() is not None:
            raise RuntimeError(log_path.read_text())
        return tcp_ready(HOST, port) and (not int(env["POP3S_BIND_PORT"]) or tcp_ready(HOST, sport))

    try:
        wait_until(ready, 30, "pop3d")
    except TimeoutError as exc:
        popen.kill()
        raise TimeoutError(f"{exc}: {log_path.read_text()}") from None
    return Pop3Proc(popen, port, sport, log_path)


def stop_pop3(proc: Pop3Proc) -> None:
    stop_process(proc.popen)


class Raw:
    """A raw POP3 connection: send bytes, read CRLF lines (the telnet of the tests)."""

    def __init__(self, port: int, timeout: float = 30.0, sock: socket.socket | None = None) -> None:
        self.sock = sock or socket.create_connection((HOST, port), timeout=timeout)
        self.file = self.sock.makefile("rb")

    def line(self) -> bytes:
        data = self.file.readline()
        assert data.endswith(b"\r\n"), data
        return data[:-2]

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def cmd(self, text: str | bytes) -> bytes:
        self.send((text.encode() if isinstance(text, str) else text) + b"\r\n")
        return self.line()

    def multi(self) -> list[bytes]:
        lines = []
        while (line := self.line()) != b".":
            lines.append(line)
        return lines

    def closed(self) -> bool:
        return self.file.read(1) == b""

    def close(self) -> None:
        self.file.close()
        self.sock.close()
