"""Slow and greedy clients, against a stack of our own with the per-address limits raised.

- 1,000 idle (and half-a-command slow) TCP connections to pop3 and to smtp-in do not stop a normal
  client from being served;
- 10,000 commands pipelined in one write are all answered, in order, and the service's memory
  (RSS, sampled while it works) grows by less than 50 MB.

The connection limits per client address default to 50 (``MAX_CONNECTIONS_PER_IP``), which would
refuse our 1,000 loopback connections before they could hurt: this stack raises them to 5,000 so
that the test measures the event loop, not the limiter.
"""

from __future__ import annotations

import contextlib
import fcntl
import poplib
import secrets
import smtplib
import socket
import struct
import termios
import threading
import time
from collections.abc import Callable, Iterator

import psutil
import pytest
from mailstack.ports import wait_until
from mailstack.stack import Stack

HOST = "127.0.0.1"
IDLE = 1000
PIPELINED = 10_000
MAX_GROWTH = 50 * 1024 * 1024

pytestmark = pytest.mark.local_only


@pytest.fixture(scope="module")
def greedy_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {
        "POP3_ALLOW_PLAINTEXT_AUTH": "true",
        "MAX_CONNECTIONS": "5000",
        "MAX_CONNECTIONS_PER_IP": "5000",
        "SMTP_MAX_CONNECTIONS": "5000",
        "SMTP_MAX_CONNECTIONS_PER_IP": "5000",
    }
    with Stack(tmp_path_factory.mktemp("greedy"), env=env) as stack:
        yield stack


@pytest.fixture
def user(greedy_stack: Stack, seed_mailbox: Callable[..., list[str]]) -> tuple[str, str]:
    """A fresh user with exactly one message."""
    name, password = f"g{secrets.token_hex(5)}", secrets.token_urlsafe(12)
    seed_mailbox(greedy_stack, {name: password}, b"Subject: greedy\n\nhello\n")
    return name, password


@contextlib.contextmanager
def idle_connections(port: int, count: int) -> Iterator[list[socket.socket]]:
    socks: list[socket.socket] = []
    try:
        for i in range(count):
            sock = socket.create_connection((HOST, port), timeout=30)
            if i % 2:
                sock.sendall(b"NO")  # a slow client: half a command, never finished
            socks.append(sock)
        yield socks
    finally:
        for sock in socks:
            sock.close()


def greeted(socks: list[socket.socket], prefix: bytes) -> int:
    """How many of a sample of the idle connections got the greeting (were really accepted)."""
    count = 0
    for sock in socks[:: max(1, len(socks) // 50)]:
        sock.settimeout(10)
        with contextlib.suppress(OSError):
            if sock.recv(100).startswith(prefix):
                count += 1
    return count


def test_1000_idle_pop3_connections_do_not_block_a_normal_client(
    greedy_stack: Stack, user: tuple[str, str]
) -> None:
    name, password = user
    with idle_connections(greedy_stack.pop3_port, IDLE) as socks:
        started = time.monotonic()
        pop = poplib.POP3(HOST, greedy_stack.pop3_port, timeout=10)
        pop.user(name)
        pop.pass_(password)
        assert pop.stat()[0] == 1
        assert pop.retr(1)[1][-1] == b"hello"
        pop.quit()
        elapsed = time.monotonic() - started
        assert elapsed < 5, f"normal client took {elapsed:.1f} s beside {IDLE} idle connections"
        sample = socks[:: max(1, len(socks) // 50)]
        assert greeted(socks, b"+OK") == len(sample)
    assert greedy_stack.processes["pop3"].running()


def test_1000_idle_smtp_connections_do_not_block_a_normal_client(
    greedy_stack: Stack, user: tuple[str, str]
) -> None:
    name, _ = user
    with idle_connections(greedy_stack.smtp_port, IDLE) as socks:
        started = time.monotonic()
        with smtplib.SMTP(HOST, greedy_stack.smtp_port, timeout=10) as smtp:
            refused = smtp.sendmail(
                "a@example.org", [f"{name}@pokey.onl"], b"Subject: beside the idle\r\n\r\nok\r\n"
            )
            assert refused == {}
        elapsed = time.monotonic() - started
        assert elapsed < 5, f"normal client took {elapsed:.1f} s beside {IDLE} idle connections"
        sample = socks[:: max(1, len(socks) // 50)]
        assert greeted(socks, b"220") == len(sample)
    assert greedy_stack.processes["smtp-in"].running()


class RssSampler:
    """Samples a process's resident set size in a thread; ``peak`` is the highest seen."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.baseline = self.process.memory_info().rss
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.01)  # the sampling period: no event marks a peak

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


def queued(sock: socket.socket) -> int:
    """Bytes received on ``sock`` and not read yet."""
    return int(struct.unpack("i", fcntl.ioctl(sock, termios.FIONREAD, b"\0" * 4))[0])


def pipeline(port: int, prelude: bytes, commands: bytes, expect_lines: int) -> list[bytes]:
    """Send ``prelude`` and ``commands`` in one write each (from a thread), read replies."""
    sock = socket.create_connection((HOST, port), timeout=60)
    try:
        sock.sendall(prelude)
        writer = threading.Thread(target=sock.sendall, args=(commands,), daemon=True)
        writer.start()
        buf = b""
        deadline = time.monotonic() + 60
        while (count := buf.count(b"\r\n")) < expect_lines:
            assert time.monotonic() < deadline, f"only {count} lines answered"
            chunk = sock.recv(1 << 20)
            assert chunk, f"closed after {count} lines: {buf[-300:]!r}"
            buf += chunk
        writer.join(10)
        return buf.split(b"\r\n")[:expect_lines]
    finally:
        sock.close()


def test_10000_pipelined_pop3_commands_answered_in_order_with_bounded_memory(
    greedy_stack: Stack, user: tuple[str, str]
) -> None:
    name, password = user
    kinds = [b"NOOP", b"STAT", b"LIST 1", b"LIST 2", b"UIDL 1"]
    commands = [kinds[i % len(kinds)] for i in range(PIPELINED)]
    pid = greedy_stack.processes["pop3"].pid
    assert pid is not None
    prelude = f"USER {name}\r\nPASS {password}\r\n".encode()
    with RssSampler(pid) as rss:
        lines = pipeline(
            greedy_stack.pop3_port,
            prelude,
            b"".join(c + b"\r\n" for c in commands) + b"QUIT\r\n",
            3 + PIPELINED + 1,
        )
    assert lines[0].startswith(b"+OK") and lines[1].startswith(b"+OK"), lines[:3]
    assert lines[2].startswith(b"+OK"), lines[:3]
    stat = lines[2 + 2]  # the reply to the first STAT
    assert stat.startswith(b"+OK 1 "), stat
    size = stat.split()[2]
    expected = {
        b"NOOP": b"+OK",
        b"STAT": b"+OK 1 " + size,
        b"LIST 1": b"+OK 1 " + size,
        b"LIST 2": b"-ERR",
        b"UIDL 1": b"+OK 1 ",
    }
    for i, (command, reply) in enumerate(zip(commands, lines[3:-1], strict=True)):
        assert reply.startswith(expected[command]), (i, command, reply)
        if command == b"NOOP":
            assert reply.strip() == b"+OK", (i, reply)
    assert lines[-1].startswith(b"+OK"), lines[-1]
    growth = rss.peak - rss.baseline
    print(f"pop3 RSS {rss.baseline / 2**20:.1f} MB, peak +{growth / 2**20:.1f} MB")
    assert growth < MAX_GROWTH, f"pop3 RSS grew by {growth / 2**20:.1f} MB"
    assert greedy_stack.processes["pop3"].running()


def test_10000_pipelined_smtp_commands_answered_in_order_with_bounded_memory(
    greedy_stack: Stack, user: tuple[str, str]
) -> None:
    name, _ = user
    kinds = [b"NOOP", b"RSET", b"MAIL FROM:<a@example.org>", f"RCPT TO:<{name}@pokey.onl>".encode()]
    commands = [kinds[i % len(kinds)] for i in range(PIPELINED)]
    expected = {kinds[0]: b"250 ", kinds[1]: b"250 ", kinds[2]: b"250 ", kinds[3]: b"250 "}
    pid = greedy_stack.processes["smtp-in"].pid
    assert pid is not None
    with RssSampler(pid) as rss:
        lines = pipeline(
            greedy_stack.smtp_port,
            b"HELO greedy.test\r\n",
            b"".join(c + b"\r\n" for c in commands) + b"QUIT\r\n",
            2 + PIPELINED + 1,
        )
    assert lines[0].startswith(b"220"), lines[0]
    assert lines[1].startswith(b"250"), lines[1]
    for i, (command, reply) in enumerate(zip(commands, lines[2:-1], strict=True)):
        assert reply.startswith(expected[command]), (i, command, reply)
    assert lines[-1].startswith(b"221"), lines[-1]
    growth = rss.peak - rss.baseline
    print(f"smtp-in RSS {rss.baseline / 2**20:.1f} MB, peak +{growth / 2**20:.1f} MB")
    assert growth < MAX_GROWTH, f"smtp-in RSS grew by {growth / 2**20:.1f} MB"
    assert greedy_stack.processes["smtp-in"].running()


def test_logs_show_no_traceback(greedy_stack: Stack) -> None:
    for service in ("pop3", "smtp-in", "mailstore-api"):
        text = greedy_stack.logs_until_now(service)
        assert "Traceback" not in text, text[-3000:]


SLOW_READERS = 10
BIG = 4 * 1024 * 1024


def test_slow_readers_of_big_messages_do_not_grow_memory_or_block_others(
    greedy_stack: Stack,
    seed_mailbox: Callable[..., list[str]],
) -> None:
    """Clients that RETR a 4 MB message and never read it: bounded memory, others are served."""
    names = [f"slow{secrets.token_hex(4)}" for _ in range(SLOW_READERS + 1)]
    password = secrets.token_urlsafe(12)
    line = b"x" * 76 + b"\n"
    body = b"Subject: big\n\n" + line * (BIG // len(line))
    seed_mailbox(greedy_stack, dict.fromkeys(names, password), body, timeout=60)
    pid = greedy_stack.processes["pop3"].pid
    assert pid is not None
    slow: list[socket.socket] = []
    try:
        with RssSampler(pid) as rss:
            for name in names[:-1]:
                sock = socket.create_connection((HOST, greedy_stack.pop3_port), timeout=30)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.sendall(f"USER {name}\r\nPASS {password}\r\nRETR 1\r\n".encode())
                slow.append(sock)  # and never read
            # until the server is under way with every RETR, its replies filling those sockets
            wait_until(lambda: all(queued(s) > 1000 for s in slow), 60, "the slow readers' RETR")
            started = time.monotonic()
            pop = poplib.POP3(HOST, greedy_stack.pop3_port, timeout=30)
            pop.user(names[-1])
            pop.pass_(password)
            _, lines, octets = pop.retr(1)
            pop.quit()
            elapsed = time.monotonic() - started
        assert octets >= BIG and lines[-1] == b"x" * 76
        assert elapsed < 15, (
            f"a normal RETR took {elapsed:.1f} s beside {SLOW_READERS} slow readers"
        )
        growth = rss.peak - rss.baseline
        print(f"pop3 RSS {rss.baseline / 2**20:.1f} MB, peak +{growth / 2**20:.1f} MB")
        assert growth < MAX_GROWTH, f"pop3 RSS grew by {growth / 2**20:.1f} MB"
    finally:
        for sock in slow:
            sock.close()
    assert greedy_stack.processes["pop3"].running()
