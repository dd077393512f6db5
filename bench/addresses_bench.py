"""RCPT lookups with many accounts and aliases: SMTP end to end, and the mailstore's answer.

    uv run python bench/addresses_bench.py [--accounts 10000] [--aliases 10000] [--rounds 3]

Two stacks run side by side: "small" with 100 accounts, "large" with ``--accounts`` accounts and
``--aliases`` aliases (each to 1-3 random accounts). Both are seeded straight into their data
directories before they start (accounts through the mailstore's own :class:`Database` schema,
one argon2 hash shared by all: hashing 10,000 passwords over REST would take minutes and is not
what is measured). Then, rounds interleaved:

- SMTP: ``smtp_bench.load`` at concurrency 10, 4 KiB messages, each to the next of 100 (small)
  or of every account and alias (large) in a shuffled order; the figure is messages per second
  and the ratio large / small.
- The mailstore's RCPT answer: ``GET /internal/v1/recipients/{address}`` for random addresses
  (accounts, aliases, unknown names) on one keep-alive connection; p50 and p99 in ms, as this
  client saw them (round trip) and as the mailstore's access log line says (``ms``: from the
  request's arrival to its last octet sent, the smtp-in's lookups during the load included).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
from argon2 import PasswordHasher
from mailstack.stack import Stack
from mailstore_api.db import Database
from mailstore_api.migrations import Context

sys.path.insert(0, str(Path(__file__).parent))
from smtp_bench import load

DOMAIN = "bench.test"


def seed(data_dir: Path, accounts: int, aliases: int) -> list[str]:
    """Accounts ``a0..`` and aliases ``l0..`` in ``data_dir``; every local part, shuffled."""
    now = "2026-01-01T00:00:00+00:00"
    Database(data_dir / "users.sqlite3", Context(DOMAIN, now)).close()  # the schema
    password_hash = PasswordHasher().hash("benchmark-pw")
    names = [f"a{i}" for i in range(accounts)]
    rng = random.Random(1)
    with sqlite3.connect(data_dir / "users.sqlite3") as conn:
        conn.executemany(
            "INSERT INTO accounts (address, domain, password_hash, created_at) VALUES (?, ?, ?, ?)",
            [(f"{n}@{DOMAIN}", DOMAIN, password_hash, now) for n in names],
        )
        conn.executemany(
            "INSERT INTO aliases (address, domain, created_at) VALUES (?, ?, ?)",
            [(f"l{i}@{DOMAIN}", DOMAIN, now) for i in range(aliases)],
        )
        conn.executemany(
            "INSERT INTO alias_targets (alias, target, position) VALUES (?, ?, ?)",
            [
                (f"l{i}@{DOMAIN}", f"{target}@{DOMAIN}", pos)
                for i in range(aliases)
                for pos, target in enumerate(rng.sample(names, rng.randint(1, 3)))
            ],
        )
    for name in names:
        for sub in ("tmp", "new", "cur"):
            (data_dir / "mail" / DOMAIN / name / sub).mkdir(parents=True)
    local_parts = names + [f"l{i}" for i in range(aliases)]
    rng.shuffle(local_parts)
    return local_parts


def rcpt_latencies(stack: Stack, local_parts: list[str], calls: int) -> list[float]:
    rng = random.Random(2)
    out: list[float] = []
    with httpx.Client(
        base_url=f"{stack.api_url}/internal/v1",
        headers={"Authorization": f"Bearer {stack.service_token}"},
    ) as http:
        for i in range(calls):
            name = rng.choice(local_parts) if i % 10 else f"nobody{i}"
            started = time.perf_counter()
            r = http.get(f"/recipients/{name}@{DOMAIN}")
            out.append(time.perf_counter() - started)
            assert r.status_code in (200, 404), r.text
    return out


def served_ms(stack: Stack) -> list[float]:
    """The time of every recipient lookup in the mailstore's access log, in seconds."""
    out = []
    for line in stack.logs("mailstore-api").splitlines():
        if '"/internal/v1/recipients/' in line:
            out.append(float(json.loads(line)["ms"]) / 1000)
    return out


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1000


def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="addresses-bench-") as tmp:
        work = Path(tmp)
        stacks = {name: Stack(work / name, domains=DOMAIN) for name in ("small", "large")}
        names = {
            "small": seed(stacks["small"].data_dir, 100, 0),
            "large": seed(stacks["large"].data_dir, args.accounts, args.aliases),
        }
        for stack in stacks.values():
            stack.start()
        try:
            rates: dict[str, list[float]] = {"small": [], "large": []}
            latencies: dict[str, list[float]] = {"small": [], "large": []}
            for _ in range(args.rounds):
                for name, stack in stacks.items():
                    result = asyncio.run(
                        load(
                            name,
                            port=stack.smtp_port,
                            domain=DOMAIN,
                            users=names[name],
                            concurrency=10,
                            seconds=args.seconds,
                        )
                    )
                    rates[name].append(result.rate)
                    latencies[name] += rcpt_latencies(stack, names[name], args.calls)
            served = {name: served_ms(stack) for name, stack in stacks.items()}
        finally:
            for stack in stacks.values():
                stack.stop()
    print(f"SMTP 4 KiB, concurrency 10, {args.rounds} rounds of {args.seconds} s (msg/s):")
    for name in ("small", "large"):
        print(
            f"  {name:<6} {' '.join(f'{r:.0f}' for r in rates[name])}"
            f"  median {statistics.median(rates[name]):.0f}"
        )
    ratio = statistics.median(rates["large"]) / statistics.median(rates["small"])
    print(f"  large / small: {ratio:.2f}")
    print("mailstore RCPT answer (GET /internal/v1/recipients/..., ms):")
    for name in ("small", "large"):
        values = latencies[name]
        log = served[name]
        print(
            f"  {name:<6} round trip p50 {pct(values, 0.5):.2f}  p99 {pct(values, 0.99):.2f}"
            f"  ({len(values)} calls);  served p50 {pct(log, 0.5):.2f}  p99 {pct(log, 0.99):.2f}"
            f"  ({len(log)} calls)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--accounts", type=int, default=10_000)
    parser.add_argument("--aliases", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--calls", type=int, default=2000, help="RCPT lookups per round")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
