"""POP3 benchmark: our stack (redis + mailstore-api + pop3d) against Dovecot, in the same run.

    uv run python bench/pop3_bench.py [--seconds 8] [--concurrency 1,10,50] [--idle 2000]
                                      [--no-dovecot] [--shared DIR]

Dovecot (the peers of ``../shared/peers/peers.sh``, beside the repository; ``--shared DIR`` names
another folder): ``bash ../shared/peers/peers.sh install`` once; this program runs ``peers.sh
start`` itself when 127.0.0.1:2110/2111 are not listening, and stops the Dovecot instances it
started afterwards (default process model on 2110, tuned on 2111).

Fixtures, the same on both sides: u0..u99 with 100 messages of 4 KiB (the bytes of peers'
mkmaildir.py), u100 empty, ``big`` with one 10 MiB message; passwords ``pw<N>`` / ``pwbig``. Ours are
created through the admin and internal APIs; for the idle test u101..u1999 are created empty too
(one maildrop lock per user: a second session for the same user would get [IN-USE]).

Measured, with a small asyncio POP3 client (one command at a time, no pipelining):
- sessions/s and messages/s at each concurrency: login (USER/PASS), STAT, LIST, UIDL, RETR of
  every message, QUIT, once every account has logged in before (steady state); worker k cycles
  over the mailboxes k, k+c, k+2c, ... (never two sessions on one mailbox at once);
- logins/s on empty mailboxes (USER, PASS, QUIT): concurrency 1 on u100, 10 over u100..u199;
  first the first login of each account (its password check), then repeated logins;
- MB/s for RETR of the 10 MiB message (one client);
- memory: RSS sum of redis-server + mailstore-api + pop3d (with children) with N idle logged-in
  sessions, plus the same before they were opened.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import socket
import ssl
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import psutil
from mailstack.stack import Stack

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parent.parent
PEERS_DIR = Path(os.environ.get("PEERS_DIR", "/tmp/peers"))
DOVECOT = {"dovecot default": 2110, "dovecot tuned": 2111}
MiB = 1024 * 1024
FD_LIMIT = 20000


# --- fixtures: the same bytes as peers' mkmaildir.py -----------------------------------------------
def make_message(i: int, size: int, user: str) -> bytes:
    hdr = (
        f"Return-Path: <sender@bench.test>\r\n"
        f"From: Sender <sender@bench.test>\r\n"
        f"To: {user} <{user}@bench.test>\r\n"
        f"Subject: benchmark message {i}\r\n"
        f"Message-ID: <bench-{user}-{i}-{time.time_ns()}@bench.test>\r\n"
        f"Date: Thu, 01 Jan 2025 00:00:00 +0000\r\n"
        f"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
    ).encode()
    body_len = max(0, size - len(hdr))
    line = b"The quick brown fox jumps over the lazy dog 0123456789 abcdefghij\r\n"
    body = (line * (body_len // len(line) + 1))[:body_len]
    if body_len >= 2:
        body = body[:-2] + b"\r\n"
    return (hdr + body).replace(b"\r\n", b"\n")


async def create_fixtures(stack: Stack, idle: int) -> None:
    started = time.monotonic()
    admin = httpx.AsyncClient(
        base_url=f"{stack.api_url}/api/v1",
        headers={"Authorization": f"Bearer {stack.admin_token}"},
        timeout=300,
    )
    internal = httpx.AsyncClient(
        base_url=f"{stack.api_url}/internal/v1",
        headers={"Authorization": f"Bearer {stack.service_token}"},
        timeout=300,
    )
    sem = asyncio.Semaphore(8)

    async def user(name: str, pw: str) -> None:
        async with sem:
            r = await admin.post("/users", json={"username": name, "password": pw})
            if r.status_code not in (201, 409):
                raise RuntimeError(f"create {name}: {r.status_code} {r.text}")

    async def deliver(name: str, data: bytes) -> None:
        async with sem:
            r = await internal.post(
                "/deliveries",
                params={"recipient": name},
                content=data,
                headers={"Content-Type": "message/rfc822"},
            )
            if r.status_code != 201:
                raise RuntimeError(f"deliver to {name}: {r.status_code} {r.text}")

    names = [f"u{i}" for i in range(max(idle, 200))]
    await asyncio.gather(*(user(n, f"pw{n[1:]}") for n in names), user("big", "pwbig"))
    await asyncio.gather(
        *(deliver(f"u{u}", make_message(i, 4096, f"u{u}")) for u in range(100) for i in range(100))
    )
    await deliver("big", make_message(0, 10 * MiB, "big"))
    await admin.aclose()
    await internal.aclose()
    print(
        f"fixtures: {len(names) + 1} users, 10,000 x 4 KiB + 1 x 10 MiB "
        f"in {time.monotonic() - started:.0f} s"
    )


# --- a small asyncio POP3 client ------------------------------------------------------------------
class PopError(Exception):
    pass


class Pop:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, port: int, tls: ssl.SSLContext | None = None) -> Pop:
        """Connected and greeted; over implicit TLS (POP3S) when ``tls`` is given."""
        reader, writer = await asyncio.open_connection(HOST, port, limit=32 * MiB, ssl=tls)
        pop = cls(reader, writer)
        await pop.status()
        return pop

    async def status(self) -> bytes:
        line = await self.reader.readline()
        if not line.startswith(b"+OK"):
            raise PopError(line.decode(errors="replace").strip() or "connection closed")
        return line

    async def cmd(self, line: str) -> bytes:
        self.writer.write(line.encode() + b"\r\n")
        return await self.status()

    async def multi(self, line: str) -> bytes:
        """A multi-line command; returns the body with its terminator."""
        await self.cmd(line)
        first = await self.reader.readexactly(3)
        if first == b".\r\n":
            return first
        return first + await self.reader.readuntil(b"\r\n.\r\n")

    async def login(self, user: str, pw: str) -> None:
        await self.cmd(f"USER {user}")
        await self.cmd(f"PASS {pw}")

    async def quit(self) -> None:
        await self.cmd("QUIT")
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()

    def abort(self) -> None:
        self.writer.close()


def password(user: str) -> str:
    return "pwbig" if user == "big" else f"pw{user[1:]}"


async def full_session(port: int, user: str, tls: ssl.SSLContext | None = None) -> int:
    """login, STAT, LIST, UIDL, RETR all, QUIT; returns the number of messages retrieved."""
    pop = await Pop.connect(port, tls)
    await pop.login(user, password(user))
    count = int((await pop.cmd("STAT")).split()[1])
    await pop.multi("LIST")
    await pop.multi("UIDL")
    for n in range(1, count + 1):
        await pop.multi(f"RETR {n}")
    await pop.quit()
    return count


async def login_session(port: int, user: str) -> int:
    pop = await Pop.connect(port)
    await pop.login(user, password(user))
    await pop.quit()
    return 0


@dataclass
class Rate:
    sessions: int = 0
    messages: int = 0
    errors: int = 0
    seconds: float = 0.0
    last_error: str = ""

    @property
    def per_s(self) -> float:
        return self.sessions / self.seconds if self.seconds else 0.0

    @property
    def msgs_per_s(self) -> float:
        return self.messages / self.seconds if self.seconds else 0.0


async def load(
    port: int,
    users: list[str],
    concurrency: int,
    seconds: float,
    session: Callable[[int, str], Awaitable[int]],
) -> Rate:
    rate = Rate()
    deadline = time.monotonic() + seconds

    async def worker(k: int) -> None:
        mine = users[k::concurrency] or [users[k % len(users)]]
        i = 0
        while time.monotonic() < deadline:
            try:
                retrieved = await session(port, mine[i % len(mine)])
                rate.messages += retrieved  # (not `+= await`: that would lose concurrent updates)
                rate.sessions += 1
            except (PopError, OSError, asyncio.IncompleteReadError) as exc:
                rate.errors += 1
                rate.last_error = str(exc)[:120]
                await asyncio.sleep(0.01)
            i += 1

    started = time.monotonic()
    await asyncio.gather(*(worker(k) for k in range(concurrency)))
    rate.seconds = time.monotonic() - started
    return rate


async def first_logins(port: int, users: list[str], concurrency: int) -> float:
    """Logins/s of one login per account, ``concurrency`` at a time."""
    queue = list(users)
    started = time.monotonic()

    async def worker() -> None:
        while queue:
            await login_session(port, queue.pop())

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(users) / (time.monotonic() - started)


async def throughput(port: int, rounds: int) -> float:
    """MB/s of RETR of the 10 MiB message (login excluded)."""
    total = 0
    elapsed = 0.0
    for _ in range(rounds):
        pop = await Pop.connect(port)
        await pop.login("big", "pwbig")
        started = time.monotonic()
        total += len(await pop.multi("RETR 1"))
        elapsed += time.monotonic() - started
        await pop.quit()
    return total / elapsed / 1e6


def cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    out = {}
    for name, pid in pids.items():
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            out[name] = t.user + t.system
    return out


async def measure(
    name: str, port: int, args: argparse.Namespace, pids: dict[str, int] | None = None
) -> dict[str, float]:
    users = [f"u{i}" for i in range(100)]
    out: dict[str, float] = {}
    await full_session(port, "u0")  # warm-up
    # Steady state, as on a server whose clients poll every few minutes: each account has logged
    # in once already. What that first login costs (argon2id here) is measured apart, below.
    await first_logins(port, users, 10)
    for c in args.concurrency:
        cpu_before = cpu_seconds(pids or {})
        r = await load(port, users, c, args.seconds, full_session)
        if pids:
            cpu = cpu_seconds(pids)
            sessions = max(r.per_s * r.seconds, 1.0)
            used = ", ".join(
                f"{k} {(cpu[k] - cpu_before.get(k, 0)) / r.seconds * 100:.0f}% "
                f"({(cpu[k] - cpu_before.get(k, 0)) / sessions * 1000:.2f} ms/session)"
                for k in cpu
            )
            print(f"  {'':16} CPU while measuring: {used}")
        out[f"sessions/s c={c}"] = r.per_s
        out[f"messages/s c={c}"] = r.msgs_per_s
        err = f"  ({r.errors} errors: {r.last_error})" if r.errors else ""
        print(f"  {name:16} c={c:<3} {r.per_s:8.1f} sessions/s {r.msgs_per_s:9.0f} msgs/s{err}")
    for c, users_ in ((1, ["u100"]), (10, [f"u{i}" for i in range(100, 200)])):
        # Each account's first login pays for its password check (argon2id here); later ones
        # within AUTH_CACHE_TTL do not: a client polling every few minutes. Measured apart.
        first = await first_logins(port, users_, c)
        out[f"first logins/s c={c}"] = first
        print(f"  {name:16} first logins c={c:<3} {first:8.1f}/s (each account once)")
        r = await load(port, users_, c, args.seconds / 2, login_session)
        out[f"logins/s c={c}"] = r.per_s
        err = f"  ({r.errors} errors: {r.last_error})" if r.errors else ""
        print(f"  {name:16} logins c={c:<3} {r.per_s:8.1f}/s{err}")
    out["MB/s 10 MiB RETR"] = await throughput(port, args.big_rounds)
    print(f"  {name:16} 10 MiB RETR {out['MB/s 10 MiB RETR']:8.1f} MB/s")
    return out


# --- memory with idle sessions --------------------------------------------------------------------
def stack_rss(stack: Stack) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for name, proc in stack.processes.items():
        if proc.pid is None:
            continue
        p = psutil.Process(proc.pid)
        sizes[name] = p.memory_info().rss + sum(
            c.memory_info().rss for c in p.children(recursive=True)
        )
    return sizes


async def idle_memory(stack: Stack, n: int) -> tuple[dict[str, int], dict[str, int], int]:
    before = stack_rss(stack)
    sem = asyncio.Semaphore(50)
    opened: list[Pop] = []
    failures = 0

    async def one(i: int) -> None:
        nonlocal failures
        async with sem:
            try:
                pop = await Pop.connect(stack.pop3_port)
                await pop.login(f"u{i}", f"pw{i}")
                opened.append(pop)
            except (PopError, OSError) as exc:
                failures += 1
                if failures < 3:
                    print(f"  idle session u{i}: {exc}")

    await asyncio.gather(*(one(i) for i in range(n)))
    await asyncio.sleep(2)
    during = stack_rss(stack)
    for pop in opened:
        pop.abort()
    await asyncio.sleep(1)
    return before, during, len(opened)


# --- Dovecot --------------------------------------------------------------------------------------
def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((HOST, port)) == 0


def start_dovecot(shared: Path) -> bool:
    """Ensure the peers listen; returns True when this program started Dovecot."""
    if all(port_open(p) for p in DOVECOT.values()):
        return False
    peers = shared / "peers" / "peers.sh"
    if not peers.exists():
        raise RuntimeError(f"{peers} not found (--shared DIR: the folder that holds peers/)")
    # peers.sh start also starts Postfix (and fails at that step when it already runs);
    # the Dovecot instances are up by then.
    subprocess.run(["bash", str(peers), "start"], check=False, capture_output=True)
    for _ in range(50):
        if all(port_open(p) for p in DOVECOT.values()):
            return True
        time.sleep(0.2)
    raise RuntimeError(f"Dovecot did not start (run: bash {peers} install)")


def stop_dovecot() -> None:
    """Stop only the Dovecot instances (Postfix may be in use by the SMTP benchmark)."""
    for name in ("default", "tuned"):
        pidfile = PEERS_DIR / name / "run" / "master.pid"
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pidfile.read_text().strip()), 15)


# --- report ---------------------------------------------------------------------------------------
def report(results: dict[str, dict[str, float]]) -> None:
    ours = results["pop3d"]
    peers = [k for k in results if k != "pop3d"]
    print()
    header = f"{'metric':24} {'pop3d':>10}" + "".join(f" {p:>16} {'ratio':>7}" for p in peers)
    print(header)
    print("-" * len(header))
    for metric, value in ours.items():
        row = f"{metric:24} {value:10.1f}"
        for p in peers:
            theirs = results[p].get(metric, 0.0)
            ratio = value / theirs if theirs else float("nan")
            row += f" {theirs:16.1f} {ratio:7.2f}"
        print(row)


async def main_async(args: argparse.Namespace) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(FD_LIMIT, hard)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    print(f"open files limit {max(soft, want)} (children inherit it)")

    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="pop3bench-") as tmp:
        env = {
            "POP3_ALLOW_PLAINTEXT_AUTH": "true",
            "MAX_CONNECTIONS": str(args.idle + 500),
            "MAX_CONNECTIONS_PER_IP": str(args.idle + 500),
            **dict(kv.split("=", 1) for kv in args.env),
        }
        if args.env:
            print(f"extra environment for the stack: {' '.join(args.env)}")
        with Stack(Path(tmp), services=("redis", "mailstore-api", "pop3"), env=env) as stack:
            await create_fixtures(stack, args.idle)
            print("pop3d (redis + mailstore-api + pop3d, local processes):")
            pids = {k: p.pid for k, p in stack.processes.items() if p.pid is not None}
            results["pop3d"] = await measure("pop3d", stack.pop3_port, args, pids)
            if args.idle:
                before, during, opened = await idle_memory(stack, args.idle)
                total_before, total = sum(before.values()), sum(during.values())
                parts = ", ".join(
                    f"{k} {v / MiB:.0f} (+{(v - before.get(k, 0)) / MiB:.0f})"
                    for k, v in during.items()
                )
                print(
                    f"  memory: {total_before / MiB:.0f} MB before, {total / MiB:.0f} MB with "
                    f"{opened} idle logged-in sessions ({parts} MB); "
                    f"{(total - total_before) / max(opened, 1) / 1024:.1f} KiB per session"
                )
                results["pop3d"][f"RSS MB, {opened} idle"] = total / MiB
    if not args.no_dovecot:
        started = start_dovecot(args.shared)
        try:
            for name, port in DOVECOT.items():
                print(f"{name} (127.0.0.1:{port}):")
                results[name] = await measure(name, port, args)
        finally:
            if started:
                stop_dovecot()
    if len(results) > 1:
        report(results)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--seconds", type=float, default=8.0, help="duration of each rate measurement")
    ap.add_argument(
        "--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 10, 50]
    )
    ap.add_argument("--idle", type=int, default=2000, help="idle logged-in sessions (0: skip)")
    ap.add_argument("--big-rounds", type=int, default=5, help="RETRs of the 10 MiB message")
    ap.add_argument("--no-dovecot", action="store_true")
    ap.add_argument(
        "--shared",
        type=Path,
        default=REPO.parent / "shared",
        help="the shared folder with peers/peers.sh (default: ../shared beside the repository)",
    )
    ap.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra environment for the stack's processes (repeatable)",
    )
    args = ap.parse_args()
    asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
