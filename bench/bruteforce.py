"""How many POP3 password guesses an attacker gets, with the default settings.

Starts a stack of its own (``mailstack.stack.Stack``, defaults: plain-text passwords refused, so the
guesses go over POP3S as a real attacker's would) and runs four attackers at the same time, each
from its own loopback address so that they do not share the per-address counter:

  serial       one connection, one account, one address: USER/PASS as fast as the server answers
  parallel     --parallel connections (default 50, the default per-address connection limit)
               against one account from one address
  spray        10 connections from one address, a different user name for every guess
  distributed  one connection from each of 20 addresses against one account

and, meanwhile, the owner of the account under distributed attack: logged in once before the attack
from 127.0.1.1 (a network of its own, not the attackers' 127.0.0.0/24), then tries the right
password every 3 s from 10 s into the attack on: is the owner locked out?

A guess "checked" is one whose password was really compared: the reply is ``+OK`` or
``-ERR [AUTH]``; ``-ERR [LOGIN-DELAY]`` means the throttle refused it unchecked.

    uv run python bench/bruteforce.py [--duration 75] [--parallel 50] [--no-align]
"""

from __future__ import annotations

import argparse
import secrets
import socket
import ssl
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from mailstack.stack import Stack
from pop3d.settings import Pop3Settings

HOST = "127.0.0.1"
OWNER_SOURCE = "127.0.1.1"


@dataclass
class Tally:
    name: str
    sources: int
    connections: int
    replies: Counter[str] = field(default_factory=Counter)
    first_checked: float | None = None
    last_checked: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, reply: bytes, now: float) -> None:
        if reply.startswith(b"+OK"):
            kind = "+OK"
        elif b"[AUTH]" in reply:
            kind = "[AUTH]"
        elif b"[LOGIN-DELAY]" in reply:
            kind = "[LOGIN-DELAY]"
        else:
            kind = reply[:40].decode(errors="replace")
        with self.lock:
            self.replies[kind] += 1
            if kind in ("+OK", "[AUTH]"):
                self.first_checked = self.first_checked or now
                self.last_checked = now

    @property
    def checked(self) -> int:
        return self.replies["+OK"] + self.replies["[AUTH]"]


def create_user(stack: Stack, password: str | None = None) -> str:
    name = f"victim{secrets.token_hex(4)}"
    response = httpx.post(
        f"{stack.api_url}/api/v1/users",
        json={"username": name, "password": password or secrets.token_urlsafe(24)},
        headers={"Authorization": f"Bearer {stack.admin_token}"},
        timeout=30,
    )
    response.raise_for_status()
    return name


def attacker(
    *,
    stack: Stack,
    ctx: ssl.SSLContext,
    source: str,
    names: list[str] | None,
    tally: Tally,
    started: float,
    deadline: float,
) -> None:
    """Guess until the deadline on one connection (reconnecting when the server closes it)."""
    while time.monotonic() < deadline:
        try:
            raw = socket.create_connection(
                (HOST, stack.pop3s_port), timeout=30, source_address=(source, 0)
            )
            with ctx.wrap_socket(raw) as sock:
                f = sock.makefile("rb")
                if not f.readline().startswith(b"+OK"):
                    time.sleep(0.5)
                    continue
                while time.monotonic() < deadline:
                    user = names[0] if len(names or []) == 1 else f"spray{secrets.token_hex(4)}"
                    guess = f"guess-{secrets.token_hex(6)}"
                    sock.sendall(f"USER {user}\r\nPASS {guess}\r\n".encode())
                    if not f.readline():
                        break
                    reply = f.readline()
                    if not reply:
                        break
                    tally.add(reply, time.monotonic() - started)
        except (OSError, ssl.SSLError):
            time.sleep(0.2)


@dataclass
class Owner:
    tries: int = 0
    refused: int = 0
    first_in: float | None = None
    replies: Counter[str] = field(default_factory=Counter)


def owner_login(stack: Stack, ctx: ssl.SSLContext, user: str, password: str) -> bytes:
    raw = socket.create_connection(
        (HOST, stack.pop3s_port), timeout=30, source_address=(OWNER_SOURCE, 0)
    )
    with ctx.wrap_socket(raw) as sock:
        f = sock.makefile("rb")
        f.readline()
        sock.sendall(f"USER {user}\r\nPASS {password}\r\nQUIT\r\n".encode())
        f.readline()
        return f.readline()


def owner(
    *,
    stack: Stack,
    ctx: ssl.SSLContext,
    user: str,
    password: str,
    tally: Owner,
    started: float,
    deadline: float,
) -> None:
    """The account's owner, from a network it logged in from before: tries every 3 s."""
    time.sleep(10)
    while time.monotonic() < deadline - 3:
        reply = owner_login(stack, ctx, user, password)
        tally.tries += 1
        if reply.startswith(b"+OK"):
            tally.first_in = tally.first_in or time.monotonic() - started
        else:
            tally.refused += 1
            tally.replies[reply[:20].decode(errors="replace")] += 1
        time.sleep(3)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=75.0, help="seconds (default 75)")
    parser.add_argument("--parallel", type=int, default=50, help="connections (default 50)")
    parser.add_argument(
        "--no-align",
        action="store_true",
        help="start at once, even if the run then straddles a throttle window boundary",
    )
    args = parser.parse_args()

    defaults = Pop3Settings.model_fields
    window = int(defaults["pop3_auth_fail_window"].default)
    per_user = int(defaults["pop3_auth_fail_max_per_user"].default)
    per_ip = int(defaults["pop3_auth_fail_max_per_ip"].default)
    delay = float(defaults["pop3_auth_fail_delay"].default)

    with tempfile.TemporaryDirectory() as tmp, Stack(Path(tmp)) as stack:
        ctx = ssl.create_default_context(cadata=stack.read_secret("tls/cert.pem").decode())
        ctx.check_hostname = False
        plans: list[tuple[Tally, list[tuple[str, list[str] | None]]]] = []
        serial = create_user(stack)
        plans.append((Tally("serial", 1, 1), [("127.0.0.10", [serial])]))
        target = create_user(stack)
        plans.append(
            (
                Tally("parallel", 1, args.parallel),
                [("127.0.0.11", [target])] * args.parallel,
            )
        )
        plans.append((Tally("spray", 1, 10), [("127.0.0.12", None)] * 10))
        owner_password = secrets.token_urlsafe(24)
        spread = create_user(stack, owner_password)
        before = owner_login(stack, ctx, spread, owner_password)
        assert before.startswith(b"+OK"), before
        owner_tally = Owner()
        plans.append(
            (Tally("distributed", 20, 20), [(f"127.0.0.{20 + i}", [spread]) for i in range(20)])
        )

        # The throttle's windows are fixed (epoch time // window): a run that straddles a boundary
        # sees the limits twice. Unless told otherwise, start so that the run fits in one window.
        into = time.time() % window
        if not args.no_align and into + args.duration + 5 > window:
            wait = window - into + 1
            print(f"waiting {wait:.0f} s for the next throttle window", flush=True)
            time.sleep(wait)
        started = time.monotonic()
        deadline = started + args.duration
        threads = [
            threading.Thread(
                target=attacker,
                kwargs={
                    "stack": stack,
                    "ctx": ctx,
                    "source": source,
                    "names": names,
                    "tally": tally,
                    "started": started,
                    "deadline": deadline,
                },
            )
            for tally, connections in plans
            for source, names in connections
        ]
        threads.append(
            threading.Thread(
                target=owner,
                kwargs={
                    "stack": stack,
                    "ctx": ctx,
                    "user": spread,
                    "password": owner_password,
                    "tally": owner_tally,
                    "started": started,
                    "deadline": deadline,
                },
            )
        )
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started

    print(
        f"defaults: {per_user} failures per user name and {per_ip} per address in a "
        f"{window} s fixed window, {delay:g} s delay per failure"
    )
    print(
        f"run: {elapsed:.0f} s, all four attackers at once, POP3S, each from its own addresses"
        + ("" if args.no_align else ", within one throttle window")
    )
    print()
    header = f"{'attacker':<12} {'addresses':>9} {'conns':>5} {'attempts':>8} {'checked':>7} "
    header += f"{'refused':>7} {'checked/min':>11}  first..last checked"
    print(header)
    for tally, _ in plans:
        attempts = sum(tally.replies.values())
        refused = tally.replies["[LOGIN-DELAY]"]
        per_min = tally.checked / elapsed * 60
        span = (
            f"{tally.first_checked:.1f}..{tally.last_checked:.1f} s"
            if tally.first_checked is not None and tally.last_checked is not None
            else "-"
        )
        print(
            f"{tally.name:<12} {tally.sources:>9} {tally.connections:>5} {attempts:>8} "
            f"{tally.checked:>7} {refused:>7} {per_min:>11.1f}  {span}"
        )
        other = {
            k: v for k, v in tally.replies.items() if k not in ("+OK", "[AUTH]", "[LOGIN-DELAY]")
        }
        if other:
            print(f"{'':<12} other replies: {other}")
    first = f"{owner_tally.first_in:.1f} s" if owner_tally.first_in is not None else "never"
    print(
        f"owner of the distributed attack's account, from {OWNER_SOURCE} (logged in before): "
        f"{owner_tally.tries} tries from 10 s on, {owner_tally.refused} refused "
        f"{dict(owner_tally.replies)}, first in at {first}"
    )
    print()
    print(
        f"steady state with the defaults (one window after another): at most {per_user} checked "
        f"guesses per {window} s = {per_user * 60 / window:.1f}/min per account, and "
        f"{per_ip * 60 / window:.1f}/min per address; a fixed window lets a burst of "
        f"2 x the limit straddle a window boundary."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
