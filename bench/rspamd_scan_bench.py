"""Time of one ``smtp_in.rspamd.Rspamd.scan`` of a 4 KiB message against a real local rspamd.

Starts rspamd with ``mailstack.rspamd`` (the tests' configuration: Debian's stock rules, no DNS,
no Redis), scans ``--scans`` times one after the other over one scanner (after ``--warmup``
scans), and prints the median, 10th and 90th percentile wall-clock time per scan, and the
resident memory of rspamd's processes. Run it alone: ``flock /tmp/bench.lock``.

    flock /tmp/bench.lock uv run python bench/rspamd_scan_bench.py [--scans 200]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from mailstack.rspamd import Rspamd as RspamdServer
from smtp_in.rspamd import Rspamd

HEAD = (
    b"Authentication-Results: mx.pokey.onl; spf=pass smtp.mailfrom=alice@sender.example\r\n"
    b"Date: Wed, 02 Dec 2026 06:00:00 +0000\r\n"
    b"Message-ID: <bench.1@sender.example>\r\n"
    b"From: Alice <alice@sender.example>\r\n"
    b"To: Bob <bob@pokey.onl>\r\n"
    b"Subject: the quarterly figures\r\n"
    b"\r\n"
)


def four_kib() -> bytes:
    line = b"Revenue went up in the north and down in the south, as expected.\r\n"
    body = line * ((4096 - len(HEAD)) // len(line) + 1)
    return (HEAD + body)[:4096]


async def measure(url: str, scans: int, warmup: int) -> list[float]:
    scanner = Rspamd(url, mta_name="mx.pokey.onl")
    message = four_kib()
    times: list[float] = []
    try:
        for i in range(warmup + scans):
            start = time.perf_counter()
            verdict = await scanner.scan(
                message,
                ip="192.0.2.77",
                helo="mail.sender.example",
                mail_from="alice@sender.example",
                recipients=["bob@pokey.onl"],
                queue_id=f"{i:016x}",
            )
            elapsed = time.perf_counter() - start
            assert verdict.reachable, verdict
            if i >= warmup:
                times.append(elapsed)
    finally:
        await scanner.aclose()
    return times


def rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` and its children (rspamd's workers), MiB, from /proc."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    total_kib = 0
    for process in [str(pid), *children]:
        for line in Path(f"/proc/{process}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total_kib += int(line.split()[1])
    return total_kib / 1024


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scans", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    args = parser.parse_args()
    with RspamdServer(Path(tempfile.mkdtemp(prefix="rspamd-bench-"))) as server:
        times = asyncio.run(measure(server.url, args.scans, args.warmup))
        assert server.pid is not None
        memory = rss_mib(server.pid)
    deciles = statistics.quantiles(times, n=10)
    print(
        f"{len(times)} scans of {len(four_kib())} octets: median {statistics.median(times) * 1000:.2f} ms, "
        f"p10 {deciles[0] * 1000:.2f} ms, p90 {deciles[-1] * 1000:.2f} ms; rspamd RSS {memory:.0f} MiB"
    )


if __name__ == "__main__":
    main()
