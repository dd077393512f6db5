"""200 concurrent deliveries to overlapping recipients."""

from __future__ import annotations

import asyncio
import re

import httpx
import pytest

pytestmark = pytest.mark.timeout(90)

USERS = [f"cc{i}" for i in range(5)]


def recipients_of(i: int) -> list[str]:
    chosen = [USERS[i % 5], USERS[(i + 1) % 5]]
    if i % 3 == 0:
        chosen.append(USERS[(i + 3) % 5])
    if i % 7 == 0:
        chosen.append(USERS[i % 5])  # a duplicate: stored once
    return chosen


def message(i: int) -> bytes:
    body = b"".join(b"line %d of message %d\r\n" % (n, i) for n in range(i % 40 + 1))
    return b"Subject: concurrent\r\nX-Seq: %d\r\n\r\n" % i + body


def test_200_concurrent_deliveries(mailstore, admin):
    for user in USERS:
        assert admin.post("/users", json={"username": user, "password": "pw"}).status_code == 201

    async def run() -> list[httpx.Response]:
        async with httpx.AsyncClient(
            base_url=mailstore.url + "/internal/v1",
            headers={"Authorization": f"Bearer {mailstore.service_token}"},
            limits=httpx.Limits(max_connections=200),
            timeout=60,
        ) as client:
            return await asyncio.gather(
                *(
                    client.post(
                        "/deliveries",
                        params=[("recipient", r) for r in recipients_of(i)],
                        content=message(i),
                    )
                    for i in range(200)
                )
            )

    responses = asyncio.run(run())
    assert [r.status_code for r in responses] == [201] * 200
    ids = [r.json()["id"] for r in responses]
    assert len(set(ids)) == 200

    for user in USERS:
        assert list((mailstore.maildir(user) / "tmp").iterdir()) == []
        expected = sorted(i for i in range(200) if user in recipients_of(i))
        seen = []
        for path in (mailstore.maildir(user) / "new").iterdir():
            data = path.read_bytes()
            seq = int(re.search(rb"X-Seq: (\d+)", data).group(1))
            seen.append(seq)
            assert data == message(seq).replace(b"\r\n", b"\n")
            assert path.name == ids[seq]
            assert path.name.endswith(f",S={len(data)},W={len(data) + data.count(10)}")
            assert len(path.name) <= 70
        assert sorted(seen) == expected  # each exactly once
    users = {u["username"]: u for u in admin.get("/users").json()["users"]}
    for user in USERS:
        assert users[mailstore.address(user)]["messages"] == sum(
            1 for i in range(200) if user in recipients_of(i)
        )
