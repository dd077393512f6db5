"""Container memory of the compose stack under load: what docker-compose.yml's ``mem_limit``s are from.

    uv run python bench/compose_memory.py [--smtp-seconds 20] [--big 50] [--idle 2000] [--retr 4]

Starts the real compose stack (``mailstack.compose.ComposeStack``: a throwaway project built from
this checkout, on free loopback ports, ``down -v`` at the end) with every memory limit lifted, and
follows ``docker stats`` (its MEM USAGE: the container's memory less inactive page cache) while it:

1. rests after start;
2. 50 SMTP clients send 4 KiB messages for ``--smtp-seconds``;
3. ``--big`` SMTP clients each send one 10 MiB message at once, no SIZE declared (at the
   default SMTP_DATA_MEMORY_BUDGET of 1 GiB the budget admits about ten of them at a time; the
   wait for room is raised to 300 s so that all get through on a busy machine);
4. ``--idle`` POP3 sessions log in and stay idle, then ``--retr`` other clients RETR one 10 MiB
   message each.

Prints each container's peak in each phase, then ``docker stats --no-stream`` once all is done.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
from mailstack.compose import ComposeStack

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from pop3_bench import Pop, PopError  # noqa: E402 - the benches' own clients
from smtp_bench import Client, load, make_body  # noqa: E402

REPO = BENCH.parent
DOMAIN = "example.test"
MiB = 1024 * 1024
UNITS = {"B": 1, "KiB": 1024, "MiB": MiB, "GiB": 1024 * MiB, "kB": 1000, "MB": 10**6, "GB": 10**9}
FD_LIMIT = 20000


def mem_bytes(usage: str) -> int:
    """``"123.4MiB / 23.5GiB"`` (docker stats' MEM USAGE column) in bytes, the first figure."""
    match = re.match(r"([\d.]+)\s*([A-Za-z]+)", usage)
    if not match:
        return 0
    return int(float(match.group(1)) * UNITS.get(match.group(2), 1))


class Peaks:
    """Follows ``docker stats`` for the project's containers; the peak per phase and container."""

    def __init__(self, project: str) -> None:
        self.project = project
        self.phase = "start"
        self.peaks: dict[str, dict[str, int]] = {}
        self.proc = subprocess.Popen(
            ["docker", "stats", "--format", "{{.Name}}\t{{.MemUsage}}"],
            stdout=subprocess.PIPE,
            text=True,
        )
        threading.Thread(target=self._follow, daemon=True).start()

    def _follow(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", raw).strip()
            name, _, usage = line.partition("\t")
            if not name.startswith(f"{self.project}-"):
                continue
            service = re.sub(r"-\d+$", "", name.removeprefix(f"{self.project}-"))
            phase = self.peaks.setdefault(self.phase, {})
            phase[service] = max(phase.get(service, 0), mem_bytes(usage))

    def enter(self, phase: str) -> None:
        time.sleep(2.5)  # a sample or two of the phase before
        self.phase = phase

    def stop(self) -> None:
        time.sleep(2.5)
        self.proc.terminate()
        self.proc.wait()


def create_users(stack: ComposeStack, names: list[str]) -> None:
    with httpx.Client(
        base_url=f"{stack.api_url}/api/v1",
        headers={"Authorization": f"Bearer {stack.admin_token}"},
        timeout=120,
    ) as admin:
        for name in names:
            r = admin.post("/users", json={"username": name, "password": f"pw-{name}"})
            if r.status_code not in (201, 409):
                raise RuntimeError(f"create {name}: {r.status_code} {r.text}")


async def big_messages(port: int, users: list[str], n: int) -> tuple[float, int]:
    """``n`` clients each send one 10 MiB message at once; seconds taken and how many got 250."""
    body = make_body(10 * MiB, "big")
    clients = [await Client.connect(port) for _ in range(n)]
    started = time.monotonic()
    sent = await asyncio.gather(
        *(
            c.send("bench@bench.client", f"{users[i % len(users)]}@{DOMAIN}", body)
            for i, c in enumerate(clients)
        ),
        return_exceptions=True,
    )
    took = time.monotonic() - started
    for c in clients:
        await c.close()
    return took, sum(1 for code in sent if code == 250)


async def idle_and_retr(port: int, idle: list[str], retr: list[str]) -> int:
    """Log ``idle`` in and keep them; then RETR the last message of each of ``retr``."""
    sem = asyncio.Semaphore(50)
    opened: list[Pop] = []

    async def one(user: str) -> None:
        async with sem:
            try:
                pop = await Pop.connect(port)
                await pop.login(user, f"pw-{user}")
                opened.append(pop)
            except (PopError, OSError) as exc:
                print(f"  idle session {user}: {exc}")

    async def retrieve(user: str) -> None:
        pop = await Pop.connect(port)
        await pop.login(user, f"pw-{user}")
        count = int((await pop.cmd("STAT")).split()[1])
        await pop.multi(f"RETR {count}")  # the 10 MiB message, delivered last
        await pop.quit()

    await asyncio.gather(*(one(u) for u in idle))
    await asyncio.sleep(3)
    await asyncio.gather(*(retrieve(u) for u in retr))
    await asyncio.sleep(3)
    for pop in opened:
        pop.abort()
    return len(opened)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--smtp-seconds", type=float, default=20.0)
    ap.add_argument("--big", type=int, default=50, help="concurrent 10 MiB SMTP messages")
    ap.add_argument("--idle", type=int, default=2000, help="idle logged-in POP3 sessions")
    ap.add_argument("--retr", type=int, default=4, help="concurrent RETRs of a 10 MiB message")
    args = ap.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(FD_LIMIT, hard), hard))

    unlimited = {f"{s}_MEM_LIMIT": "16g" for s in ("REDIS", "MAILSTORE", "SMTP", "POP3")}
    env = {
        **unlimited,
        "POP3_MAX_CONNECTIONS": str(args.idle + 500),
        "POP3_MAX_CONNECTIONS_PER_IP": str(args.idle + 500),
        "SMTP_MAX_CONNECTIONS_PER_IP": str(max(args.big, 50) + 10),
        # The budget admits about ten 10 MiB messages at a time; on a busy machine the last of
        # them wait longer than the default 30 s for room (and would get 421).
        "SMTP_DATA_BUDGET_WAIT": "300",
    }
    senders = [f"b{i}" for i in range(max(args.big, 50))]
    sessions = [f"i{i}" for i in range(args.idle)]
    with ComposeStack(REPO, env=env) as stack:
        peaks = Peaks(stack.project)
        try:
            started = time.monotonic()
            create_users(stack, senders + sessions)
            print(f"{len(senders) + len(sessions)} users in {time.monotonic() - started:.0f} s")
            peaks.enter("smtp 4 KiB x50")
            result = asyncio.run(
                load(
                    "smtp-in",
                    port=stack.smtp_port,
                    domain=DOMAIN,
                    users=senders,
                    concurrency=50,
                    seconds=args.smtp_seconds,
                )
            )
            print(f"smtp: {result.messages} x 4 KiB at c=50, {result.rate:.0f}/s")
            peaks.enter(f"smtp 10 MiB x{args.big}")
            took, accepted = asyncio.run(big_messages(stack.smtp_port, senders, args.big))
            print(f"smtp: {args.big} x 10 MiB at once, {accepted} accepted in {took:.1f} s")
            peaks.enter(f"pop3 {args.idle} idle + {args.retr} RETR 10 MiB")
            opened = asyncio.run(idle_and_retr(stack.pop3_port, sessions, senders[: args.retr]))
            print(f"pop3: {opened} idle sessions held, {args.retr} x RETR 10 MiB")
            peaks.enter("after")
        finally:
            peaks.stop()
        print()
        services = ("redis", "mailstore-api", "smtp-in", "pop3")
        print(f"{'phase (peak MiB)':40}" + "".join(f"{s:>15}" for s in services))
        for phase, sizes in peaks.peaks.items():
            print(f"{phase:40}" + "".join(f"{sizes.get(s, 0) / MiB:>15.0f}" for s in services))
        print()
        print(
            subprocess.run(
                ["docker", "stats", "--no-stream", "--format", "{{.Name}}\t{{.MemUsage}}"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout
        )


if __name__ == "__main__":
    main()
