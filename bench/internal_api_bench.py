"""The mailstore's CPU per internal call: auth (a cached login), recipient, snapshot, delivery.

Starts a redis-server and one mailstore (``python -m mailstore_api``) per ``--server`` (the
interpreter of a checkout: e.g. the main tree's ``.venv/bin/python`` for the code before a change),
each with its own temporary DATA_DIR, LOG_LEVEL=INFO (one JSON access line per call, as deployed).
Each gets a user with ``--messages`` messages (the snapshot lists them) and a second one that
receives the deliveries. Then, in every round and for every server in turn, ``--calls``
sequential calls of each kind on one keep-alive connection (after a warm-up); the figure is the
CPU time of the server process (every thread) divided by the calls, the median over the rounds,
with the latency p50. CPU per call rather than throughput: the machine is shared, and CPU time is
what the process spends whoever else runs. The CPU time is read from the kernel's CPU clock of the
process (``clock_gettime`` of its ``clock_getcpuclockid``: nanoseconds), not from psutil's
``cpu_times`` (user + system in clock ticks of 10 ms: ±7 % over 300 calls of 500 µs).

    uv run python bench/internal_api_bench.py [--rounds 9] [--calls 300] \
        [--server old=/work/main/.venv/bin/python --server new=.venv/bin/python]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis.asyncio as aioredis
from mailcommon.locks import MaildropLocks
from mailstack.ports import free_port

KINDS = ("auth", "recipient", "snapshot", "delivery")


def make_message(size: int) -> bytes:
    head = b"From: bench@example.org\r\nTo: bench@example.org\r\nSubject: bench\r\n\r\n"
    line = b"The quick brown fox jumps over the lazy dog 0123456789 abcdefghijklmnopq\r\n"
    return head + (line * (size // len(line) + 1))[: size - len(head)]


class Connection:
    """One blocking keep-alive HTTP/1.1 connection: as little client CPU as possible."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buffer = b""

    def request(self, data: bytes) -> tuple[int, bytes]:
        self.sock.sendall(data)
        while b"\r\n\r\n" not in self.buffer:
            self._fill()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        lines = head.split(b"\r\n")
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        while len(self.buffer) < length:
            self._fill()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(lines[0].split()[1]), body

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise SystemExit("the mailstore closed the connection")
        self.buffer += chunk

    def close(self) -> None:
        self.sock.close()


def http(method: str, path: str, token: str, body: bytes = b"", content_type: str = "") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
    if content_type:
        head += f"Content-Type: {content_type}\r\n"
    if body or method == "POST":
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


@dataclass
class Server:
    """One mailstore under test and its requests."""

    label: str
    python: str
    work: Path
    redis_url: str
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    requests: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    cpu: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})
    p50: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in KINDS})

    def start(self) -> None:
        (self.work / "data").mkdir(parents=True)
        env = {
            **os.environ,
            "DATA_DIR": str(self.work / "data"),
            "SECRETS_DIR": str(self.work / "secrets"),
            "API_BIND_HOST": "127.0.0.1",
            "API_BIND_PORT": str(self.port),
            "REDIS_URL": self.redis_url,
            "LOG_LEVEL": "INFO",
            "MAIL_HOSTNAME": "bench.example",
            "PYTHONDONTWRITEBYTECODE": "1",  # leaves another checkout as it is
        }
        log = (self.work / "mailstore.log").open("wb")
        self.proc = subprocess.Popen([self.python, "-m", "mailstore_api"], env=env, stdout=log)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise SystemExit(f"{self.label}: the mailstore did not start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def token(self, name: str) -> str:
        return (self.work / "secrets" / name).read_text().strip()

    def prepare(self, messages: int, size: int) -> None:
        """The users, the messages, the lease; the request of each kind."""
        admin = {"Authorization": f"Bearer {self.token('admin_token')}"}
        service = self.token("service_token")
        password = secrets.token_urlsafe(12)
        message = make_message(size)
        for user in ("reader", "sink"):
            r = httpx.post(
                f"{self.url}/api/v1/users",
                json={"username": user, "password": password},
                headers=admin,
                timeout=30,
            )
            r.raise_for_status()
        for _ in range(messages):
            r = httpx.post(
                f"{self.url}/internal/v1/deliveries",
                params={"recipient": "reader"},
                content=message,
                headers={"Authorization": f"Bearer {service}"},
            )
            r.raise_for_status()
        lease = asyncio.run(_acquire(self.redis_url, "reader"))
        auth = json.dumps({"username": "reader", "password": password}).encode()
        snapshot = json.dumps({"lock_token": lease[0], "fence": lease[1]}).encode()
        v1 = "/internal/v1"
        self.requests = {
            "auth": (http("POST", f"{v1}/auth", service, auth, "application/json"), 200),
            "recipient": (http("GET", f"{v1}/recipients/reader", service), 200),
            "snapshot": (
                http(
                    "POST", f"{v1}/mailboxes/reader/snapshot", service, snapshot, "application/json"
                ),
                200,
            ),
            "delivery": (
                http("POST", f"{v1}/deliveries?recipient=sink", service, message, "message/rfc822"),
                201,
            ),
        }

    def measure(self, kind: str, calls: int, warmup: int) -> None:
        assert self.proc is not None
        data, expected = self.requests[kind]
        clock = process_cpu_clock(self.proc.pid)
        conn = Connection(self.port)
        try:
            for _ in range(warmup):
                _check(conn.request(data), expected, kind)
            before = time.clock_gettime(clock)
            latencies = []
            for _ in range(calls):
                t0 = time.perf_counter()
                _check(conn.request(data), expected, kind)
                latencies.append(time.perf_counter() - t0)
            after = time.clock_gettime(clock)
        finally:
            conn.close()
        self.cpu[kind].append((after - before) / calls * 1e6)
        self.p50[kind].append(statistics.median(latencies) * 1e3)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(30)


def process_cpu_clock(pid: int) -> int:
    """The clock id of a process's CPU time, all threads (Linux's ``clock_getcpuclockid``)."""
    return ((~pid) << 3) | 2  # MAKE_PROCESS_CPUCLOCK(pid, CPUCLOCK_SCHED)


def _check(answer: tuple[int, bytes], expected: int, kind: str) -> None:
    status, body = answer
    if status != expected:
        raise SystemExit(f"{kind}: {status} {body[:300]!r}")


async def _acquire(redis_url: str, user: str) -> tuple[str, int]:
    client = aioredis.Redis.from_url(redis_url)
    try:
        lease = await MaildropLocks(client).acquire(user, 24 * 3600 * 1000)
    finally:
        await client.aclose()
    if lease is None:
        raise SystemExit("could not take the maildrop lock")
    return lease.token, lease.fence


def start_redis(port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            time.sleep(0.05)
    raise SystemExit("redis-server did not start")


def server_spec(text: str) -> tuple[str, str]:
    label, sep, python = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError("LABEL=PYTHON")
    return label, python


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9, help="the median of this many is shown")
    parser.add_argument("--calls", type=int, default=300, help="sequential calls per measurement")
    parser.add_argument("--warmup", type=int, default=30, help="calls before each measurement")
    parser.add_argument("--messages", type=int, default=10, help="messages in the snapshot")
    parser.add_argument("--size", type=int, default=4096, help="octets per message")
    parser.add_argument(
        "--server",
        type=server_spec,
        action="append",
        metavar="LABEL=PYTHON",
        help="a mailstore to measure, run by this interpreter (default: this one)",
    )
    args = parser.parse_args()
    specs = args.server or [("this", sys.executable)]
    work = Path(tempfile.mkdtemp(prefix="internal-api-bench-"))
    redis_port = free_port()
    redis = start_redis(redis_port)
    servers = [
        Server(label, python, work / label, f"redis://127.0.0.1:{redis_port}/{n}")
        for n, (label, python) in enumerate(specs)
    ]
    try:
        for server in servers:
            server.start()
            server.prepare(args.messages, args.size)
        for _ in range(args.rounds):  # interleaved, so every server sees the same machine load
            for kind in KINDS:
                for server in servers:
                    server.measure(kind, args.calls, args.warmup)
        report(servers, args)
    finally:
        for server in servers:
            server.stop()
        redis.terminate()
        redis.wait(10)
        shutil.rmtree(work, ignore_errors=True)


def report(servers: list[Server], args: argparse.Namespace) -> None:
    print(
        f"mailstore CPU per call, µs (median of {args.rounds} rounds of {args.calls} sequential "
        f"keep-alive calls; snapshot of {args.messages} messages; deliveries of {args.size} octets)"
    )
    median: Callable[[list[float]], float] = statistics.median
    header = f"{'call':<10}" + "".join(f"{s.label:>22}" for s in servers)
    if len(servers) > 1:
        header += "".join(f"{s.label + '/' + servers[0].label:>14}" for s in servers[1:])
    print(header)
    for kind in KINDS:
        row = f"{kind:<10}"
        for s in servers:
            row += f"{median(s.cpu[kind]):>10.0f} (p50 {median(s.p50[kind]):5.2f} ms)"
        for s in servers[1:]:
            row += f"{median(s.cpu[kind]) / median(servers[0].cpu[kind]):>14.2f}"
        print(row)
    for s in servers:
        spread = ", ".join(f"{k} {min(s.cpu[k]):.0f}-{max(s.cpu[k]):.0f}" for k in KINDS)
        print(f"  {s.label}: range over rounds: {spread}")


if __name__ == "__main__":
    main()
