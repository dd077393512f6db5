"""Deliveries per second through mailstore-api's internal API vs. direct Maildir writes.

Starts its own mailstore (``python -m mailstore_api``) on a free port with a temporary DATA_DIR,
creates the recipients, then for each concurrency level runs, side by side:

- ``api``:    POST /internal/v1/deliveries of a 4 KiB message (keep-alive HTTP/1.1 connections);
- ``direct``: a minimal script doing the same Maildir writes itself, in threads:
              open tmp/ O_EXCL, write, fsync, link into new/, fsync new/, unlink tmp.

The files and links are the same; the syncs are not: the mailstore group-commits (one syncfs for
the files and one for the links of every delivery waiting, see docs/architecture.md), the minimal
script syncs each message on its own, as a writer without a server around it would.

Prints deliveries/s, p50 and p99 latency, CPU time per delivery (of the mailstore process for
``api``, of the writer threads for ``direct``: the figure to compare on a shared machine) and the
ratio api/direct. fsync is always on. ``--idempotency-keys`` sends a fresh ``Idempotency-Key``
with every delivery, as smtp-in does.

    uv run python bench/mailstore_bench.py [--seconds 5] [--concurrency 1 50] [--size 4096]
        [--idempotency-keys]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import psutil
from mailstack.ports import free_port


def make_message(size: int) -> bytes:
    head = b"From: bench@example.org\r\nTo: bench@example.org\r\nSubject: bench\r\n\r\n"
    line = b"The quick brown fox jumps over the lazy dog 0123456789 abcdefghijklmnopq\r\n"
    body = (line * (size // len(line) + 1))[: size - len(head) - 2] + b"\r\n"
    return head + body


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class Result:
    def __init__(
        self, name: str, count: int, elapsed: float, latencies: list[float], cpu: float
    ) -> None:
        self.name = name
        self.cpu_us = cpu / count * 1e6 if count else float("nan")
        self.rate = count / elapsed
        self.p50 = percentile(latencies, 0.50) * 1000
        self.p99 = percentile(latencies, 0.99) * 1000
        self.count = count

    def line(self, concurrency: int) -> str:
        return (
            f"{self.name:<7} c={concurrency:<3} {self.rate:9.1f} deliveries/s   "
            f"p50 {self.p50:7.2f} ms   p99 {self.p99:7.2f} ms   "
            f"CPU {self.cpu_us:6.0f} us/delivery   (n={self.count})"
        )


# -- direct Maildir writes ---------------------------------------------------------------------


def direct_run(root: Path, users: list[str], message: bytes, concurrency: int, seconds: float):
    host = socket.gethostname().split(".")[0][:16]
    data = message.replace(b"\r\n", b"\n")
    crlf_size = len(data) + data.count(b"\n")
    latencies: list[float] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def worker() -> None:
        mine: list[float] = []
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            ns = time.time_ns()
            secs, usecs = divmod(ns // 1000, 1_000_000)
            base = f"{secs}.{usecs:06d}{secrets.token_hex(5)}.{host}"
            tmp = root / users[0] / "tmp" / base
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, data)
            os.fsync(fd)
            os.close(fd)
            name = f"{base},S={len(data)},W={crlf_size}"
            for user in users:
                os.link(tmp, root / user / "new" / name)
            for user in users:
                dfd = os.open(root / user / "new", os.O_RDONLY | os.O_DIRECTORY)
                os.fsync(dfd)
                os.close(dfd)
            os.unlink(tmp)
            mine.append(time.perf_counter() - t0)
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    start = time.perf_counter()
    cpu = time.process_time()  # only the writer threads run meanwhile
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cpu = time.process_time() - cpu
    return Result("direct", len(latencies), time.perf_counter() - start, latencies, cpu)


# -- through the API ---------------------------------------------------------------------------


class Connection:
    """A minimal HTTP/1.1 keep-alive client: the benchmark measures the server, not a client
    library (httpx's pool costs more CPU than the server at concurrency 50 on a small machine)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def request(self, head: bytes, body: bytes) -> tuple[int, bytes]:
        self.writer.write(head + body)
        response = await self.reader.readuntil(b"\r\n\r\n")
        lines = response.split(b"\r\n")
        status = int(lines[0].split()[1])
        length = 0
        for line in lines[1:]:
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        return status, await self.reader.readexactly(length)

    def close(self) -> None:
        self.writer.close()


def server_cpu(server: psutil.Process) -> float:
    times = server.cpu_times()
    return times.user + times.system


async def api_run(
    server: psutil.Process,
    port: int,
    token: str,
    users: list[str],
    message: bytes,
    *,
    concurrency: int,
    seconds: float,
    keys: bool,
):
    latencies: list[float] = []
    query = "&".join(f"recipient={u}" for u in users)
    head = (
        f"POST /internal/v1/deliveries?{query} HTTP/1.1\r\n"
        f"Host: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {token}\r\n"
        "Content-Type: message/rfc822\r\n"
        f"Content-Length: {len(message)}\r\n"
    ).encode()
    prefix = secrets.token_hex(8)
    sent = 0

    def next_head() -> bytes:
        nonlocal sent
        sent += 1
        return head + (f"Idempotency-Key: {prefix}-{sent}\r\n\r\n" if keys else "\r\n").encode()

    connections = [await Connection.open(port) for _ in range(concurrency)]
    deadline = time.perf_counter() + seconds

    async def worker(conn: Connection) -> None:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            status, body = await conn.request(next_head(), message)
            if status != 201:
                raise SystemExit(f"delivery failed: {status} {body[:200]!r}")
            latencies.append(time.perf_counter() - t0)

    start = time.perf_counter()
    cpu = server_cpu(server)
    await asyncio.gather(*(worker(c) for c in connections))
    cpu = server_cpu(server) - cpu
    elapsed = time.perf_counter() - start
    for conn in connections:
        conn.close()
    return Result("api", len(latencies), elapsed, latencies, cpu)


# -- set-up ------------------------------------------------------------------------------------


def start_server(
    data_dir: Path, secrets_dir: Path, port: int, log_level: str
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATA_DIR": str(data_dir),
        "SECRETS_DIR": str(secrets_dir),
        "API_BIND_HOST": "127.0.0.1",
        "API_BIND_PORT": str(port),
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",  # deliveries do not use Redis
        "LOG_LEVEL": log_level,  # INFO: one JSON access line per delivery, as deployed
        "MAIL_HOSTNAME": socket.gethostname(),
    }
    log = (data_dir.parent / "mailstore.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "mailstore_api"], env=env, stdout=log)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("the mailstore did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="duration of each run")
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating runs of each; the median is reported"
    )
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 50])
    parser.add_argument("--size", type=int, default=4096, help="message size in octets")
    parser.add_argument("--recipients", type=int, default=1, help="recipients per message")
    parser.add_argument("--log-level", default="INFO", help="the mailstore's LOG_LEVEL")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the data (a disk)")
    parser.add_argument(
        "--idempotency-keys", action="store_true", help="a fresh Idempotency-Key per delivery"
    )
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mailstore-bench-", dir=args.dir))
    users = [f"bench{i}" for i in range(args.recipients)]
    message = make_message(args.size)
    port = free_port()
    work.joinpath("data").mkdir()
    server = start_server(work / "data", work / "secrets", port, args.log_level)
    process = psutil.Process(server.pid)
    try:
        url = f"http://127.0.0.1:{port}"
        admin = (work / "secrets" / "admin_token").read_text().strip()
        service = (work / "secrets" / "service_token").read_text().strip()
        for user in users:
            r = httpx.post(
                f"{url}/api/v1/users",
                json={"username": user, "password": secrets.token_urlsafe(12)},
                headers={"Authorization": f"Bearer {admin}"},
            )
            r.raise_for_status()
        direct_root = work / "direct"
        for user in users:
            for sub in ("tmp", "new", "cur"):
                (direct_root / user / sub).mkdir(parents=True)
        print(
            f"message {len(message)} octets, {len(users)} recipient(s), {args.seconds:g} s "
            f"per run, idempotency keys {'on' if args.idempotency_keys else 'off'}, data in {work}"
        )
        for concurrency in args.concurrency:
            directs: list[Result] = []
            apis: list[Result] = []

            def through_api(seconds: float, concurrency: int = concurrency) -> Result:
                return asyncio.run(
                    api_run(
                        process,
                        port,
                        service,
                        users,
                        message,
                        concurrency=concurrency,
                        seconds=seconds,
                        keys=args.idempotency_keys,
                    )
                )

            # warm-up (threads, connections, caches), not counted
            direct_run(direct_root, users, message, concurrency, 1.0)
            through_api(1.0)
            for _ in range(args.rounds):  # alternate, so both see the same machine load
                directs.append(direct_run(direct_root, users, message, concurrency, args.seconds))
                apis.append(through_api(args.seconds))
            direct = sorted(directs, key=lambda r: r.rate)[len(directs) // 2]
            api = sorted(apis, key=lambda r: r.rate)[len(apis) // 2]
            print(direct.line(concurrency))
            print(api.line(concurrency))
            ratios = sorted(a.rate / d.rate for a, d in zip(apis, directs, strict=True))
            print(
                f"ratio   c={concurrency:<3} {api.rate / direct.rate:9.2f}  (api / direct, medians;"
                f" per round {', '.join(f'{r:.2f}' for r in ratios)})",
                flush=True,
            )
    finally:
        server.terminate()
        server.wait(30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
