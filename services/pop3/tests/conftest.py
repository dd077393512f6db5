"""Fixtures: a real stack (redis-server, mailstore-api, pop3d) as local processes.

``stack`` is shared by the whole session (plain-text login allowed, as in the seed's set-up, with a
short failed-login delay). ``pop3_factory`` starts further pop3d processes against the same Redis
and mailstore with other settings (TLS only, small limits).
"""

from __future__ import annotations

import ssl
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from mailstack.stack import Stack

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pop3kit import STACK_ENV, Mail, Pop3Proc, Raw, start_pop3, stop_pop3


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("pop3stack")
    with Stack(workdir, services=("redis", "mailstore-api", "pop3"), env=STACK_ENV) as s:
        yield s


@pytest.fixture(scope="session")
def mail(stack: Stack) -> Mail:
    return Mail(stack)


@pytest.fixture(scope="session")
def pop3_pid(stack: Stack) -> int:
    pid = stack.processes["pop3"].pid
    assert pid is not None
    return pid


@pytest.fixture(scope="module")
def pop3_factory(
    stack: Stack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[dict[str, str]], Pop3Proc]]:
    started: list[Pop3Proc] = []
    workdir = tmp_path_factory.mktemp("pop3extra")

    def make(overrides: dict[str, str]) -> Pop3Proc:
        proc = start_pop3(stack, workdir, overrides)
        started.append(proc)
        return proc

    yield make
    for proc in started:
        stop_pop3(proc)


@pytest.fixture(scope="session")
def client_tls(stack: Stack) -> ssl.SSLContext:
    """A client context trusting the certificate the stack generated (CN mail.pokey.onl)."""
    ctx = ssl.create_default_context(cadata=stack.read_secret("tls/cert.pem").decode())
    ctx.check_hostname = False  # we connect to 127.0.0.1; the chain itself is verified
    return ctx


@pytest.fixture
def raw(stack: Stack) -> Iterator[Callable[..., Raw]]:
    opened: list[Raw] = []

    def make(port: int | None = None) -> Raw:
        r = Raw(port or stack.pop3_port)
        opened.append(r)
        return r

    yield make
    for r in opened:
        r.close()
