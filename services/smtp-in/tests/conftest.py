"""Fixtures: a real stack (redis, mailstore-api, smtp-in) as local processes, users, mailboxes.

Everything speaks over loopback sockets; nothing of the mailstore is mocked. Extra smtp-in
processes with their own settings are started against the same mailstore with ``spawn_smtp``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from mailstack.stack import Stack

sys.path.insert(0, str(Path(__file__).parent))

from smtp_testlib import DOMAINS, Mail, SmtpProcess


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(
        tmp_path_factory.mktemp("stack"),
        services=("redis", "mailstore-api", "smtp-in"),
        domains=DOMAINS,
    ) as s:
        yield s


@pytest.fixture(scope="session")
def mail(stack: Stack) -> Mail:
    return Mail(stack, stack.smtp_port)


@pytest.fixture
def spawn_smtp(tmp_path: Path) -> Iterator[Callable[..., SmtpProcess]]:
    started: list[SmtpProcess] = []

    def spawn(stack: Stack, **env: str) -> SmtpProcess:
        proc = SmtpProcess(stack, env, tmp_path / f"smtp-in-{len(started)}.log")
        started.append(proc)
        return proc

    yield spawn
    for proc in started:
        proc.terminate()
