"""CPU time per POP3 operation: our stack against Dovecot, with the same client, interleaved.

    uv run python bench/pop3_cpu_vs_dovecot.py [--rounds 3] [--seconds 5] [--shared DIR]

Throughput on a shared 2-core machine moves with whatever else runs (Dovecot's own figures moved
by 2x between rounds of ``side_by_side.py``); the CPU an operation costs moves much less, and
says what each side would serve with the machine to itself. Our side is redis-server +
mailstore-api + pop3d (the kernel's CPU clock of each process, all threads); Dovecot's is every
process of the instance (the master, its live children, and the children it has reaped, from
``/proc``, in clock ticks), default process model on 2110 and tuned on 2111 (the peers of
``../shared/peers/peers.sh``, started here when they are not listening). The client is
``pop3_bench``'s: ``logins`` is USER, PASS, QUIT on u100..u199 (empty), ``sessions`` the session
of 100 x RETR of 4 KiB on u0..u99, both at concurrency 10, after every account logged in once.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from internal_api_bench import process_cpu_clock
from mailstack.stack import Stack
from pop3_bench import (
    DOVECOT,
    PEERS_DIR,
    REPO,
    create_fixtures,
    first_logins,
    full_session,
    load,
    login_session,
    start_dovecot,
    stop_dovecot,
)

TICK = os.sysconf("SC_CLK_TCK")
CASES = {
    "logins": ([f"u{i}" for i in range(100, 200)], login_session),
    "sessions": ([f"u{i}" for i in range(100)], full_session),
}


def dovecot_cpu(name: str) -> float:
    """CPU seconds of a Dovecot instance: its master, with the children it reaped, and the
    children alive now."""
    master = int((PEERS_DIR / name / "run" / "master.pid").read_text())
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
        if int(entry.name) == master:
            total += (utime + stime + cutime + cstime) / TICK
        elif int(fields[1]) == master:
            total += (utime + stime) / TICK
    return total


async def measure(
    targets: dict[str, tuple[int, Callable[[], float]]], args: argparse.Namespace
) -> None:
    for port, _ in targets.values():
        await first_logins(port, [f"u{i}" for i in range(200)], 10)
    for case, (users, session) in CASES.items():
        cpu: dict[str, list[float]] = {t: [] for t in targets}
        rate: dict[str, list[float]] = {t: [] for t in targets}
        for _ in range(args.rounds):
            for name, (port, clock) in targets.items():
                before = clock()
                result = await load(port, users, 10, args.seconds, session)
                cpu[name].append((clock() - before) / max(result.sessions, 1) * 1e6)
                rate[name].append(result.per_s)
        ours = statistics.median(cpu["ours"])
        for name in targets:
            per_op = statistics.median(cpu[name])
            rounds = " ".join(f"{v:.0f}" for v in cpu[name])
            print(
                f"{case:9} {name:8} {per_op:7.0f} µs CPU/{case[:-1]} ({rounds}), "
                f"{statistics.median(rate[name]):6.1f}/s, CPU {name}/ours {per_op / ours:.2f}",
                flush=True,
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per slice")
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared")
    args = parser.parse_args()
    started = start_dovecot(args.shared)
    try:
        with tempfile.TemporaryDirectory(prefix="pop3-cpu-") as tmp:
            env = {"POP3_ALLOW_PLAINTEXT_AUTH": "true", "LOG_LEVEL": "WARNING"}
            with Stack(Path(tmp), services=("redis", "mailstore-api", "pop3"), env=env) as s:
                asyncio.run(create_fixtures(s, 0))
                pids = [p.pid for p in s.processes.values() if p.pid is not None]

                def ours() -> float:
                    return sum(time.clock_gettime(process_cpu_clock(pid)) for pid in pids)

                targets: dict[str, tuple[int, Callable[[], float]]] = {"ours": (s.pop3_port, ours)}
                for label, port in DOVECOT.items():
                    name = label.split()[-1]
                    targets[name] = (port, lambda name=name: dovecot_cpu(name))
                asyncio.run(measure(targets, args))
    finally:
        if started:
            stop_dovecot()


if __name__ == "__main__":
    main()
