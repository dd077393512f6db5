"""Fixtures: a throwaway redis-server and the real mailstore (``python -m mailstore_api``) on loopback.

No mocks: real SQLite, real files in a temporary DATA_DIR, real HTTP. One Redis and one mailstore serve the
whole session (each test uses its own fresh user names); tests that kill, restart or reconfigure the
server start their own with ``make_mailstore``.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import redis.asyncio as aioredis
from mailcommon.locks import Lease, MaildropLocks
from mailstack.ports import free_port, wait_until
from mailstack.stack import with_huge_pages

# Helpers beside the tests (consolekit, test_admin's lock helpers) import as top-level modules.
sys.path.insert(0, str(Path(__file__).resolve().parent))

LIMIT = 300_000  # MAX_MESSAGE_SIZE of the shared mailstore
PRIMARY = "test.example"  # MAIL_DOMAINS of every mailstore here: the primary domain ...
SECOND = "other.example"  # ... and a second one
T = TypeVar("T")


class RedisServer:
    """``redis-server`` on a free port, no persistence; can be stopped and started again."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def pong() -> bool:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    return s.recv(16).startswith(b"+PONG")
            except OSError:
                return False

        wait_until(pong, 30, "redis-server")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def acquire(self, user: str, ttl_ms: int = 60_000) -> Lease:
        """Take ``user``'s maildrop lock here, as a POP3 session does (it must be free)."""

        async def run(locks: MaildropLocks) -> Lease:
            lease = await locks.acquire(user, ttl_ms)
            assert lease is not None
            return lease

        return self._with_locks(run)

    def release(self, lease: Lease) -> None:
        async def run(locks: MaildropLocks) -> None:
            await locks.release(lease)

        self._with_locks(run)

    def _with_locks(self, use: Callable[[MaildropLocks], Awaitable[T]]) -> T:
        async def run() -> T:
            client = aioredis.Redis.from_url(self.url)
            try:
                return await use(MaildropLocks(client))
            finally:
                await client.aclose()

        return asyncio.run(run())


@dataclass
class Mailstore:
    """One ``python -m mailstore_api`` child process with its own DATA_DIR and SECRETS_DIR."""

    root: Path
    redis_url: str
    env_extra: dict[str, str] = field(default_factory=dict)
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    admin_token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    service_token: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    # What to run: the mailstore as deployed, unless a test serves it another way.
    argv: list[str] = field(default_factory=lambda: [sys.executable, "-m", "mailstore_api"])

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def secrets_dir(self) -> Path:
        return self.root / "secrets"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "DATA_DIR": str(self.data_dir),
            "SECRETS_DIR": str(self.secrets_dir),
            "API_BIND_HOST": "127.0.0.1",
            "API_BIND_PORT": str(self.port),
            "REDIS_URL": self.redis_url,
            "ADMIN_TOKEN": self.admin_token,
            "SERVICE_TOKEN": self.service_token,
            "MAIL_HOSTNAME": "mx.test.example",
            "MAIL_DOMAINS": f"{PRIMARY},{SECOND}",
            "LOG_LEVEL": "WARNING",
            **self.env_extra,
        }

    @property
    def log_file(self) -> Path:
        """The server's stdout (its JSON log lines) and stderr."""
        return self.root / "mailstore.log"

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        with self.log_file.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                env=with_huge_pages(self.env()),  # as compose and mailstack start it
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        proc = self.proc

        def healthy() -> bool:
            if proc.poll() is not None:
                raise RuntimeError(f"mailstore exited: {self.log_file.read_text()}")
            try:
                return httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(healthy, 30, "the mailstore")

    def stop(self, sig: int = signal.SIGTERM) -> int | None:
        if self.proc is None:
            return None
        self.proc.send_signal(sig)
        try:
            code = self.proc.wait(30)
        finally:
            self.proc = None
        return code

    def admin(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(
            base_url=self.url + "/api/v1",
            headers={"Authorization": f"Bearer {self.admin_token}"},
            timeout=30,
            **kwargs,
        )

    def internal(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(
            base_url=self.url + "/internal/v1",
            headers={"Authorization": f"Bearer {self.service_token}"},
            timeout=30,
            **kwargs,
        )

    @property
    def domains(self) -> list[str]:
        """Its MAIL_DOMAINS; the first is the primary domain."""
        return self.env()["MAIL_DOMAINS"].split(",")

    @property
    def primary(self) -> str:
        return self.domains[0]

    def address(self, name: str) -> str:
        """The account address of ``name`` as answers give it (a bare name: the primary domain)."""
        return name if "@" in name else f"{name}@{self.primary}"

    def maildir(self, user: str) -> Path:
        """The Maildir of account ``user`` (``local@domain``; a bare name: the primary domain)."""
        local, _, domain = self.address(user).rpartition("@")
        return self.data_dir / "mail" / domain / local

    def files(self, user: str, sub: str) -> list[Path]:
        return sorted((self.maildir(user) / sub).iterdir())


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def mailstore(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Mailstore]:
    # A small size limit, so the 413 tests need not send 25 MiB.
    store = Mailstore(
        tmp_path_factory.mktemp("mailstore"),
        redis_server.url,
        env_extra={"MAX_MESSAGE_SIZE": str(LIMIT)},
    )
    store.start()
    yield store
    store.stop()


@pytest.fixture(scope="session")
def admin(mailstore: Mailstore) -> Iterator[httpx.Client]:
    with mailstore.admin() as client:
        yield client


@pytest.fixture(scope="session")
def internal(mailstore: Mailstore) -> Iterator[httpx.Client]:
    with mailstore.internal() as client:
        yield client


@pytest.fixture
def new_user(admin: httpx.Client):
    """Create a fresh user (unique name) with a known password; returns (name, password)."""

    def make(password: str | None = None) -> tuple[str, str]:
        name = f"u{secrets.token_hex(5)}"
        password = password or secrets.token_urlsafe(12)
        r = admin.post("/users", json={"username": name, "password": password})
        assert r.status_code == 201, r.text
        return name, password

    return make


@pytest.fixture
def make_mailstore(redis_server: RedisServer, tmp_path: Path) -> Iterator[Any]:
    """Start extra mailstores (own DATA_DIR) for tests that restart, kill or reconfigure them."""
    started: list[Mailstore] = []

    def make(root: Path | None = None, **env: str) -> Mailstore:
        store = Mailstore(root or tmp_path / f"ms{len(started)}", redis_server.url, env_extra=env)
        started.append(store)
        return store

    yield make
    for store in started:
        if store.proc is not None:
            store.stop(signal.SIGKILL)


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own, for a test that stops it."""
    server = RedisServer()
    server.start()
    yield server
    server.stop()
