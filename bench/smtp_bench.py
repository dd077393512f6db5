"""SMTP intake benchmark: smtp-in end to end, against Postfix and a minimal aiosmtpd Maildir writer.

    uv run python bench/smtp_bench.py [--seconds 9] [--rounds 3] [--concurrency 1,10,50] [--no-postfix]

Start Postfix first (as root; ``../shared`` is the shared folder beside the repository):
``bash ../shared/peers/peers.sh install`` once, then ``bash ../shared/peers/peers.sh start``; stop
it afterwards with ``peers.sh stop``.

What is measured, for 4 KiB messages, at each concurrency (clients each holding one connection
and sending one message after the other, as an MTA with N connections does):

- **smtp-in**: the whole path, smtp-in → mailstore-api → Maildir with fsync. Its 250 is sent only
  once the mailstore has the message on disk, so the accepted rate is the end-to-end rate.
- **postfix** (127.0.0.1:2125, Debian defaults, virtual Maildir delivery): its 250 means "in the
  queue" (fsynced); delivery into the Maildir happens later. Its end-to-end rate is the number of
  messages divided by the time until the last one is in a Maildir's ``new/``.
- **minimal**: a bare aiosmtpd handler in one process writing each message to a Maildir
  (tmp/, fsync, rename into new/, fsync of new/); the floor of what aiosmtpd itself costs.

Latency is from MAIL FROM to the 250 after the final dot. Then the peak resident memory of a fresh
smtp-in process while 50 clients each send one 10 MiB message at once (VmHWM from /proc).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from aiosmtpd.smtp import SMTP
from mailstack.ports import free_port
from mailstack.stack import Stack

POSTFIX_PORT = 2125
POSTFIX_USERS = [f"u{i}" for i in range(200)]  # the accounts peers.sh gives Postfix
PEERS_DIR = Path(os.environ.get("PEERS_DIR", "/tmp/peers"))
HOST = "127.0.0.1"


# --- A small asyncio SMTP client -------------------------------------------------------------------
class Client:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int, helo: str = "bench.client") -> Client:
        reader, writer = await asyncio.open_connection(HOST, port, limit=1 << 20)
        client = cls(reader, writer)
        await client.reply()
        await client.command(f"EHLO {helo}")
        return client

    async def reply(self) -> tuple[int, str]:
        lines = []
        while True:
            line = await self.reader.readline()
            if not line:
                raise ConnectionError("connection closed")
            lines.append(line.decode(errors="replace").rstrip())
            if line[3:4] != b"-":
                return int(line[:3]), "\n".join(lines)

    async def command(self, line: str) -> tuple[int, str]:
        self.writer.write(line.encode() + b"\r\n")
        return await self.reply()

    async def send(self, sender: str, rcpt: str, body: bytes) -> int:
        """One transaction; the final reply code."""
        for line in (f"MAIL FROM:<{sender}>", f"RCPT TO:<{rcpt}>", "DATA"):
            code, text = await self.command(line)
            if code >= 400:
                raise RuntimeError(f"{line}: {text}")
        self.writer.write(body + b".\r\n")
        code, text = await self.reply()
        if code != 250:
            raise RuntimeError(f"DATA: {text}")
        return code

    async def close(self) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            await self.command("QUIT")
        self.writer.close()


def make_body(size: int, token: str) -> bytes:
    head = f"From: bench@bench.client\r\nTo: someone\r\nSubject: bench {token}\r\n\r\n".encode()
    line = b"x" * 76 + b"\r\n"
    body = head + line * max(0, (size - len(head)) // len(line))
    return body


def fresh_message() -> bytes:
    """A 4 KiB message with a subject of its own."""
    return make_body(4096, uuid.uuid4().hex)


@dataclass
class Result:
    name: str
    concurrency: int
    messages: int  # counted in the measured window
    seconds: float
    latencies: list[float] = field(default_factory=list)
    sent_total: int = 0  # warm-up included
    started_at: float = 0.0  # time.time() when the warm-up began
    end_to_end_seconds: float | None = None  # warm-up start to the last message in a Maildir

    @property
    def rate(self) -> float:
        return self.messages / self.seconds

    @property
    def e2e_rate(self) -> float:
        if self.end_to_end_seconds is None:
            return self.rate
        return self.sent_total / self.end_to_end_seconds

    def pct(self, p: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000


async def load(
    name: str,
    *,
    port: int,
    domain: str,
    users: list[str],
    concurrency: int,
    seconds: float,
    sender: str = "bench@bench.client",
    message: Callable[[], bytes] = fresh_message,
) -> Result:
    """``concurrency`` connections sending ``message()`` (4 KiB) for ``seconds`` (after a short
    warm-up)."""
    started_at = time.time()
    clients = [await Client.connect(port) for _ in range(concurrency)]
    latencies: list[float] = []
    count = sent = 0
    measuring = False
    deadline = 0.0

    async def worker(n: int, client: Client) -> None:
        nonlocal count, sent
        i = 0
        while time.monotonic() < deadline:
            user = users[(n * 7 + i) % len(users)]
            i += 1
            body = message()
            started = time.monotonic()
            await client.send(sender, f"{user}@{domain}", body)
            sent += 1
            if measuring:
                latencies.append(time.monotonic() - started)
                count += 1

    # Warm-up: half a second, not counted.
    deadline = time.monotonic() + 0.5
    await asyncio.gather(*(worker(n, c) for n, c in enumerate(clients)))
    measuring = True
    started = time.monotonic()
    deadline = started + seconds
    await asyncio.gather(*(worker(n, c) for n, c in enumerate(clients)))
    elapsed = time.monotonic() - started
    for client in clients:
        await client.close()
    return Result(name, concurrency, count, elapsed, latencies, sent, started_at)


# --- The minimal aiosmtpd Maildir server (run as a child process) ------------------------------
def minimal_server(port: int, maildir: Path) -> None:
    for sub in ("tmp", "new", "cur"):
        (maildir / sub).mkdir(parents=True, exist_ok=True)
    new_fd = os.open(maildir / "new", os.O_RDONLY)
    counter = iter(range(1 << 62))

    class Handler:
        async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
            content: bytes = envelope.original_content  # type: ignore[attr-defined]
            name = f"{time.time():.6f}.{os.getpid()}_{next(counter)}.bench"
            tmp = maildir / "tmp" / name
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            try:
                os.write(fd, content.replace(b"\r\n", b"\n"))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(tmp, maildir / "new" / name)
            os.fsync(new_fd)
            return "250 2.0.0 Ok"

    async def main() -> None:
        loop = asyncio.get_running_loop()
        handler = Handler()
        server = await loop.create_server(
            lambda: SMTP(handler, hostname="minimal", loop=loop), HOST, port
        )
        print("ready", flush=True)
        await server.serve_forever()

    asyncio.run(main())


# --- Helpers ---------------------------------------------------------------------------------------
def postfix_delivered() -> int:
    base = PEERS_DIR / "pfmail"
    return sum(len(os.listdir(d)) for d in base.glob("u*/Maildir/new") if d.is_dir())


def port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=1):
            return True
    except OSError:
        return False


def vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def vm_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


async def memory_run(port: int, domain: str, users: list[str], n: int, size: int) -> float:
    body = make_body(size, "big")
    clients = [await Client.connect(port) for _ in range(n)]
    started = time.monotonic()
    await asyncio.gather(
        *(
            c.send("bench@bench.client", f"{users[i % len(users)]}@{domain}", body)
            for i, c in enumerate(clients)
        )
    )
    elapsed = time.monotonic() - started
    for c in clients:
        await c.close()
    return elapsed


def report(results: list[Result]) -> None:
    print()
    print(
        f"{'server':10} {'conc':>4} {'msgs':>6} {'accepted/s':>11} {'end-to-end/s':>13} {'p50 ms':>8} {'p99 ms':>8}"
    )
    for r in results:
        print(
            f"{r.name:10} {r.concurrency:>4} {r.messages:>6} {r.rate:>11.1f} {r.e2e_rate:>13.1f}"
            f" {r.pct(0.50):>8.1f} {r.pct(0.99):>8.1f}"
        )
    print()
    by = {(r.name, r.concurrency): r for r in results}
    for c in sorted({r.concurrency for r in results}):
        ours = by.get(("smtp-in", c))
        if ours is None:
            continue
        parts = [f"concurrency {c:>2}:"]
        if ("postfix", c) in by:
            pf = by[("postfix", c)]
            parts.append(f"smtp-in/postfix end-to-end {ours.e2e_rate / pf.e2e_rate:.2f}")
            parts.append(f"(accepted {ours.rate / pf.rate:.2f})")
        if ("minimal", c) in by:
            parts.append(f"smtp-in/minimal {ours.rate / by[('minimal', c)].rate:.2f}")
        print("  ".join(parts))


def wait_for_postfix(target: int, limit: float = 300.0) -> float:
    """Wait until Postfix's Maildirs hold ``target`` messages; the time.time() when they did."""
    deadline = time.monotonic() + limit
    while postfix_delivered() < target and time.monotonic() < deadline:
        time.sleep(0.02)
    return time.time()


def create_users(api_url: str, admin_token: str, users: list[str]) -> None:
    with httpx.Client(headers={"Authorization": f"Bearer {admin_token}"}) as http:
        for user in users:
            http.post(
                f"{api_url}/api/v1/users", json={"username": user, "password": "benchmark-pw"}
            )


def merge(parts: list[Result]) -> Result:
    """One figure from several interleaved slices of the same server and concurrency."""
    first = parts[0]
    merged = Result(first.name, first.concurrency, 0, 0.0)
    e2e = 0.0
    for r in parts:
        merged.messages += r.messages
        merged.seconds += r.seconds
        merged.latencies += r.latencies
        merged.sent_total += r.sent_total
        e2e += r.end_to_end_seconds or 0.0
    if first.end_to_end_seconds is not None:
        merged.end_to_end_seconds = e2e
    return merged


def add_measure_options(parser: argparse.ArgumentParser) -> None:
    """The options :func:`measure_points` reads."""
    parser.add_argument("--seconds", type=float, default=9.0, help="measured seconds per point")
    parser.add_argument("--concurrency", default="1,10,50")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved slices per point")
    parser.add_argument("--no-postfix", action="store_true")


def measure_points(
    args: argparse.Namespace,
    targets: list[tuple[str, int]],
    users: list[str],
    *,
    sender: str = "bench@bench.client",
    message: Callable[[], bytes] = fresh_message,
) -> list[Result]:
    """Each concurrency: ``--rounds`` slices per target (``(name, port)``, and Postfix unless
    ``--no-postfix``), interleaved, so that load from other processes on the machine falls on all
    alike; the slices are then added up. Every message is ``message()`` from ``sender``."""
    postfix = not args.no_postfix and port_open(POSTFIX_PORT)
    if not args.no_postfix and not postfix:
        print("postfix is not listening on 127.0.0.1:2125 (peers.sh start): skipped")
    servers = [(name, port, users) for name, port in targets]
    if postfix:
        servers.append(("postfix", POSTFIX_PORT, POSTFIX_USERS))
    results: list[Result] = []
    for c in [int(c) for c in args.concurrency.split(",")]:
        slices: dict[str, list[Result]] = {name: [] for name, _, _ in servers}
        for _ in range(args.rounds):
            for name, port, names in servers:
                before = postfix_delivered() if name == "postfix" else 0
                r = asyncio.run(
                    load(
                        name,
                        port=port,
                        domain="bench.test",
                        users=names,
                        concurrency=c,
                        seconds=args.seconds / args.rounds,
                        sender=sender,
                        message=message,
                    )
                )
                if name == "postfix":
                    r.end_to_end_seconds = wait_for_postfix(before + r.sent_total) - r.started_at
                slices[name].append(r)
        for name, _, _ in servers:
            r = merge(slices[name])
            line = f"{name:10} c={c:<3} {r.rate:8.1f} msg/s accepted"
            if name == "postfix":
                line += f", {r.e2e_rate:.1f} end to end"
            print(f"{line}  p50 {r.pct(0.5):.1f} ms  p99 {r.pct(0.99):.1f} ms", flush=True)
            results.append(r)
    return results


def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="smtp-bench-") as tmp:
        work = Path(tmp)
        services = ("redis", "mailstore-api", "smtp-in")
        with Stack(work / "stack", services=services, domains="bench.test") as stack:
            users = [f"u{i}" for i in range(50)]
            create_users(stack.api_url, stack.admin_token, users)
            minimal_port = free_port()
            minimal = subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--minimal-server",
                    str(minimal_port),
                    str(work / "mdir"),
                ],
                stdout=subprocess.PIPE,
            )
            assert minimal.stdout is not None
            minimal.stdout.readline()
            try:
                if not args.memory_only:
                    targets = [("smtp-in", stack.smtp_port), ("minimal", minimal_port)]
                    report(measure_points(args, targets, users))
            finally:
                minimal.terminate()
                minimal.wait()

            # Memory: a fresh smtp-in, N clients each sending one 10 MiB message at once.
            port = stack.start_replica("smtp-in")["smtp"]
            replica = next(
                p for n, p in reversed(stack.processes.items()) if n.startswith("smtp-in#")
            )
            assert replica.pid is not None
            idle = vm_rss_kib(replica.pid)
            elapsed = asyncio.run(
                memory_run(port, "bench.test", users, args.big_clients, 10 * 1024 * 1024)
            )
            peak, after = vm_hwm_kib(replica.pid), vm_rss_kib(replica.pid)
            print()
            print(
                f"memory: {args.big_clients} concurrent 10 MiB messages in {elapsed:.1f} s;"
                f" smtp-in RSS idle {idle / 1024:.0f} MiB, peak {peak / 1024:.0f} MiB"
                f" ({(peak - idle) / 1024 / args.big_clients:.1f} MiB per message),"
                f" after {after / 1024:.0f} MiB"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_measure_options(parser)
    parser.add_argument("--big-clients", type=int, default=50)
    parser.add_argument("--memory-only", action="store_true", help="only the 10 MiB memory run")
    parser.add_argument(
        "--minimal-server", nargs=2, metavar=("PORT", "MAILDIR"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.minimal_server:
        minimal_server(int(args.minimal_server[0]), Path(args.minimal_server[1]))
        return
    run(args)


if __name__ == "__main__":
    main()
