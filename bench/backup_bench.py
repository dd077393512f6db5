"""Backup throughput: ``mailctl backup -`` (over the REST API) against ``tar`` of the same files.

Builds a volume of about ``--gib`` GiB (default 1) under a throwaway mailstore (redis and
mailstore-api from :class:`mailstack.stack.Stack`): ``--accounts`` accounts made over the admin
API, their Maildirs filled directly with messages of mixed sizes (mostly 2-64 KiB, one in 50 of
1 MiB, random octets so that nothing is cheap to read), then, after one warm-up pass of each (the
page cache holds the volume: both read from memory), ``--rounds`` interleaved rounds of:

- ``tar -C DATA_DIR -cf - users.sqlite3 deliveries.sqlite3 mail`` (GNU tar; no checksums);
- ``mailctl backup -`` (HTTP from the running mailstore: the online copy of the databases, every
  file read and hashed with sha256, the manifest);
- ``mailctl backup --local -`` (the same backup made by mailctl itself from ``DATA_DIR``, beside
  the running mailstore: no HTTP);
- ``backup.write_backup`` in this process into a discarding sink (the same work without HTTP).

Every output goes to the same consumer, which reads 1 MiB at a time and throws it away (``tar
-f /dev/null`` would not read the files at all). Prints MB/s (10^6 octets of output per second of
wall-clock time) per round, the medians, and the ratio to tar.

    flock /tmp/bench.lock uv run python bench/backup_bench.py
"""

from __future__ import annotations

import argparse
import os
import random
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from mailstack.stack import Stack
from mailstore_api.backup import write_backup
from mailstore_api.maildir import MailStore, final_name

CHUNK = 1 << 20


def fill(stack: Stack, accounts: int, total: int) -> tuple[int, int]:
    """Make the accounts and write ``total`` octets of messages; (messages, octets)."""
    with httpx.Client(
        base_url=f"{stack.api_url}/api/v1",
        headers={"Authorization": f"Bearer {stack.admin_token}"},
        timeout=60,
    ) as admin:
        names = [f"bench{n}@pokey.onl" for n in range(accounts)]
        for name in names:
            r = admin.post("/users", json={"username": name, "password": secrets.token_hex(8)})
            r.raise_for_status()
    rng = random.Random(1)
    pool = os.urandom(2 * CHUNK)
    written = count = 0
    while written < total:
        size = CHUNK if count % 50 == 49 else rng.randint(2048, 65536)
        start = rng.randrange(len(pool) - size)
        box = stack.maildir(names[count % accounts])
        name = final_name(f"{1_700_000_000 + count}.{count:06d}0123456789.bench", size, size)
        (box / "new" / name).write_bytes(pool[start : start + size])
        written += size
        count += 1
    return count, written


def drain(command: list[str], env: dict[str, str] | None = None) -> int:
    """Run ``command``, read its stdout to the end; the octets read."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, env=env)
    assert proc.stdout is not None
    octets = 0
    while chunk := proc.stdout.read(CHUNK):
        octets += len(chunk)
    if proc.wait() != 0:
        raise SystemExit(f"{command[0]} failed with {proc.returncode}")
    return octets


class Discard:
    def __init__(self) -> None:
        self.octets = 0

    def write(self, data: bytes) -> int:
        self.octets += len(data)
        return len(data)


def timed(run: Callable[[], int]) -> float:
    """MB/s of one run."""
    start = time.perf_counter()
    octets = run()
    return octets / 1e6 / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gib", type=float, default=1.0)
    parser.add_argument("--accounts", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        stack = Stack(Path(work), ("redis", "mailstore-api"))
        with stack:
            messages, octets = fill(stack, args.accounts, int(args.gib * (1 << 30)))
            print(
                f"volume: {messages} messages, {octets / (1 << 20):.0f} MiB in {args.accounts} accounts"
            )
            env = {**stack.environment(), "ADMIN_TOKEN": stack.admin_token}
            # mailctl's start-up as in the image, which compiles the bytecode at build time: the
            # warm-up run writes it (with PYTHONDONTWRITEBYTECODE set, as on the development
            # machine, every start compiles every module again: about a second).
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            data = str(stack.data_dir)
            files = ["users.sqlite3", "deliveries.sqlite3", "mail"]
            store = MailStore(stack.data_dir / "mail", stack.hostname)

            def in_process() -> int:
                sink = Discard()
                write_backup(stack.data_dir, store, sink)
                return sink.octets

            runs: dict[str, Callable[[], int]] = {
                "tar": lambda: drain(["tar", "-C", data, "-cf", "-", *files]),
                "mailctl backup -": lambda: drain(
                    [sys.executable, "-m", "mailstore_api.cli", "backup", "-"], env
                ),
                "mailctl backup --local -": lambda: drain(
                    [sys.executable, "-m", "mailstore_api.cli", "backup", "--local", "-"], env
                ),
                "write_backup (in process)": in_process,
            }
            for run in runs.values():  # warm-up: the page cache holds the volume after this
                run()
            figures: dict[str, list[float]] = {name: [] for name in runs}
            for n in range(args.rounds):
                for name, run in runs.items():
                    figures[name].append(timed(run))
                    print(f"round {n + 1}: {name:<26} {figures[name][-1]:7.0f} MB/s", flush=True)
            tar = statistics.median(figures["tar"])
            print()
            for name, values in figures.items():
                median = statistics.median(values)
                print(f"median {name:<26} {median:7.0f} MB/s  ({median / tar:.2f}x tar)")


if __name__ == "__main__":
    main()
