"""Two replicas of smtp-in and of pop3 behind HAProxy against one replica without it, same run.

    flock /tmp/bench.lock uv run python bench/replicas_bench.py [--seconds 9] [--rounds 3]
                                                                [--concurrency 1,10,50]

One stack (redis, mailstore-api, one smtp-in, one pop3: the direct targets) plus two more
smtp-in and two more pop3 processes with ``PROXY_PROTOCOL=true`` behind Debian's HAProxy running
``deploy/haproxy.cfg`` (``mailstack.haproxy``). Measured, interleaved so that other load on the
machine falls on both alike:

- SMTP: 4 KiB messages, each client holding one connection (``smtp_bench.load``), accepted
  messages/s and latency from MAIL FROM to the 250;
- POP3: logins/s (USER, PASS, QUIT, one connection each: the proxy hop on every connect),
  and full sessions/s (login, STAT, LIST, UIDL, RETR of 10 messages of 4 KiB, QUIT), after a
  warm-up in which every account has logged in on every replica (the login cache is warm).

At concurrency 1 the difference in latency is the cost of the proxy hop (two more loopback
connections, HAProxy's and the header); at higher concurrency the replicas share the same two
cores with the mailstore and HAProxy, so what they can add is bounded by the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

import httpx
from mailstack.haproxy import Balancer
from mailstack.stack import Stack

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pop3_bench import full_session, login_session
from pop3_bench import load as pop3_load
from smtp_bench import add_measure_options, create_users, measure_points

REPO = Path(__file__).resolve().parent.parent
BEHIND = {"PROXY_PROTOCOL": "true", "PROXY_TRUSTED_NETWORKS": "127.0.0.1/32"}
POP3_USERS = [f"u{i}" for i in range(100)]


def pop3_fixtures(stack: Stack) -> None:
    """u0..u99 (passwords pw<N>, as pop3_bench's client logs in) with 10 messages of 4 KiB."""
    admin = {"Authorization": f"Bearer {stack.admin_token}"}
    internal = {"Authorization": f"Bearer {stack.service_token}", "Content-Type": "message/rfc822"}
    body = b"Subject: bench\r\n\r\n" + (b"x" * 76 + b"\r\n") * 52
    with httpx.Client(base_url=stack.api_url, timeout=60) as http:
        for user in POP3_USERS:
            http.post(
                "/api/v1/users", json={"username": user, "password": f"pw{user[1:]}"}, headers=admin
            ).raise_for_status()
            for _ in range(10):
                http.post(
                    "/internal/v1/deliveries",
                    params={"recipient": user},
                    content=body,
                    headers=internal,
                ).raise_for_status()


def pop3_points(args: argparse.Namespace, targets: list[tuple[str, int]]) -> None:
    # Warm-up: every account's first login (its password check) on every replica, not counted.
    for _, port in targets:
        asyncio.run(pop3_load(port, POP3_USERS, 10, 3.0, login_session))
    for kind, session in (("logins", login_session), ("sessions", full_session)):
        for c in [int(c) for c in args.concurrency.split(",")]:
            totals = {name: [0, 0.0, 0] for name, _ in targets}
            for _ in range(args.rounds):
                for name, port in targets:
                    rate = asyncio.run(
                        pop3_load(port, POP3_USERS, c, args.seconds / args.rounds, session)
                    )
                    totals[name][0] += rate.sessions
                    totals[name][1] += rate.seconds
                    totals[name][2] += rate.errors
            for name, (count, seconds, errors) in totals.items():
                per_s = count / seconds
                print(
                    f"pop3 {kind:8} {name:10} c={c:<3} {per_s:8.1f}/s"
                    f"  {1000 * c / per_s:6.1f} ms each  errors {errors}",
                    flush=True,
                )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_measure_options(parser)
    args = parser.parse_args()
    args.no_postfix = True
    with tempfile.TemporaryDirectory(prefix="replicas-bench-") as tmp:
        work = Path(tmp)
        env = {"POP3_ALLOW_PLAINTEXT_AUTH": "true"}
        with Stack(work / "stack", domains="bench.test", env=env) as stack:
            ports: dict[str, list[int]] = {"smtp-in": [], "pop3": [], "pop3s": []}
            for _ in range(2):
                ports["smtp-in"].append(stack.start_replica("smtp-in", BEHIND)["smtp"])
                replica = stack.start_replica("pop3", BEHIND)
                ports["pop3"].append(replica["pop3"])
                ports["pop3s"].append(replica["pop3s"])
            balancer = Balancer(work, REPO / "deploy" / "haproxy.cfg", ports)
            try:
                for backend in ports:
                    for i in (1, 2):
                        balancer.wait_for(f"{backend}/{backend}{i}", "UP")
                users = [f"s{i}" for i in range(50)]
                create_users(stack.api_url, stack.admin_token, users)
                pop3_fixtures(stack)
                time.sleep(1)
                print("smtp: direct = one smtp-in; haproxy+2 = HAProxy in front of two")
                measure_points(
                    args,
                    [("direct", stack.smtp_port), ("haproxy+2", balancer.ports["smtp"])],
                    users,
                )
                print("pop3: direct = one pop3; haproxy+2 = HAProxy in front of two")
                pop3_points(
                    args, [("direct", stack.pop3_port), ("haproxy+2", balancer.ports["pop3"])]
                )
            finally:
                balancer.stop()


if __name__ == "__main__":
    main()
