"""Path traversal and odd names are refused without touching anything outside DATA_DIR.

Requests are written byte for byte on a socket, so no client library normalises the paths.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from mailcommon.locks import MaildropLocks

pytestmark = pytest.mark.timeout(60)

ODD = [
    "..",
    "%2e%2e",
    "%2E%2E",
    ".%2e",
    "..%2F..%2F..%2Fvictim",
    "..%2f..%2fvictim",
    "%2e%2e%2f%2e%2e%2fvictim",
    "..%5C..%5Cvictim",
    "victim%00",
    "%00",
    "a" * 300,
    "b%C3%B3b",
    "%C3%A9t%C3%A9",
    "new",
    "cur",
    "tmp",
    ".hidden",
    "%20",
]


def raw(port: int, method: str, target: str, token: str, body: bytes = b"") -> tuple[int, bytes]:
    head = (
        f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head + body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1]


def tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` with its contents, except the database's own files."""
    out = {}
    for dirpath, _, files in os.walk(root):
        for name in files:
            path = Path(dirpath) / name
            if not name.startswith("users.sqlite3"):
                out[str(path.relative_to(root))] = path.read_bytes()
    return out


@pytest.fixture(scope="module")
def victims(mailstore, admin, internal):
    """bob and eve exist; decoys sit outside DATA_DIR, in DATA_DIR, and in bob's Maildir root."""
    for name in ("bob", "eve"):
        assert admin.post("/users", json={"username": name, "password": "pw"}).status_code == 201
    eve_id = internal.post(
        "/deliveries", params={"recipient": "eve"}, content=b"Subject: eve\n\nprivate\n"
    ).json()["id"]
    # the message index writes a delivery in its own thread; a listing waits for that, so no
    # write of an earlier test or of this delivery lands in a test's before/after snapshot
    assert admin.get("/users/eve/messages").json()["total"] == 1
    (mailstore.root / "victim").write_bytes(b"outside")
    (mailstore.data_dir / "victim").write_bytes(b"in data")
    (mailstore.maildir("bob") / "1.1.loose").write_bytes(b"not in new or cur")
    (mailstore.maildir("bob") / "tmp" / "1.2.partial").write_bytes(b"being written")
    return eve_id


def test_odd_message_ids_are_refused_everywhere(mailstore, victims):
    eve_id = victims
    before = tree(mailstore.root)
    ids = [
        *ODD,
        f"..%2Feve%2Fnew%2F{eve_id}",
        f"..%2F..%2Fmail%2Feve%2Fnew%2F{eve_id}",
        f"..%2F..%2Ftest.example%2Feve%2Fnew%2F{eve_id}",
        f"..%2F..%2F..%2Fmail%2Ftest.example%2Feve%2Fnew%2F{eve_id}",
        "1.1.loose",
        "1.2.partial",
        "tmp%2F1.2.partial",
        "a" * 71,
        "x%2F..%2F..%2Fvictim",
    ]
    for mid in ids:
        for method, target, token in (
            ("GET", f"/api/v1/users/bob/messages/{mid}", mailstore.admin_token),
            ("GET", f"/api/v1/users/bob/messages/{mid}/raw", mailstore.admin_token),
            ("DELETE", f"/api/v1/users/bob/messages/{mid}", mailstore.admin_token),
            ("GET", f"/internal/v1/mailboxes/bob/messages/{mid}", mailstore.service_token),
        ):
            status, body = raw(mailstore.port, method, target, token)
            assert status in (404, 422), (method, target, status, body)
            assert json.loads(body)["error"]["code"]
    assert tree(mailstore.root) == before


def test_odd_user_names_are_refused_everywhere(mailstore, victims):
    before = tree(mailstore.root)
    users = [
        *ODD,
        *(f"{user}@test.example" for user in ODD),
        "..%2Feve",
        "eve%2F..%2Fbob",
        "eve%00",
        "eve%20",
        # the domain part of an address is a path component too
        "eve@..",
        "eve@.",
        "eve@%2e%2e",
        "eve@..%2F..",
        "eve@test.example%2F..",
        "eve@test.example%2F..%2Fother.example",
        "eve@%2Fetc",
        "eve@test.example%00",
        "..@test.example",
        "eve@@test.example",
        "eve@new",
        "eve@[127.0.0.1]",
        "eve@elsewhere.example",  # a name, but not a domain of this server
    ]
    for user in users:
        for method, target, token, body in (
            ("GET", f"/api/v1/users/{user}", mailstore.admin_token, b""),
            ("DELETE", f"/api/v1/users/{user}?purge=true", mailstore.admin_token, b""),
            ("PUT", f"/api/v1/users/{user}/password", mailstore.admin_token, b'{"password": "x"}'),
            ("GET", f"/api/v1/users/{user}/messages", mailstore.admin_token, b""),
            ("GET", f"/internal/v1/mailboxes/{user}/messages/1.1.x", mailstore.service_token, b""),
            (
                "POST",
                f"/internal/v1/mailboxes/{user}/snapshot",
                mailstore.service_token,
                b'{"lock_token": "t", "fence": 1}',
            ),
            (
                "POST",
                f"/internal/v1/mailboxes/{user}/expunge",
                mailstore.service_token,
                b'{"ids": ["victim"], "lock_token": "t", "fence": 1}',
            ),
            (
                "POST",
                f"/internal/v1/deliveries?recipient={user}",
                mailstore.service_token,
                b"Subject: x\n\nx\n",
            ),
        ):
            status, answer = raw(mailstore.port, method, target, token, body)
            assert status in (404, 422), (method, target, status, answer)
    # recipient addresses are case-insensitive (EVE is eve), as SMTP local parts are
    target = "/internal/v1/recipients/EVE@Test.Example"
    assert raw(mailstore.port, "GET", target, mailstore.service_token)[0] == 200
    for user in [*ODD, *(f"{user}@test.example" for user in ODD), *users]:
        target = f"/internal/v1/recipients/{user}"
        assert raw(mailstore.port, "GET", target, mailstore.service_token)[0] in (404, 422), user
    assert tree(mailstore.root) == before


def test_expunge_of_odd_ids_deletes_nothing(mailstore, redis_server, victims):

    async def take():
        client = aioredis.Redis.from_url(redis_server.url)
        lease = await MaildropLocks(client).acquire(mailstore.address("bob"), 30_000)
        await client.aclose()
        return lease

    lease = asyncio.run(take())
    before = tree(mailstore.root)
    ids = [
        "../../victim",
        "../victim",
        "..",
        ".",
        "",
        "x/../../victim",
        "victim\x00",
        "1.1.loose",
        "1.2.partial",
        "../eve/new/" + victims,
        "../../mail/eve/new/" + victims,
        "../../test.example/eve/new/" + victims,
        "../../../mail/test.example/eve/new/" + victims,
        "é" * 10,
        "a" * 500,
    ]
    body = json.dumps({"ids": ids, "lock_token": lease.token, "fence": lease.fence}).encode()
    status, answer = raw(
        mailstore.port, "POST", "/internal/v1/mailboxes/bob/expunge", mailstore.service_token, body
    )
    assert status == 200, answer
    result = json.loads(answer)
    assert result["deleted"] == []
    assert sorted(result["already_gone"]) == sorted(dict.fromkeys(ids))
    assert tree(mailstore.root) == before
