"""CPU time per message of each process on the delivery path, for the checkout that runs it.

    uv run python bench/delivery_cpu.py [--seconds 10] [--rounds 3] [--concurrency 10]

Redis, mailstore-api and smtp-in of this checkout (``sys.executable``'s environment), the
clients of ``smtp_bench.load`` sending 4 KiB messages to 50 accounts; per round, the CPU time
(user + system, psutil) of mailstore-api and smtp-in per message accepted, and the rate. To
compare two commits, run it with each checkout's interpreter, alternately (e.g.
``/tmp/base/.venv/bin/python bench/delivery_cpu.py``): the CPU per message depends less on what
else the machine runs than the rate does.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
from pathlib import Path

from mailstack.stack import Stack
from smtp_bench import create_users, load
from smtp_cpu import cpu_seconds

SERVICES = ("mailstore-api", "smtp-in")


def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="delivery-cpu-") as tmp:
        env = {"LOG_LEVEL": "WARNING", "AUTH_CHECKS": "false"}
        with Stack(Path(tmp), services=("redis", *SERVICES), domains="bench.test", env=env) as s:
            users = [f"u{i}" for i in range(50)]
            create_users(s.api_url, s.admin_token, users)
            pids: dict[str, int] = {}
            for name in SERVICES:
                pid = s.processes[name].pid
                assert pid is not None
                pids[name] = pid
            figures: dict[str, list[float]] = {name: [] for name in (*SERVICES, "rate")}
            for _ in range(args.rounds):
                before = {name: cpu_seconds(pid) for name, pid in pids.items()}
                result = asyncio.run(
                    load(
                        "ours",
                        port=s.smtp_port,
                        domain="bench.test",
                        users=users,
                        concurrency=args.concurrency,
                        seconds=args.seconds,
                    )
                )
                for name, pid in pids.items():
                    spent = cpu_seconds(pid) - before[name]
                    figures[name].append(spent / result.sent_total * 1e6)
                figures["rate"].append(result.rate)
            print(
                f"concurrency {args.concurrency}: "
                + "  ".join(f"{n} {statistics.median(figures[n]):.0f} µs/msg" for n in SERVICES)
                + f"  {statistics.median(figures['rate']):.0f} msg/s"
                + f"  (rounds: {', '.join(f'{r:.0f}' for r in figures['rate'])} msg/s)",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=10)
    run(parser.parse_args())


if __name__ == "__main__":
    main()
