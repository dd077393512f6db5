"""What metrics cost smtp-in: this checkout's smtp-in (metrics counted, ``/metrics`` served and
scraped every second) against a checkout from before them, in front of one mailstore.

    git archive <commit before metrics> | tar -x -C /tmp/maildrop-base
    (cd /tmp/maildrop-base && uv sync --all-packages --frozen)
    flock /tmp/bench.lock uv run python bench/metrics_overhead.py --baseline /tmp/maildrop-base

Compared by ``smtp_cpu``: the median throughput and the CPU time each smtp-in process spent per
message. ``--baseline .`` (this checkout against itself) shows the noise.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import threading
from pathlib import Path

from mailstack.ports import free_port, scrape
from mailstack.stack import Stack
from smtp_bench import create_users
from smtp_cpu import compare, line, start_smtp_in

HOST = "127.0.0.1"


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
                "metrics": start_smtp_in(
                    s, sys.executable, work / "metrics.log", {"METRICS_PORT": str(metrics_port)}
                ),
                "before": start_smtp_in(
                    s, baseline_python, work / "before.log", {"METRICS_PORT": "0"}
                ),
            }
            stop = threading.Event()
            scraper = scraping(f"http://{HOST}:{metrics_port}/metrics", stop)
            try:
                for concurrency in [int(c) for c in args.concurrency.split(",")]:
                    figures = compare(servers, users, concurrency, args.rounds, args.seconds)
                    throughput = figures["metrics"].rate / figures["before"].rate
                    cpu_ratio = figures["metrics"].cpu_us / figures["before"].cpu_us
                    print(
                        f"{line(concurrency, figures)}  metrics/before: throughput"
                        f" {throughput:.3f}, CPU {cpu_ratio:.3f}",
                        flush=True,
                    )
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
