"""smtp-in's CPU per message on uvloop and on asyncio's own loop, against one mailstore.

    uv run python bench/smtp_loop_cpu.py [--seconds 8] [--rounds 4] [--concurrency 1,10,50]

Two smtp-in processes (``SMTP_UVLOOP=true`` and ``false``) in front of the same mailstore-api;
the clients of ``smtp_bench.load`` send 4 KiB messages to one, then the other, interleaved in
rounds. The figure is the CPU time (user + system, psutil) the smtp-in process spent per message
accepted, warm-up included: unlike the throughput it hardly depends on what else the machine runs.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil
from mailstack.ports import free_port, greets, wait_until
from mailstack.stack import Stack
from smtp_bench import create_users, load

HOST = "127.0.0.1"


def start_smtp_in(stack: Stack, uvloop: bool, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {
        **stack.environment(),
        "SMTP_BIND_PORT": str(port),
        "SMTP_UVLOOP": str(uvloop).lower(),
        "LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "smtp_in"], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    wait_until(lambda: greets(HOST, port), 20, "smtp-in")
    return proc, port


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="smtp-loop-") as tmp:
        work = Path(tmp)
        with Stack(work / "stack", services=("redis", "mailstore-api"), domains="bench.test") as s:
            users = [f"u{i}" for i in range(50)]
            create_users(s.api_url, s.admin_token, users)
            servers = {
                name: start_smtp_in(s, name == "uvloop", work / f"{name}.log")
                for name in ("uvloop", "asyncio")
            }
            try:
                for concurrency in [int(c) for c in args.concurrency.split(",")]:
                    per_message: dict[str, list[float]] = {name: [] for name in servers}
                    rates: dict[str, list[float]] = {name: [] for name in servers}
                    for _ in range(args.rounds):
                        for name, (proc, port) in servers.items():
                            before = cpu_seconds(proc.pid)
                            result = asyncio.run(
                                load(
                                    name,
                                    port=port,
                                    domain="bench.test",
                                    users=users,
                                    concurrency=concurrency,
                                    seconds=args.seconds,
                                )
                            )
                            spent = cpu_seconds(proc.pid) - before
                            per_message[name].append(spent / result.sent_total * 1e6)
                            rates[name].append(result.rate)
                    line = [f"concurrency {concurrency:>2}:"]
                    for name in servers:
                        cpu = statistics.median(per_message[name])
                        rate = statistics.median(rates[name])
                        line.append(f"{name} {cpu:6.0f} µs CPU/msg ({rate:6.0f} msg/s)")
                    ratio = statistics.median(per_message["asyncio"]) / statistics.median(
                        per_message["uvloop"]
                    )
                    line.append(f"asyncio/uvloop CPU {ratio:.2f}")
                    print("  ".join(line), flush=True)
            finally:
                for proc, _ in servers.values():
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per slice")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved slices per loop")
    parser.add_argument("--concurrency", default="1,10,50")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
