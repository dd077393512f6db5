"""pop3d's CPU per operation on uvloop and on asyncio's own loop, against one mailstore.

    uv run python bench/pop3_loop_cpu.py [--seconds 6] [--rounds 3] [--cases sessions1,...]

Two pop3d processes (``POP3_UVLOOP=true`` and ``false``) in front of the same redis-server and
mailstore-api, with the fixtures of ``pop3_bench`` (u0..u99 with 100 messages of 4 KiB, u100..u199
empty, ``big`` with one 10 MiB message). Every account logs in once on each pop3d first (steady
state: the password checks are cached). Then each case runs on one pop3d, then the other, in
interleaved rounds (the order flips every round). The figure is the CPU time (the kernel's CPU
clock of the process, as in ``internal_api_bench``) the pop3d process spent per operation: unlike the throughput it hardly depends on what
else the machine runs. Cases:

- ``sessions1``, ``sessions10``, ``sessions50``: the session of ``pop3_bench.full_session``
  (USER, PASS, STAT, LIST, UIDL, 100 x RETR of 4 KiB, QUIT: 106 commands) at that concurrency;
- ``tls10``: the same over implicit TLS (POP3S), concurrency 10;
- ``logins10``: USER, PASS, QUIT on the empty mailboxes, concurrency 10;
- ``retr10m``: RETR of the 10 MiB message, one client (per MiB sent).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from internal_api_bench import process_cpu_clock
from mailstack.ports import free_port, greets, wait_until
from mailstack.stack import Stack
from pop3_bench import (
    MiB,
    create_fixtures,
    first_logins,
    full_session,
    load,
    login_session,
    throughput,
)

HOST = "127.0.0.1"
LOOPS = ("uvloop", "asyncio")
FULL = [f"u{i}" for i in range(100)]
EMPTY = [f"u{i}" for i in range(100, 200)]
ALL_CASES = "sessions1,sessions10,sessions50,tls10,logins10,retr10m"


@dataclass
class Pop3d:
    popen: subprocess.Popen[bytes]
    port: int
    pop3s_port: int

    def cpu_seconds(self) -> float:
        """CPU time of the process so far, all threads, in nanoseconds' precision."""
        return time.clock_gettime(process_cpu_clock(self.popen.pid))


def start_pop3d(stack: Stack, uvloop: bool, log: Path) -> Pop3d:
    port, pop3s_port = free_port(), free_port()
    env = {
        **stack.environment(),
        "POP3_BIND_PORT": str(port),
        "POP3S_BIND_PORT": str(pop3s_port),
        "POP3_ALLOW_PLAINTEXT_AUTH": "true",
        "POP3_UVLOOP": str(uvloop).lower(),
        "LOG_LEVEL": "WARNING",
    }
    popen = subprocess.Popen(
        [sys.executable, "-m", "pop3d"], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    wait_until(lambda: greets(HOST, port), 20, "pop3d")
    return Pop3d(popen, port, pop3s_port)


#: One slice of a case: (operations done, seconds) on the given pop3d.
Slice = Callable[[Pop3d], Awaitable[tuple[float, float]]]


def cases(seconds: float, tls: ssl.SSLContext) -> dict[str, tuple[str, Slice]]:
    """Each case: the unit of its figure, and how to run one slice of it."""

    def sessions(concurrency: int, secure: bool) -> Slice:
        async def run(p: Pop3d) -> tuple[float, float]:
            port, session = p.port, full_session
            if secure:
                port, session = p.pop3s_port, functools.partial(full_session, tls=tls)
            rate = await load(port, FULL, concurrency, seconds, session)
            if rate.errors:
                print(f"    {rate.errors} errors: {rate.last_error}", flush=True)
            return rate.sessions, rate.seconds

        return run

    async def logins(p: Pop3d) -> tuple[float, float]:
        rate = await load(p.port, EMPTY, 10, seconds, login_session)
        return rate.sessions, rate.seconds

    async def big(p: Pop3d) -> tuple[float, float]:
        rounds = 5
        mb_per_s = await throughput(p.port, rounds)
        return rounds * 10.0, rounds * 10 * MiB / 1e6 / mb_per_s

    return {
        "sessions1": ("session", sessions(1, False)),
        "sessions10": ("session", sessions(10, False)),
        "sessions50": ("session", sessions(50, False)),
        "tls10": ("session", sessions(10, True)),
        "logins10": ("login", logins),
        "retr10m": ("MiB", big),
    }


async def measure(servers: dict[str, Pop3d], args: argparse.Namespace, tls: ssl.SSLContext) -> None:
    for p in servers.values():  # steady state: every account has logged in once
        await first_logins(p.port, FULL + EMPTY, 10)
        await full_session(p.port, "u0")
    table = cases(args.seconds, tls)
    for name in args.cases.split(","):
        unit, run = table[name]
        cpu: dict[str, list[float]] = {loop: [] for loop in servers}
        rate: dict[str, list[float]] = {loop: [] for loop in servers}
        for round_ in range(args.rounds):
            order = list(servers) if round_ % 2 == 0 else list(reversed(servers))
            for loop in order:
                p = servers[loop]
                before = p.cpu_seconds()
                done, seconds = await run(p)
                spent = p.cpu_seconds() - before
                cpu[loop].append(spent / max(done, 1) * 1e6)
                rate[loop].append(done / seconds)
        line = [f"{name:10}"]
        for loop in servers:
            per_op, per_s = statistics.median(cpu[loop]), statistics.median(rate[loop])
            line.append(f"{loop} {per_op:7.0f} µs CPU/{unit} ({per_s:7.1f} {unit}/s)")
        ratio = statistics.median(cpu["asyncio"]) / statistics.median(cpu["uvloop"])
        line.append(f"asyncio/uvloop CPU {ratio:.2f}")
        rounds = "; ".join(f"{loop} " + " ".join(f"{v:.0f}" for v in cpu[loop]) for loop in servers)
        print("  ".join(line) + f"   [per round: {rounds}]", flush=True)


def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="pop3-loop-") as tmp:
        work = Path(tmp)
        with Stack(work / "stack", services=("redis", "mailstore-api")) as s:
            asyncio.run(create_fixtures(s, 0))
            servers = {
                loop: start_pop3d(s, loop == "uvloop", work / f"{loop}.log") for loop in LOOPS
            }
            try:
                # The certificate the first pop3d generated (CN of MAIL_HOSTNAME).
                tls = ssl.create_default_context(cadata=s.read_secret("tls/cert.pem").decode())
                tls.check_hostname = False  # 127.0.0.1; the chain itself is verified
                asyncio.run(measure(servers, args, tls))
            finally:
                for p in servers.values():
                    p.popen.send_signal(signal.SIGTERM)
                    p.popen.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=6.0, help="measured seconds per slice")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved slices per loop")
    parser.add_argument("--cases", default=ALL_CASES, help=f"comma-separated, of {ALL_CASES}")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
