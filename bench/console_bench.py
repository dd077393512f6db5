"""The web console with a big mailbox: the first page of the list, a search and a 5 MB message.

Starts Redis and the mailstore (tools/mailstack), creates one account, stops the mailstore and
fills the account's Maildir directly on disk with ``--messages`` small messages (names as the
mailstore writes them, received times spread over the last year) and one 5 MB HTML message, starts
it again, waits until the search index has every message, then times each request ``--requests``
times with httpx (one keep-alive connection, one request at a time) and prints p50/p95/max:

- ``console list``: ``GET /ui/accounts/<user>/messages`` (page 0, the newest 50);
- ``REST list``: ``GET /api/v1/users/<user>/messages?limit=50`` (the oldest 50: the REST order);
- ``REST list, last page``: the newest 50 through REST (``offset`` = total - 50);
- ``console search (rare|common)``: ``q=`` a word in 1 % of the messages / in all of them;
- ``REST search``: the same rare word through REST;
- ``console message 5 MB`` / ``its frame`` / ``REST message 5 MB``: the view, the sandboxed
  HTML document, the parsed message as JSON.

The goal (issue 16): list and search under 100 ms at p95, the 5 MB message under 500 ms.

    uv run python bench/console_bench.py [--messages 100000] [--requests 50] [--dir /var/tmp]
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import socket
import tempfile
import time
from email.message import EmailMessage
from pathlib import Path

import httpx
from mailstack.stack import Stack

USER = "big"
DOMAIN = "pokey.onl"
RARE = "zebrafish"  # in every 100th message
COMMON = "quarterly"  # in every message
WORDS = [
    *("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india"),
    *("juliet", "kilo", "lima", "mike", "november", "oscar", "papa", "quebec", "romeo"),
    *("sierra", "tango", "uniform", "victor", "whiskey", "xray", "yankee", "zulu"),
    *("invoice", "meeting", "schedule", "report", "budget", "travel", "project", "review"),
]


def message_bytes(number: int) -> bytes:
    """A small plain-text message (about 600 octets), LF line ends as stored."""
    words = " ".join(WORDS[(number * 7 + k) % len(WORDS)] for k in range(40))
    extra = f" {RARE}" if number % 100 == 0 else ""
    return (
        f"Return-Path: <sender{number % 500}@example.org>\n"
        f"Authentication-Results: mail.pokey.onl; spf=pass smtp.mailfrom=example.org\n"
        f"From: Sender {number % 500} <sender{number % 500}@example.org>\n"
        f"To: {USER}@{DOMAIN}\n"
        f"Subject: {COMMON} report number {number}{extra}\n"
        f"Date: Wed, 02 Dec 2026 10:00:00 +0000\n"
        f"Message-ID: <{number}.bench@example.org>\n"
        f"MIME-Version: 1.0\n"
        f"Content-Type: text/plain; charset=utf-8\n\n"
        f"Hello, this is message {number}.\n{words}{extra}\n"
    ).encode()


def big_message() -> bytes:
    """A 5 MB message: an HTML body of paragraphs (a newsletter's worst case)."""
    msg = EmailMessage()
    msg["From"] = "newsletter@example.org"
    msg["To"] = f"{USER}@{DOMAIN}"
    msg["Subject"] = "a 5 MB newsletter"
    paragraph = "<p>Dear reader, <b>this</b> is a <a href='https://example.org/x'>link</a>.</p>\n"
    msg.set_content(
        "<html><body>" + paragraph * (5_000_000 // len(paragraph)) + "</body></html>",
        subtype="html",
    )
    return msg.as_bytes().replace(b"\r\n", b"\n")


def write(new: Path, host: str, data: bytes, received: float) -> str:
    """Store ``data`` as the mailstore names it (time, random, host, sizes); its message id."""
    secs, usecs = divmod(round(received * 1_000_000), 1_000_000)
    crlf = len(data) + data.count(b"\n")
    name = f"{secs}.{usecs:06d}{secrets.randbits(40):010x}.{host},S={len(data)},W={crlf}"
    path = new / name
    path.write_bytes(data)
    os.utime(path, (received, received))
    return name


def fill(maildir: Path, count: int) -> str:
    """``count`` small messages over the past year and the 5 MB one, the newest; its id."""
    new = maildir / "new"
    host = socket.gethostname().split(".")[0][:16]
    now = time.time()
    step = 365 * 86400 / count
    for number in range(count):
        write(new, host, message_bytes(number), now - 365 * 86400 + number * step)
    return write(new, host, big_message(), now - 60)


def timed(client: httpx.Client, url: str, requests: int) -> list[float]:
    client.get(url).raise_for_status()  # warm-up, not counted
    times = []
    for _ in range(requests):
        t0 = time.perf_counter()
        r = client.get(url)
        times.append(time.perf_counter() - t0)
        r.raise_for_status()
    return times


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def wait_indexed(api: httpx.Client, expected: int, timeout: float) -> float:
    """Seconds until a search for the word every message has finds all of them."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        r = api.get(f"/users/{USER}/messages", params={"q": COMMON, "limit": 1})
        if r.status_code == 200 and r.json()["total"] >= expected:
            return time.monotonic() - start
        time.sleep(1)
    raise SystemExit(f"the search index did not catch up in {timeout:g} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=50, help="timed requests of each kind")
    parser.add_argument("--dir", type=Path, default=None, help="where to put the data")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="console-bench-", dir=args.dir))
    stack = Stack(work, services=("redis", "mailstore-api"), env={"LOG_LEVEL": "WARNING"})
    try:
        stack.start()
        admin = httpx.Client(
            base_url=stack.api_url + "/api/v1",
            headers={"Authorization": f"Bearer {stack.admin_token}"},
            timeout=60,
        )
        admin.post("/users", json={"username": USER, "password": "x" * 12}).raise_for_status()
        stack.stop_service("mailstore-api")
        t0 = time.monotonic()
        big = fill(stack.maildir(USER), args.messages)
        print(f"wrote {args.messages} messages + one of 5 MB in {time.monotonic() - t0:.1f} s")
        t0 = time.monotonic()
        stack.start_service("mailstore-api")
        print(f"mailstore ready in {time.monotonic() - t0:.1f} s", end="; ")
        print(f"search index complete {wait_indexed(admin, args.messages, 1800):.1f} s later")

        console = httpx.Client(base_url=stack.api_url, timeout=60)
        r = console.post("/ui/signin", data={"password": stack.admin_token})
        assert r.status_code == 303, r.text
        total = args.messages + 1
        box = f"/ui/accounts/{USER}/messages"
        rest = f"{stack.api_url}/api/v1/users/{USER}/messages"
        cases = [
            ("console list, first page", console, box),
            ("REST list, first page", admin, f"{rest}?limit=50"),
            ("REST list, newest page", admin, f"{rest}?limit=50&offset={total - 50}"),
            ("console search, rare word", console, f"{box}?q={RARE}"),
            ("console search, every message", console, f"{box}?q={COMMON}"),
            ("REST search, rare word", admin, f"{rest}?q={RARE}&limit=50"),
            ("console message 5 MB", console, f"{box}/{big}"),
            ("console message 5 MB, HTML frame", console, f"{box}/{big}/frame"),
            ("REST message 5 MB", admin, f"{rest}/{big}"),
        ]
        print(f"{total} messages, {args.requests} requests each, load {os.getloadavg()}")
        print("| request | p50 ms | p95 ms | max ms |\n|---|---|---|---|")
        for name, client, url in cases:
            times = timed(client, url, args.requests)
            print(
                f"| {name} | {percentile(times, 0.5) * 1000:.1f} "
                f"| {percentile(times, 0.95) * 1000:.1f} | {max(times) * 1000:.1f} |"
            )
        print(f"load after: {os.getloadavg()}")
        index = sum(p.stat().st_size for p in stack.data_dir.glob("search.sqlite3*"))
        mail = sum(p.stat().st_size for p in (stack.maildir(USER) / "new").iterdir())
        print(f"index {index / 2**20:.1f} MiB (with its WAL) for {mail / 2**20:.1f} MiB of mail")
    finally:
        stack.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
