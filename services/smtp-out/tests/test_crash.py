"""smtp-out SIGKILLed while it delivers 50 queued messages, then started again: every message
arrives, and the only duplicates are messages whose 250 the receiver sent before the kill and
smtp-out had not reported yet (at most one per delivery under way: SMTP_OUT_CONCURRENCY)."""

from __future__ import annotations

import secrets
from collections import Counter

from mailstack.ports import wait_until
from outkit import CONCURRENCY, LEASE, queue_of
from outreceiver import Behaviour

MESSAGES = 50


def test_sigkill_during_delivery_loses_nothing(stack, make_user, remote, internal, admin):
    # Each delivery takes 0.3 s at the receiver, so ten are always under way when the kill comes.
    domain, mx = remote(Behaviour(pause=0.3))
    user, _ = make_user()
    ids = [f"<crash{n}.{secrets.token_hex(4)}@client.test>" for n in range(MESSAGES)]
    for n, message_id in enumerate(ids):
        body = (
            f"From: {user}\r\nTo: r{n}@{domain}\r\nSubject: crash {n}\r\n"
            f"Message-ID: {message_id}\r\n\r\nmessage {n}\r\n"
        ).encode()
        queued = internal.post(
            "/queue",
            params=[("sender", user), ("recipient", f"r{n}@{domain}"), ("account", user)],
            content=body,
            headers={"Content-Type": "message/rfc822"},
        )
        assert queued.status_code == 201, queued.text
    wait_until(lambda: len(mx.received) >= 15, 60, "deliveries under way")
    stack.kill_service("smtp-out")
    # What was being delivered at that moment: the receiver's transactions begun and not
    # reported; bounded by the worker's concurrency.
    at_kill = len(mx.handler.attempts)
    leased = [e for e in admin.get("/queue").json()["entries"] if e["leased_by"]]
    assert len(leased) <= CONCURRENCY
    stack.start_service("smtp-out")
    # The killed worker's leases run out after LEASE seconds, then its entries are sent again.
    wait_until(lambda: not queue_of(admin, user), LEASE + 90, "the queue drained")
    arrived = Counter(got.message_id for got in mx.received)
    assert set(arrived) == set(ids)  # every message arrived
    duplicates = sum(count - 1 for count in arrived.values())
    print(f"in flight at the kill: {len(leased)} leased; duplicates: {duplicates}")
    assert duplicates <= len(leased) <= CONCURRENCY, (duplicates, len(leased), at_kill)
    # A message arrives twice only if its first copy was accepted before the kill.
    assert all(count <= 2 for count in arrived.values())


def test_sigterm_stops_cleanly(stack):
    """SIGTERM: no more claims, the transactions under way finish, exit status 0."""
    assert stack.stop_service("smtp-out", grace=30) == 0
    stack.wait_for_log("smtp-out", {"event": "stopping"})
    stack.start_service("smtp-out")
