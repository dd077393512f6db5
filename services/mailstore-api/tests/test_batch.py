"""The batch read (``POST /internal/v1/mailboxes/{u}/messages/batch``) and the snapshot's stored
sizes, over real HTTP against the real service, through the raw API and MailstoreClient."""

from __future__ import annotations

import asyncio
import os

import httpx
import pytest
import redis.asyncio as aioredis
from mailcommon.client import (
    BATCH_MAX_IDS,
    MailstoreClient,
    MessageTooLarge,
    NotFound,
)
from mailcommon.locks import MaildropLocks

pytestmark = pytest.mark.timeout(60)


def deliver(internal: httpx.Client, user: str, body: bytes) -> str:
    r = internal.post("/deliveries", params={"recipient": user}, content=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def stored(mailstore, user: str, message_id: str) -> bytes:
    for sub in ("new", "cur"):
        for path in mailstore.files(user, sub):
            if path.name.split(":2,")[0] == message_id:
                return bytes(path.read_bytes())
    raise AssertionError(message_id)


def bodies(n: int) -> list[bytes]:
    """Messages of different sizes and shapes (CRLF, dots, no final newline, binary)."""
    out = []
    for i in range(n):
        text = b"Subject: m%d\r\n\r\n" % i + (b".dot line\r\n" + os.urandom(i * 37)) * (i % 4)
        out.append(text if i % 3 else text.rstrip(b"\r\n"))
    return out


def test_batch_returns_the_stored_bytes_in_order(mailstore, internal, new_user):
    user, _ = new_user()
    ids = [deliver(internal, user, b) for b in bodies(7)]
    order = [ids[3], ids[0], ids[6], ids[1], ids[1]]  # any order, repeats allowed
    r = internal.post(f"/mailboxes/{user}/messages/batch", json={"ids": order})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/octet-stream"
    sizes = [int(v) for v in r.headers["x-message-sizes"].split(",")]
    expected = [stored(mailstore, user, i) for i in order]
    assert sizes == [len(e) for e in expected]
    assert r.content == b"".join(expected)
    assert int(r.headers["content-length"]) == len(r.content)


def test_batch_is_404_when_any_id_is_gone(mailstore, internal, new_user):
    user, _ = new_user()
    ids = [deliver(internal, user, b) for b in bodies(3)]
    # deleted behind our back (another Maildir tool): the whole batch is refused
    next(p for p in mailstore.files(user, "new") if p.name.startswith(ids[1])).unlink()
    r = internal.post(f"/mailboxes/{user}/messages/batch", json={"ids": ids})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "unknown_message"
    for bad in ("1.123456abcdef0123.gone,S=1,W=2", "../../users.sqlite3", ""):
        r = internal.post(f"/mailboxes/{user}/messages/batch", json={"ids": [ids[0], bad]})
        assert r.status_code == 404, bad
        assert r.json()["error"]["code"] == "unknown_message"
    odd = "1.123456abcdef0123.dir,S=1,W=2"
    (mailstore.maildir(user) / "new" / odd).mkdir()  # a directory is not a message
    r = internal.post(f"/mailboxes/{user}/messages/batch", json={"ids": [ids[0], odd]})
    assert r.status_code == 404
    r = internal.post("/mailboxes/nobody-z/messages/batch", json={"ids": [ids[0]]})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "unknown_user"
    # a message moved to cur/ with flags is still found
    path = next(p for p in mailstore.files(user, "new") if p.name.startswith(ids[0]))
    path.rename(mailstore.maildir(user) / "cur" / (ids[0] + ":2,S"))
    r = internal.post(f"/mailboxes/{user}/messages/batch", json={"ids": [ids[0], ids[2]]})
    assert r.status_code == 200
    assert r.content == stored(mailstore, user, ids[0]) + stored(mailstore, user, ids[2])


def test_batch_limits(mailstore, internal, new_user):
    user, _ = new_user()
    small = deliver(internal, user, b"Subject: s\n\nsmall\n")
    big = deliver(internal, user, b"Subject: b\n\n" + b"x" * (280 * 1024))
    r = internal.post(f"/mailboxes/{user}/messages/batch", json={"ids": [big, small, big, big]})
    assert r.status_code == 200  # 840 KiB: within 1 MiB
    r = internal.post(f"/mailboxes/{user}/messages/batch", json={"ids": [big] * 4})
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "batch_too_large"
    r = internal.post(
        f"/mailboxes/{user}/messages/batch", json={"ids": [small] * (BATCH_MAX_IDS + 1)}
    )
    assert r.status_code == 422
    r = internal.post(f"/mailboxes/{user}/messages/batch", json={"ids": []})
    assert r.status_code == 422
    r = internal.post(f"/mailboxes/{user}/messages/batch", json={"ids": [small] * BATCH_MAX_IDS})
    assert r.status_code == 200
    assert r.content == stored(mailstore, user, small) * BATCH_MAX_IDS
    # the service token only
    r = httpx.post(
        f"{mailstore.url}/internal/v1/mailboxes/{user}/messages/batch",
        json={"ids": [small]},
        headers={"Authorization": f"Bearer {mailstore.admin_token}"},
    )
    assert r.status_code == 401


def test_client_fetch_batch_and_stored_size(mailstore, redis_server, new_user, internal):
    user, _ = new_user()
    ids = [deliver(internal, user, b) for b in bodies(5)]

    async def run() -> None:
        client = MailstoreClient(mailstore.url, mailstore.service_token)
        redis = aioredis.Redis.from_url(redis_server.url)
        locks = MaildropLocks(redis)
        try:
            lease = await locks.acquire(mailstore.address(user), 30_000)
            assert lease is not None
            snap = (await client.snapshot(user, lease.token, lease.fence)).entries
            await locks.release(lease)
            assert [e.id for e in snap] == ids
            got = await client.fetch_batch(user, ids)
            for entry, data in zip(snap, got, strict=True):
                assert data == stored(mailstore, user, entry.id)
                assert entry.stored_size == len(data)  # S
                assert entry.size == len(data) + data.count(b"\n")  # W, unchanged
            assert await client.fetch_batch(user, ids[2:3]) == got[2:3]
            with pytest.raises(NotFound):
                await client.fetch_batch(user, [ids[0], "1.123456abcdef0123.gone,S=1,W=2"])
            big = deliver(internal, user, b"Subject: b\n\n" + b"y" * (280 * 1024))
            with pytest.raises(MessageTooLarge):
                await client.fetch_batch(user, [big] * 4)
        finally:
            await client.aclose()
            await redis.aclose()

    asyncio.run(run())
