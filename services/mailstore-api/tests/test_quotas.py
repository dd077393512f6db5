"""Quotas against the real mailstore: the RCPT answer (507 ``mailbox_full`` once over,
``quota_exceeded`` for a declared size that fits no account), the delivery (507 for a message
that would pass the quota, nothing stored), usage kept on delivery and expunge and repaired from
the files at start-up, the default and per-account quotas, and a retried delivery."""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from mailcommon.locks import MaildropLocks

pytestmark = pytest.mark.timeout(90)


def body(size: int) -> bytes:
    """A message of exactly ``size`` stored octets (LF line ends are stored as they are)."""
    head = b"Subject: q\n\n"
    return head + b"x" * (size - len(head) - 1) + b"\n"


def error(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    return dict(r.json()["error"])


def user(admin: httpx.Client, **quota: int | None) -> str:
    name = f"q{secrets.token_hex(5)}"
    r = admin.post("/users", json={"username": name, "password": "pw", **quota})
    assert r.status_code == 201, r.text
    return str(r.json()["username"])


def deliver(
    internal: httpx.Client, recipients: list[str], data: bytes, key: str | None = None
) -> httpx.Response:
    return internal.post(
        "/deliveries",
        params=[("recipient", x) for x in recipients],
        content=data,
        headers={"Idempotency-Key": key} if key else {},
    )


def used(admin: httpx.Client, address: str) -> tuple[int, int]:
    got = admin.get(f"/users/{address}").json()
    return got["messages"], got["bytes"]


def expunge(store, redis_url: str, address: str, ids: list[str]) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        client = aioredis.Redis.from_url(redis_url)
        locks = MaildropLocks(client)
        lease = await locks.acquire(address, 30_000)
        assert lease is not None
        try:
            with store.internal() as internal:
                lease_body = {"lock_token": lease.token, "fence": lease.fence}
                r = internal.post(f"/mailboxes/{address}/snapshot", json=lease_body)
                assert r.status_code == 200, r.text
                r = internal.post(f"/mailboxes/{address}/expunge", json={**lease_body, "ids": ids})
                assert r.status_code == 200, r.text
                return dict(r.json())
        finally:
            await locks.release(lease)
            await client.aclose()

    return asyncio.run(run())


def test_rcpt_is_507_mailbox_full_once_at_the_quota(mailstore, admin, internal):
    bob = user(admin, quota_bytes=100)
    got = admin.get(f"/users/{bob}").json()
    assert (got["quota_bytes"], got["quota_bytes_default"], got["quota_messages"]) == (
        100,
        False,
        0,
    )
    r = deliver(internal, [bob], body(60))
    assert r.status_code == 201
    assert internal.get(f"/recipients/{bob}").json()["limited"] is True  # not to be reused
    # a declared size: what still fits is 40 octets
    assert internal.get(f"/recipients/{bob}", params={"size": 40}).status_code == 200
    r = internal.get(f"/recipients/{bob}", params={"size": 41})
    refused = error(r, 507)
    assert refused["code"] == "quota_exceeded" and refused["accounts"] == [bob]
    assert error(internal.get(f"/recipients/{bob}", params={"size": "x"}), 422)
    r = deliver(internal, [bob], body(40))  # exactly to the quota: stored, and now full
    assert r.status_code == 201
    assert used(admin, bob) == (2, 100)
    for params in ({}, {"size": 1}):
        refused = error(internal.get(f"/recipients/{bob}", params=params), 507)
        assert refused["code"] == "mailbox_full" and refused["accounts"] == [bob]
    r = deliver(internal, [bob], body(20))
    assert error(r, 507)["code"] == "quota_exceeded"
    assert len(mailstore.files(bob, "new")) == 2


def test_a_message_that_would_pass_the_quota_is_507_and_stored_nowhere(mailstore, admin, internal):
    bob = user(admin, quota_bytes=100)
    assert deliver(internal, [bob], body(60)).status_code == 201
    before = mailstore.files(bob, "new")
    refused = error(deliver(internal, [bob], body(41)), 507)
    assert refused["code"] == "quota_exceeded" and refused["accounts"] == [bob]
    assert mailstore.files(bob, "new") == before
    assert mailstore.files(bob, "tmp") == []
    assert used(admin, bob) == (1, 60)
    # a large one, spilled to tmp/ while it streams, leaves nothing either
    refused = error(deliver(internal, [bob], body(290_000)), 507)
    assert refused["code"] == "quota_exceeded"
    assert mailstore.files(bob, "tmp") == []
    assert deliver(internal, [bob], body(40)).status_code == 201  # what fits still does


def test_a_message_count_quota(admin, internal):
    bob = user(admin, quota_messages=2)
    for _ in range(2):
        assert deliver(internal, [bob], body(30)).status_code == 201
    assert error(internal.get(f"/recipients/{bob}"), 507)["code"] == "mailbox_full"
    assert error(deliver(internal, [bob], body(30)), 507)["code"] == "quota_exceeded"
    assert used(admin, bob) == (2, 60)


def test_recipients_partly_over_quota_are_all_stored(mailstore, admin, internal):
    """The documented choice: one SMTP reply per DATA, so a message that fits at least one
    recipient is stored for every recipient (the full ones are refused at their next RCPT)."""
    roomy = user(admin, quota_bytes=1000)
    tight = user(admin, quota_bytes=100)
    assert deliver(internal, [tight], body(80)).status_code == 201
    r = deliver(internal, [roomy, tight], body(50))
    assert r.status_code == 201, r.text
    assert r.json()["recipients"] == [roomy, tight]
    assert error(internal.get(f"/recipients/{tight}"), 507)["code"] == "mailbox_full"
    assert used(admin, roomy) == (1, 50)
    assert used(admin, tight) == (2, 130)
    assert r.json()["id"] in {p.name for p in mailstore.files(tight, "new")}
    assert error(internal.get(f"/recipients/{tight}"), 507)["code"] == "mailbox_full"
    # fits nobody: refused for all
    refused = error(deliver(internal, [roomy, tight], body(960)), 507)
    assert refused["code"] == "quota_exceeded"
    assert sorted(refused["accounts"]) == sorted([roomy, tight])
    assert used(admin, roomy) == (1, 50)


def test_an_alias_rcpt_is_refused_only_when_no_account_fits(admin, internal):
    full = user(admin, quota_bytes=100)
    small = user(admin, quota_bytes=300)
    domain = full.partition("@")[2]
    team = f"team{secrets.token_hex(4)}@{domain}"
    r = admin.post("/aliases", json={"address": team, "targets": [full, small]})
    assert r.status_code == 201, r.text
    assert deliver(internal, [full], body(100)).status_code == 201
    r = internal.get(f"/recipients/{team}", params={"size": 200})
    assert r.status_code == 200 and r.json()["accounts"] == [full, small]
    refused = error(internal.get(f"/recipients/{team}", params={"size": 301}), 507)
    assert refused["code"] == "quota_exceeded" and refused["accounts"] == [full, small]
    assert deliver(internal, [small], body(300)).status_code == 201
    refused = error(internal.get(f"/recipients/{team}"), 507)
    assert refused["code"] == "mailbox_full"


def test_usage_after_an_expunge_and_an_admin_delete(mailstore, redis_server, admin, internal):
    bob = user(admin, quota_bytes=150)
    ids = [deliver(internal, [bob], body(50)).json()["id"] for _ in range(3)]
    assert used(admin, bob) == (3, 150)
    assert error(internal.get(f"/recipients/{bob}"), 507)["code"] == "mailbox_full"
    done = expunge(mailstore, redis_server.url, bob, ids[:2])
    assert done == {"deleted": ids[:2], "already_gone": []}
    assert used(admin, bob) == (1, 50)
    assert internal.get(f"/recipients/{bob}", params={"size": 100}).status_code == 200
    # an expunge repeated after a lost answer does not count them twice
    assert expunge(mailstore, redis_server.url, bob, ids[:2])["already_gone"] == ids[:2]
    assert used(admin, bob) == (1, 50)
    assert admin.delete(f"/users/{bob}/messages/{ids[2]}").status_code == 204
    assert used(admin, bob) == (0, 0)
    assert deliver(internal, [bob], body(150)).status_code == 201


def test_a_retry_with_the_same_key_after_the_quota_filled_is_answered_as_the_first_time(
    mailstore, admin, internal
):
    bob = user(admin, quota_bytes=100)
    key = f"tx-{secrets.token_hex(6)}"
    first = deliver(internal, [bob], body(100), key)
    assert first.status_code == 201, first.text
    assert error(internal.get(f"/recipients/{bob}"), 507)["code"] == "mailbox_full"
    again = deliver(internal, [bob], body(100), key)  # the sender did not see the first reply
    assert again.status_code == 201, again.text
    assert again.json() == first.json()
    assert [p.name for p in mailstore.files(bob, "new")] == [first.json()["id"]]
    assert used(admin, bob) == (1, 100)  # not counted twice
    # another key is another message: refused
    assert error(deliver(internal, [bob], body(100), key + "-2"), 507)["code"] == "quota_exceeded"


def test_default_quota_and_patch(make_mailstore):
    store = make_mailstore(DEFAULT_QUOTA_BYTES="200")
    store.start()
    with store.admin() as admin, store.internal() as internal:
        bob = user(admin)
        unlimited = user(admin, quota_bytes=0)
        got = admin.get(f"/users/{bob}").json()
        assert (got["quota_bytes"], got["quota_bytes_default"]) == (200, True)
        got = admin.get(f"/users/{unlimited}").json()
        assert (got["quota_bytes"], got["quota_bytes_default"]) == (0, False)
        assert deliver(internal, [bob], body(150)).status_code == 201
        assert error(deliver(internal, [bob], body(100)), 507)["code"] == "quota_exceeded"
        assert deliver(internal, [unlimited], body(250_000)).status_code == 201

        r = admin.patch(f"/users/{bob}", json={"quota_bytes": 300})
        assert r.status_code == 200, r.text
        assert (r.json()["quota_bytes"], r.json()["quota_bytes_default"]) == (300, False)
        assert deliver(internal, [bob], body(100)).status_code == 201  # 250 of 300
        r = admin.patch(f"/users/{bob}", json={"quota_bytes": None})  # back to the default
        assert (r.json()["quota_bytes"], r.json()["quota_bytes_default"]) == (200, True)
        assert error(internal.get(f"/recipients/{bob}"), 507)["code"] == "mailbox_full"
        r = admin.patch(f"/users/{bob}", json={"quota_bytes": 0})  # unlimited
        assert (r.json()["quota_bytes"], r.json()["quota_bytes_default"]) == (0, False)
        assert internal.get(f"/recipients/{bob}").status_code == 200
        r = admin.patch(f"/users/{bob}", json={"quota_messages": 2})  # the bytes stay as set
        assert (r.json()["quota_bytes"], r.json()["quota_messages"]) == (0, 2)
        assert error(internal.get(f"/recipients/{bob}"), 507)["code"] == "mailbox_full"
        for bad in ({"quota_bytes": -1}, {"quota_messages": "many"}):
            assert error(admin.patch(f"/users/{bob}", json=bad), 422)["code"] == "validation_error"
        r = admin.patch("/users/nobody-p", json={"quota_bytes": 1})
        assert error(r, 404)["code"] == "unknown_user"
    store.stop()
    store.start()  # quotas are stored
    with store.admin() as admin:
        got = admin.get(f"/users/{bob}").json()
        assert (got["quota_bytes"], got["quota_messages"], got["messages"]) == (0, 2, 2)


def test_usage_is_repaired_from_the_files_at_start_up(make_mailstore):
    store = make_mailstore()
    store.start()
    with store.admin() as admin, store.internal() as internal:
        bob = user(admin, quota_bytes=2000)
        ids = [deliver(internal, [bob], body(100 + i)).json()["id"] for i in range(3)]
        assert used(admin, bob) == (3, 303)
        # behind the mailstore's back: one message removed, one moved to cur/ with flags, and
        # two put in by another Maildir tool (one named with its sizes, one without)
        (store.maildir(bob) / "new" / ids[0]).unlink()
        (store.maildir(bob) / "new" / ids[1]).rename(store.maildir(bob) / "cur" / f"{ids[1]}:2,S")
        named = "1796000000.000001abcdef0123.other,S=500,W=520"
        (store.maildir(bob) / "cur" / f"{named}:2,S").write_bytes(b"y" * 500)
        (store.maildir(bob) / "new" / "1796000001.M1P1.otherhost").write_bytes(b"z" * 300)
        # usage is kept in memory, not counted per request: unchanged until the next start
        assert used(admin, bob) == (3, 303)
    store.stop()
    store.start()
    with store.admin() as admin, store.internal() as internal:
        assert used(admin, bob) == (4, 101 + 102 + 500 + 300)  # 997 octets left
        assert internal.get(f"/recipients/{bob}", params={"size": 997}).status_code == 200
        refused = error(internal.get(f"/recipients/{bob}", params={"size": 998}), 507)
        assert refused["code"] == "quota_exceeded"
