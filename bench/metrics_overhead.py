"""What metrics cost smtp-in: this checkout's smtp-in (metrics counted, ``/metrics`` served and
scraped every second) against a checkout from before them, in front of one mailstore.

    git archive <commit before metrics> | tar -x -C /tmp/maildrop-base
    (cd /tmp/maildrop-base && uv sync --all-packages --frozen)
    flock /tmp/bench.lock uv run python bench/metrics_overhead.py --baseline /tmp/maildrop-base

The clients of ``smtp_bench.load`` send 4 KiB messages to one smtp-in, then the other,
interleaved in rounds (each first in every other round); the figures are the median throughput
and the CPU time (user + system) each smtp-in process spent per message, which depends less on
what else the machine runs. ``--baseline .`` (this checkout against itself) shows the noise.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from mailstack.ports import free_port, greets, scrape, wait_until
from mailstack.stack import Stack
from smtp_bench import create_users, load
from smtp_loop_cpu import cpu_seconds

HOST = "127.0.0.1"


def start_smtp_in(
    stack: Stack, python: str, log: Path, metrics_port: int = 0
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    env = {
        **stack.environment(),
        "SMTP_BIND_PORT": str(port),
        "METRICS_PORT": str(metrics_port),
        "LOG_LEVEL": "WARNING",
    }
    proc = subprocess.Popen(
        [python, "-m", "smtp_in"], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
    )
    wait_until(lambda: greets(HOST, port), 20, "smtp-in")
    return proc, port


def scraping(url: str, stop: threading.Event) -> threading.Thread:
    """A Prometheus stand-in: one scrape a second until ``stop``."""

    def run() -> None:
        while not stop.wait(1.0):
            scrape(url)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def run(args: argparse.Namespace) -> None:
    baseline_python = str(args.baseline / ".venv" / "bin" / "python")
    with tempfile.TemporaryDirectory(prefix="metrics-bench-") as tmp:
        work = Path(tmp)
        with Stack(work / "stack", services=("redis", "mailstore-api"), domains="bench.test") as s:
            users = [f"u{i}" for i in range(50)]
            create_users(s.api_url, s.admin_token, users)
            metrics_port = free_port()
            servers = {
                "metrics": start_smtp_in(s, sys.executable, work / "metrics.log", metrics_port),
                "before": start_smtp_in(s, baseline_python, work / "before.log"),
            }
            stop = threading.Event()
            scraper = scraping(f"http://{HOST}:{metrics_port}/metrics", stop)
            try:
                for concurrency in [int(c) for c in args.concurrency.split(",")]:
                    per_message: dict[str, list[float]] = {name: [] for name in servers}
                    rates: dict[str, list[float]] = {name: [] for name in servers}
                    for round_ in range(args.rounds):
                        # Each goes first in every other round: neither gets the quieter slot.
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
                        line.append(f"{name} {cpu:6.0f} µs CPU/msg ({rate:6.1f} msg/s)")
                    throughput = statistics.median(rates["metrics"]) / statistics.median(
                        rates["before"]
                    )
                    cpu_ratio = statistics.median(per_message["metrics"]) / statistics.median(
                        per_message["before"]
                    )
                    line.append(f"metrics/before: throughput {throughput:.3f}, CPU {cpu_ratio:.3f}")
                    print("  ".join(line), flush=True)
            finally:
                stop.set()
                scraper.join(5)
                for proc, _ in servers.values():
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--baseline", type=Path, required=True, help="a checkout from before metrics, synced"
    )
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per slice")
    parser.add_argument("--rounds", type=int, default=4, help="interleaved slices per server")
    parser.add_argument("--concurrency", default="1,10,50")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
