"""smtp-in's CPU per message on uvloop and on asyncio's own loop, against one mailstore.

    uv run python bench/smtp_loop_cpu.py [--seconds 8] [--rounds 4] [--concurrency 1,10,50]

Two smtp-in processes (``SMTP_UVLOOP=true`` and ``false``) in front of the same mailstore-api,
compared by ``smtp_cpu``: the CPU time each spent per message accepted, warm-up included.
"""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
from pathlib import Path

from mailstack.stack import Stack
from smtp_bench import create_users
from smtp_cpu import compare, line, start_smtp_in


def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="smtp-loop-") as tmp:
        work = Path(tmp)
        with Stack(work / "stack", services=("redis", "mailstore-api"), domains="bench.test") as s:
            users = [f"u{i}" for i in range(50)]
            create_users(s.api_url, s.admin_token, users)
            servers = {
                name: start_smtp_in(
                    s, sys.executable, work / f"{name}.log", {"SMTP_UVLOOP": str(uvloop).lower()}
                )
                for name, uvloop in (("uvloop", True), ("asyncio", False))
            }
            try:
                for concurrency in [int(c) for c in args.concurrency.split(",")]:
                    figures = compare(servers, users, concurrency, args.rounds, args.seconds)
                    ratio = figures["asyncio"].cpu_us / figures["uvloop"].cpu_us
                    print(
                        f"{line(concurrency, figures)}  asyncio/uvloop CPU {ratio:.2f}", flush=True
                    )
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
