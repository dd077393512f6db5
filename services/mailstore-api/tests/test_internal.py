"""The internal API (front ends -> mailstore) over real HTTP against the real service."""

from __future__ import annotations

import asyncio
import hashlib
import os

import httpx
import pytest
import redis.asyncio as aioredis
from mailcommon.client import LockConflict, MailstoreClient, NotFound
from mailcommon.locks import MaildropLocks
from mailstore_api.db import DATABASE_FILE, Database
from mailstore_api.migrations import Context

pytestmark = pytest.mark.timeout(60)

MESSAGE = (
    b"From: alice@example.org\r\nTo: bob@example.org\r\nSubject: hi\r\n\r\nline one\r\n.dot\r\n"
)


def deliver(internal: httpx.Client, recipients: list[str], body: bytes) -> httpx.Response:
    return internal.post("/deliveries", params=[("recipient", r) for r in recipients], content=body)


# -- authentication ------------------------------------------------------------------------------


def test_missing_wrong_or_admin_token_is_401_without_detail(mailstore, new_user):
    user, password = new_user()
    body = {"username": user, "password": password}
    for headers in (
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": f"Bearer {mailstore.admin_token}"},
        {"Authorization": mailstore.service_token},
    ):
        r = httpx.post(f"{mailstore.url}/internal/v1/auth", json=body, headers=headers)
        assert r.status_code == 401
        assert r.json() == {
            "error": {"code": "unauthorized", "message": r.json()["error"]["message"]}
        }
        assert set(r.json()["error"]) == {"code", "message"}
    # unknown paths under the prefix reveal nothing either
    r = httpx.get(f"{mailstore.url}/internal/v1/no-such-thing")
    assert r.status_code == 401


def test_auth_valid_invalid_unknown_and_case(mailstore, internal, new_user):
    user, password = new_user()
    account = mailstore.address(user)
    first = internal.post("/auth", json={"username": user, "password": password}).json()
    tag = first["credential_tag"]
    assert first == {"valid": True, "username": account, "credential_tag": tag}
    assert isinstance(tag, str) and len(tag) == 32
    # cached path and the case-insensitive name give the canonical address (and the same tag)
    for name in (user.upper(), account, account.upper()):
        r = internal.post("/auth", json={"username": name, "password": password})
        assert r.json() == {"valid": True, "username": account, "credential_tag": tag}
    for name, pw in (
        (user, password + "x"),
        (user, ""),
        ("nobody-here", password),
        ("../x", "a"),
        (f"{user}@other.example", password),  # the same local part in another domain: nobody
        (f"{user}@elsewhere.example", password),  # not a domain of this server
    ):
        r = internal.post("/auth", json={"username": name, "password": pw})
        assert r.status_code == 200
        assert r.json() == {"valid": False, "username": None, "credential_tag": None}


def test_auth_body_validation_is_422_json(internal):
    r = internal.post("/auth", json={"username": "bob"})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "validation_error"
    r = internal.post("/auth", content=b"{not json", headers={"Content-Type": "application/json"})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "validation_error"


def test_password_change_drops_the_cached_login(admin, internal, new_user):
    user, password = new_user()
    before = internal.post("/auth", json={"username": user, "password": password}).json()
    assert before["valid"]
    assert admin.put(f"/users/{user}/password", json={"password": "new-pass-1"}).status_code == 204
    assert not internal.post("/auth", json={"username": user, "password": password}).json()["valid"]
    after = internal.post("/auth", json={"username": user, "password": "new-pass-1"}).json()
    assert after["valid"]
    # the credential tag tells a front end that remembered the old password
    assert after["credential_tag"] != before["credential_tag"]


def test_apop_is_invalid_when_disabled(admin, internal, new_user):
    user, _ = new_user()
    assert admin.put(f"/users/{user}/apop-secret", json={"secret": "tanstaaf"}).status_code == 204
    stamp = "<1896.697170952@dbc.mtview.ca.us>"
    digest = hashlib.md5((stamp + "tanstaaf").encode()).hexdigest()
    r = internal.post("/auth/apop", json={"username": user, "timestamp": stamp, "digest": digest})
    assert r.json() == {"valid": False, "username": None}


# -- recipients and deliveries -------------------------------------------------------------------


def test_recipient_exists(mailstore, internal, new_user):
    user, _ = new_user()
    account = mailstore.address(user)
    expected = {"address": account, "accounts": [account], "limited": False}
    assert internal.get(f"/recipients/{account}").json() == expected
    assert internal.get(f"/recipients/{account.upper()}").json() == expected
    assert internal.get(f"/recipients/{user}+tag@{mailstore.primary}").json() == expected
    r = internal.get(f"/recipients/nobody-at-all@{mailstore.primary}")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "unknown_user"
    r = internal.get(f"/recipients/{user}")  # RCPT addresses have a domain
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "unknown_user"
    r = internal.get(f"/recipients/{user}@elsewhere.example")  # a relay attempt
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "unknown_domain"


def test_delivery_stores_lf_with_sizes_in_the_name(mailstore, internal, new_user):
    user, _ = new_user()
    r = deliver(internal, [user], MESSAGE)
    assert r.status_code == 201, r.text
    body = r.json()
    stored = MESSAGE.replace(b"\r\n", b"\n")
    assert body["recipients"] == [mailstore.address(user)]
    assert body["size"] == len(stored)
    assert body["id"].endswith(f",S={len(stored)},W={len(MESSAGE)}")
    assert len(body["id"]) <= 70
    (path,) = mailstore.files(user, "new")
    assert path.name == body["id"]
    assert path.read_bytes() == stored
    assert mailstore.files(user, "tmp") == []


def test_delivery_adds_final_lf_and_keeps_bare_lf_and_cr(mailstore, internal, new_user):
    user, _ = new_user()
    r = deliver(internal, [user], b"Subject: x\n\nbare lf\nand cr\r here\r\nno final newline")
    assert r.status_code == 201
    (path,) = mailstore.files(user, "new")
    data = path.read_bytes()
    assert data == b"Subject: x\n\nbare lf\nand cr\r here\nno final newline\n"
    lfs = data.count(b"\n")
    assert path.name.endswith(f",S={len(data)},W={len(data) + lfs}")


def test_delivery_crlf_split_across_chunks(mailstore, internal, new_user):
    user, _ = new_user()
    chunks = [b"Subject: split\r", b"\n\r", b"\nbody\r", b"\r\n", b"end\r"]

    def gen():
        yield from chunks

    r = internal.post("/deliveries", params={"recipient": user}, content=gen())
    assert r.status_code == 201, r.text
    (path,) = mailstore.files(user, "new")
    # the CR at the end of a chunk and the LF starting the next are one line end; a lone CR stays
    assert path.read_bytes() == b"Subject: split\n\nbody\r\nend\r\n"


def test_duplicate_recipients_store_once_each(mailstore, internal, new_user):
    a, _ = new_user()
    b, _ = new_user()
    r = deliver(internal, [a, b, a, a.upper()], MESSAGE)
    assert r.status_code == 201
    assert r.json()["recipients"] == [mailstore.address(a), mailstore.address(b)]
    assert len(mailstore.files(a, "new")) == 1
    assert len(mailstore.files(b, "new")) == 1
    assert mailstore.files(a, "new")[0].name == mailstore.files(b, "new")[0].name
    # one inode, linked into both
    assert os.stat(mailstore.files(a, "new")[0]).st_nlink == 2


def test_unknown_recipient_is_404_and_nothing_is_stored(mailstore, internal, new_user):
    a, _ = new_user()
    r = deliver(internal, [a, "no-such-user"], MESSAGE)
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "unknown_user"
    assert r.json()["error"]["unknown"] == ["no-such-user"]
    for sub in ("tmp", "new", "cur"):
        assert mailstore.files(a, sub) == []


def test_delivery_needs_a_recipient(internal):
    r = internal.post("/deliveries", content=MESSAGE)
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "validation_error"


def test_too_large_is_413_and_leaves_nothing(mailstore, internal, new_user):
    user, _ = new_user()  # the shared mailstore runs with MAX_MESSAGE_SIZE=300000
    # declared too large: refused before reading
    r = deliver(internal, [user], b"x" * 300_001)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "message_too_large"

    # streamed without a length: refused while streaming, after spilling to tmp/
    def gen():
        for _ in range(40):
            yield b"y" * 9_999 + b"\n"

    r = internal.post("/deliveries", params={"recipient": user}, content=gen())
    assert r.status_code == 413
    assert mailstore.files(user, "new") == []
    # exactly at the limit is fine
    assert deliver(internal, [user], b"z" * 299_999 + b"\n").status_code == 201
    assert mailstore.files(user, "tmp") == []
    assert len(mailstore.files(user, "new")) == 1


# -- snapshot, message stream, expunge -----------------------------------------------------------


def test_snapshot_stream_expunge_cycle(mailstore, redis_server, internal, new_user):
    user, _ = new_user()
    ids = [deliver(internal, [user], MESSAGE + str(i).encode() * i).json()["id"] for i in range(3)]
    lease = redis_server.acquire(mailstore.address(user))
    try:
        r = internal.post(
            f"/mailboxes/{user}/snapshot", json={"lock_token": lease.token, "fence": lease.fence}
        )
        assert r.status_code == 200, r.text
        snap = r.json()
        assert [m["id"] for m in snap["messages"]] == ids  # oldest first
        assert snap["highest_fence"] == lease.fence
        for m in snap["messages"]:
            stream = internal.get(f"/mailboxes/{user}/messages/{m['id']}")
            assert stream.status_code == 200
            assert stream.headers["content-type"] == "message/rfc822"
            data = stream.content
            assert int(stream.headers["content-length"]) == len(data)
            assert m["size"] == len(data) + data.count(b"\n")  # W: the size POP3 reports
        # delivered during the session: not in the snapshot, and not touched by the expunge
        late = deliver(internal, [user], MESSAGE).json()["id"]
        mailstore.files(user, "new")[0].rename(
            mailstore.maildir(user) / "cur" / (ids[0] + ":2,S")
        )  # another Maildir tool marked one seen
        assert internal.get(f"/mailboxes/{user}/messages/{ids[0]}").status_code == 200
        r = internal.post(
            f"/mailboxes/{user}/expunge",
            json={
                "ids": [ids[0], ids[1], "1.123456abcdef0123.gone,S=1,W=2"],
                "lock_token": lease.token,
                "fence": lease.fence,
            },
        )
        assert r.status_code == 200, r.text
        assert r.json() == {
            "deleted": [ids[0], ids[1]],
            "already_gone": ["1.123456abcdef0123.gone,S=1,W=2"],
        }
        # a repeated expunge (retry after a lost answer) reports them as already gone
        r = internal.post(
            f"/mailboxes/{user}/expunge",
            json={"ids": [ids[1]], "lock_token": lease.token, "fence": lease.fence},
        )
        assert r.json() == {"deleted": [], "already_gone": [ids[1]]}
    finally:
        redis_server.release(lease)
    remaining = sorted(
        p.name.split(":2,")[0] for p in mailstore.files(user, "new") + mailstore.files(user, "cur")
    )
    assert remaining == sorted([ids[2], late])
    r = internal.get(f"/mailboxes/{user}/messages/{ids[0]}")
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "unknown_message"


def test_snapshot_and_expunge_need_the_lock(mailstore, redis_server, internal, new_user):
    user, _ = new_user()
    mid = deliver(internal, [user], MESSAGE).json()["id"]
    # no lock at all
    r = internal.post(f"/mailboxes/{user}/snapshot", json={"lock_token": "t", "fence": 1})
    assert r.status_code == 409
    assert r.json()["error"]["code"] == "lock_not_held"
    lease = redis_server.acquire(mailstore.address(user))
    try:
        # wrong token, wrong fence
        for token, fence in (("other", lease.fence), (lease.token, lease.fence + 1)):
            r = internal.post(
                f"/mailboxes/{user}/expunge",
                json={"ids": [mid], "lock_token": token, "fence": fence},
            )
            assert r.status_code == 409
            assert r.json()["error"]["code"] == "lock_not_held"
    finally:
        redis_server.release(lease)
    # the lock expired/released: the old holder cannot expunge
    r = internal.post(
        f"/mailboxes/{user}/expunge",
        json={"ids": [mid], "lock_token": lease.token, "fence": lease.fence},
    )
    assert r.status_code == 409
    assert len(mailstore.files(user, "new")) == 1


def test_stale_fence_after_redis_lost_its_counter(mailstore, redis_server, internal, new_user):
    user, _ = new_user()
    mid = deliver(internal, [user], MESSAGE).json()["id"]
    first = redis_server.acquire(mailstore.address(user))
    assert (
        internal.post(
            f"/mailboxes/{user}/snapshot", json={"lock_token": first.token, "fence": first.fence}
        ).status_code
        == 200
    )
    redis_server.release(first)
    second = redis_server.acquire(mailstore.address(user))
    assert (
        internal.post(
            f"/mailboxes/{user}/snapshot", json={"lock_token": second.token, "fence": second.fence}
        ).json()["highest_fence"]
        == second.fence
    )
    redis_server.release(second)

    async def forget_counter() -> None:
        client = aioredis.Redis.from_url(redis_server.url)
        await client.delete(f"maildrop:{{{mailstore.address(user)}}}:fence")
        await client.aclose()

    asyncio.run(forget_counter())
    # Fence 1 again: lower than the mailstore has seen.
    low = redis_server.acquire(mailstore.address(user))
    assert low.fence < second.fence
    try:
        r = internal.post(
            f"/mailboxes/{user}/snapshot", json={"lock_token": low.token, "fence": low.fence}
        )
        assert r.status_code == 409
        assert r.json()["error"]["code"] == "stale_fence"
        assert r.json()["error"]["highest_fence"] == second.fence
        r = internal.post(
            f"/mailboxes/{user}/expunge",
            json={"ids": [mid], "lock_token": low.token, "fence": low.fence},
        )
        assert r.status_code == 409
        assert r.json()["error"]["code"] == "stale_fence"
    finally:
        redis_server.release(low)
    assert len(mailstore.files(user, "new")) == 1

    # what pop3 does: raise the counter above the highest seen, lock again, retry
    async def raise_fence() -> None:
        client = aioredis.Redis.from_url(redis_server.url)
        await MaildropLocks(client).raise_fence(mailstore.address(user), second.fence)
        await client.aclose()

    asyncio.run(raise_fence())
    again = redis_server.acquire(mailstore.address(user))
    try:
        assert again.fence > second.fence
        r = internal.post(
            f"/mailboxes/{user}/snapshot", json={"lock_token": again.token, "fence": again.fence}
        )
        assert r.status_code == 200
    finally:
        redis_server.release(again)


def test_an_equal_fence_counts_only_with_the_token_that_first_presented_it(tmp_path):
    """After a failover that lost the last lock writes Redis gives a fencing number out twice:
    the second token with that number is refused, and once a higher number is seen the first
    token is refused too."""
    db = Database(tmp_path / DATABASE_FILE, Context("example.test", "2026-01-01T00:00:00Z"))
    try:
        account = "bob@example.test"
        assert db.register_fence(account, 5, "first") == (True, 5)
        assert db.register_fence(account, 5, "first") == (True, 5)  # snapshot, then expunge
        assert db.register_fence(account, 5, "second") == (False, 5)
        assert db.register_fence(account, 6, "second") == (True, 6)
        assert db.register_fence(account, 5, "first") == (False, 6)
        assert db.register_fence(account, 6, "first") == (False, 6)
        assert db.highest_fence(account) == 6
    finally:
        db.close()


def test_unknown_mailbox_is_404(internal):
    for method, path, body in (
        ("POST", "/mailboxes/nobody-x/snapshot", {"lock_token": "t", "fence": 1}),
        ("POST", "/mailboxes/nobody-x/expunge", {"ids": [], "lock_token": "t", "fence": 1}),
        ("GET", "/mailboxes/nobody-x/messages/1.1.x", None),
    ):
        r = internal.request(method, path, json=body)
        assert r.status_code == 404, (path, r.text)
        assert r.json()["error"]["code"] == "unknown_user"


def test_the_shared_client_speaks_this_api(mailstore, redis_server, new_user):
    """mailcommon.client.MailstoreClient (used by smtp-in and pop3) against the real service."""
    user, password = new_user()
    account = mailstore.address(user)

    async def run() -> None:
        client = MailstoreClient(mailstore.url, mailstore.service_token)
        redis = aioredis.Redis.from_url(redis_server.url)
        locks = MaildropLocks(redis)
        try:
            verified = await client.verify_password(user, password)
            assert verified is not None and verified.username == account
            assert await client.verify_password(user, "wrong") is None
            found = await client.recipient(f"{user}+tag@{mailstore.primary}")
            assert (found.accounts, found.limited) == ([account], False)
            with pytest.raises(NotFound) as caught:
                await client.recipient(f"nobody-y@{mailstore.primary}")
            assert caught.value.code == "unknown_user"
            with pytest.raises(NotFound) as caught:
                await client.recipient("bob@elsewhere.test")
            assert caught.value.code == "unknown_domain"
            delivery = await client.deliver([user], MESSAGE)
            assert delivery.recipients == [account]
            lease = await locks.acquire(account, 30_000)
            assert lease is not None
            snap = (await client.snapshot(user, lease.token, lease.fence)).entries
            assert [e.id for e in snap] == [delivery.id]
            async with client.open_message(user, delivery.id) as response:
                data = b"".join([c async for c in response.aiter_raw()])
            assert snap[0].size == len(data) + data.count(b"\n")
            with pytest.raises(LockConflict):
                await client.expunge(user, [delivery.id], "not-the-token", lease.fence)
            assert await client.expunge(user, [delivery.id], lease.token, lease.fence) == [
                delivery.id
            ]
            with pytest.raises(NotFound):
                async with client.open_message(user, delivery.id):
                    pass
            await locks.release(lease)
        finally:
            await client.aclose()
            await redis.aclose()

    asyncio.run(run())
