"""Two or more smtp-in processes in front of one mailstore, compared by the CPU time each spends
per message: what ``smtp_loop_cpu.py`` and ``metrics_overhead.py`` share.

The clients of ``smtp_bench.load`` send 4 KiB messages to one smtp-in, then the next, in rounds
(the order reversed every other round, so none gets the quieter slot). The CPU time (user +
system, psutil) a process spent per message accepted depends less on what else the machine runs
than its throughput does.
"""

from __future__ import annotations

import asyncio
import statistics
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psutil
from mailstack.ports import free_port, greets, wait_until
from mailstack.stack import Stack
from smtp_bench import load

HOST = "127.0.0.1"
#: A running smtp-in and its SMTP port.
Server = tuple[subprocess.Popen[bytes], int]


@dataclass(frozen=True)
class Figures:
    cpu_us: float  # median CPU µs per message
    rate: float  # median messages per second


def start_smtp_in(stack: Stack, python: str, log: Path, env: dict[str, str]) -> Server:
    """smtp-in run by ``python`` (a checkout's interpreter) with ``env`` over the stack's."""
    port = free_port()
    environment = {
        **stack.environment(),
        "SMTP_BIND_PORT": str(port),
        "LOG_LEVEL": "WARNING",
        **env,
    }
    proc = subprocess.Popen(
        [python, "-m", "smtp_in"], env=environment, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    wait_until(lambda: greets(HOST, port), 20, "smtp-in")
    return proc, port


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def compare(
    servers: dict[str, Server], users: list[str], concurrency: int, rounds: int, seconds: float
) -> dict[str, Figures]:
    """The median CPU per message and rate of each server over ``rounds`` interleaved slices."""
    per_message: dict[str, list[float]] = {name: [] for name in servers}
    rates: dict[str, list[float]] = {name: [] for name in servers}
    for round_ in range(rounds):
        order = list(servers.items())[:: 1 if round_ % 2 == 0 else -1]
        for name, (proc, port) in order:
            before = cpu_seconds(proc.pid)
            result = asyncio.run(
                load(
                    name,
                    port=port,
                    domain="bench.test",
                    users=users,
                    concurrency=concurrency,
                    seconds=seconds,
                )
            )
            per_message[name].append((cpu_seconds(proc.pid) - before) / result.sent_total * 1e6)
            rates[name].append(result.rate)
    return {
        name: Figures(statistics.median(per_message[name]), statistics.median(rates[name]))
        for name in servers
    }


def line(concurrency: int, figures: dict[str, Figures]) -> str:
    """One printed line: each server's CPU per message and rate."""
    parts = [f"concurrency {concurrency:>2}:"]
    parts += [f"{n} {f.cpu_us:6.0f} µs CPU/msg ({f.rate:6.1f} msg/s)" for n, f in figures.items()]
    return "  ".join(parts)
