"""The fast path (``fastpath.MailstoreASGI``) answers as FastAPI alone does, over real HTTP.

One process serves one mailstore application twice (``serve_twice.py``): through the fast path,
as deployed, and bare. Each request goes to both; status, body and headers (but the date and a
generated request id) must be the same, and so must the access lines.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import secrets
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from mailcommon.locks import Lease, MaildropLocks
from mailstack.logs import records, wait_for_records
from mailstore_api.api.internal import router
from mailstore_api.fastroutes import BODY_LIMIT, EXPUNGE_LIMIT, ROUTES, match

pytestmark = pytest.mark.timeout(120)

MESSAGE = b"From: a@example.org\r\nSubject: hi\r\n\r\nbody\r\n"
GONE = "1700000000.M1P1Q1.gone,S=1,W=2"


class Twice:
    """Clients for the two ports; :meth:`same` sends a request to both and compares."""

    def __init__(self, store: Any, bare_url: str) -> None:
        self.store = store
        self.fast = httpx.Client(base_url=store.url, timeout=30)
        self.bare = httpx.Client(base_url=bare_url, timeout=30)
        self.auth = {"Authorization": f"Bearer {store.service_token}"}

    def both(
        self, method: str, path: str, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> tuple[httpx.Response, httpx.Response]:
        headers = self.auth if headers is None else headers
        return (
            self.fast.request(method, path, headers=headers, **kwargs),
            self.bare.request(method, path, headers=headers, **kwargs),
        )

    def same(
        self, method: str, path: str, headers: dict[str, str] | None = None, **kwargs: Any
    ) -> httpx.Response:
        fast, bare = self.both(method, path, headers, **kwargs)
        assert_same(fast, bare)
        return fast

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.store.admin_token}"}
        return self.fast.request(method, "/api/v1" + path, headers=headers, **kwargs)

    def user(self, messages: int = 0) -> tuple[str, str, list[str]]:
        name, password = f"f{secrets.token_hex(5)}", secrets.token_urlsafe(12)
        r = self.admin("POST", "/users", json={"username": name, "password": password})
        assert r.status_code == 201, r.text
        return name, password, [self.deliver(name) for _ in range(messages)]

    def deliver(self, user: str, body: bytes = MESSAGE) -> str:
        r = self.fast.post(
            "/internal/v1/deliveries", params={"recipient": user}, content=body, headers=self.auth
        )
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def access_lines(self, last: str) -> dict[str, dict[str, Any]]:
        """The access lines by request id, once the one of request ``last`` is out."""
        log = self.store.log_file.read_text
        wait_for_records(log, {"event": "request", "request_id": last})
        lines = records(log())
        return {x["request_id"]: x for x in lines if x.get("event") == "request"}


def comparable_headers(r: httpx.Response) -> dict[str, str]:
    """The headers but the date and the request id; a redirect's location without the port."""
    port = f":{r.request.url.port}/"
    return {
        k: v.replace(port, ":PORT/") if k == "location" else v
        for k, v in r.headers.items()
        if k not in {"date", "x-request-id"}
    }


def assert_same(fast: httpx.Response, bare: httpx.Response) -> None:
    assert fast.status_code == bare.status_code, (fast.text, bare.text)
    assert fast.content == bare.content
    assert comparable_headers(fast) == comparable_headers(bare)
    assert fast.headers.get("x-request-id") and bare.headers.get("x-request-id")
    given = fast.request.headers.get("x-request-id")
    if given:
        assert fast.headers["x-request-id"] == bare.headers["x-request-id"] == given


def assert_error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    error: dict[str, Any] = r.json()["error"]
    assert error["code"] == code and error["message"]
    return error


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def _locks(redis_url: str, action: Any) -> Any:
    client = aioredis.Redis.from_url(redis_url)
    try:
        return await action(MaildropLocks(client), client)
    finally:
        await client.aclose()


def acquire(redis_url: str, user: str) -> Lease:
    lease = run(_locks(redis_url, lambda locks, _: locks.acquire(user, 60_000)))
    assert lease is not None
    return lease  # type: ignore[no-any-return]


def release(redis_url: str, lease: Lease) -> None:
    run(_locks(redis_url, lambda locks, _: locks.release(lease)))


def lease_body(lease: Lease, **extra: Any) -> dict[str, Any]:
    return {"lock_token": lease.token, "fence": lease.fence, **extra}


@pytest.fixture(scope="module")
def twice(served_twice: Any) -> Iterator[Twice]:
    pair = Twice(served_twice.store, served_twice.bare_url)
    yield pair
    pair.fast.close()
    pair.bare.close()


def test_every_fast_route_is_a_fastapi_route() -> None:
    documented = {(m, r.path) for r in router.routes for m in getattr(r, "methods", ())}
    assert set(ROUTES) <= documented


def request(method: str, path: str, query: bytes = b"") -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "query_string": query}


def test_match() -> None:
    snapshot = ROUTES[("POST", "/internal/v1/mailboxes/{username}/snapshot")]
    assert match(request("POST", "/internal/v1/mailboxes/bob/snapshot")) == (snapshot, "bob")
    literal = request("POST", "/internal/v1/mailboxes/{username}/snapshot")
    assert match(literal) == (snapshot, "{username}")
    assert match(request("POST", "/internal/v1/auth")) == (
        ROUTES[("POST", "/internal/v1/auth")],
        "",
    )
    deliveries = ROUTES[("POST", "/internal/v1/deliveries")]
    assert match(request("POST", "/internal/v1/deliveries", b"recipient=a")) == (deliveries, "")
    for method, path, query in (
        ("GET", "/internal/v1/auth", b""),
        ("POST", "/internal/v1/auth/", b""),
        ("POST", "/internal/v1/mailboxes//snapshot", b""),
        ("POST", "/internal/v1/mailboxes/bob/snapshot/x", b""),
        ("POST", "/internal/v1/mailboxes/bob", b""),
        ("GET", "/internal/v1/recipients/", b""),
        ("HEAD", "/internal/v1/recipients/bob", b""),
        ("GET", "/internal/v1/mailboxes/bob/messages/batch", b""),
        ("POST", "/api/v1/mailboxes/bob/snapshot", b""),
        ("POST", "/internal/v2/auth", b""),
        ("POST", "/internal/v1/deliveries", b""),  # FastAPI's own 422: no recipient
        ("POST", "/internal/v1/deliveries", b"recipients=a"),
    ):
        assert match(request(method, path, query)) is None, (method, path, query)


def test_auth(twice: Twice) -> None:
    user, password, _ = twice.user()
    for username, given in ((user, password), (user.upper(), password), (user, "wrong")):
        r = twice.same("POST", "/internal/v1/auth", json={"username": username, "password": given})
        assert r.status_code == 200 and r.json()["valid"] is (given == password)
    r = twice.same("POST", "/internal/v1/auth", json={"username": "nobody-z", "password": "x"})
    assert r.json()["valid"] is False
    r = twice.same(
        "POST",
        "/internal/v1/auth",
        json={"username": user, "password": password},
        headers={**twice.auth, "X-Request-ID": "req-auth-1"},
    )
    assert r.headers["x-request-id"] == "req-auth-1"
    # a content type FastAPI reads as JSON, though not the one the front ends send
    r = twice.same(
        "POST",
        "/internal/v1/auth",
        content=json.dumps({"username": user, "password": password}).encode(),
        headers={**twice.auth, "Content-Type": "application/json; charset=utf-8"},
    )
    assert r.json()["valid"] is True


def test_apop(twice: Twice) -> None:
    user, _, _ = twice.user()
    stamp = "<1896.697170952@dbc.mtview.ca.us>"
    digest = hashlib.md5((stamp + "tanstaaf").encode()).hexdigest()
    body = {"username": user, "timestamp": stamp, "digest": digest}
    assert twice.same("POST", "/internal/v1/auth/apop", json=body).json()["valid"] is False
    r = twice.admin("PUT", f"/users/{user}/apop-secret", json={"secret": "tanstaaf"})
    assert r.status_code == 204
    assert twice.same("POST", "/internal/v1/auth/apop", json=body).json()["valid"] is True
    body["digest"] = "0" * 32
    assert twice.same("POST", "/internal/v1/auth/apop", json=body).json()["valid"] is False
    r = twice.same("POST", "/internal/v1/auth/apop", json={"username": user})
    assert_error(r, 422, "validation_error")


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b'{"username": "bob", "password": "sec', "application/json"),  # cut short
        (b"{not json", "application/json"),
        (b"", "application/json"),
        (b"[]", "application/json"),
        (b'"just a string"', "application/json"),
        (b'{"username": "bob"}', "application/json"),
        (b'{"username": "bob", "password": 12345}', "application/json"),
        (b'{"username": "' + b"b" * 300 + b'", "password": "sec"}', "application/json"),
        (b'{"username": "bob", "password": "sec\xff"}', "application/json"),  # not UTF-8
        (b'{"username": "bob", "password": "sec"}', "text/plain"),
        (b'{"username": "bob", "password": "sec"}', None),  # FastAPI wants the content type
        (b'\xef\xbb\xbf{"username": "bob", "password": "sec"}', "application/json"),  # a BOM
    ],
)
def test_invalid_auth_bodies_get_fastapis_answer(
    twice: Twice, content: bytes, content_type: str | None
) -> None:
    headers = dict(twice.auth)
    if content_type:
        headers["Content-Type"] = content_type
    r = twice.same("POST", "/internal/v1/auth", content=content, headers=headers)
    if r.status_code == 422:
        assert_error(r, 422, "validation_error")
        assert b"sec" not in r.content  # never the input: it may hold a password


def test_tokens(twice: Twice) -> None:
    user, password, ids = twice.user(1)
    lease = acquire(twice.store.redis_url, user)
    try:
        calls: list[tuple[str, str, dict[str, Any]]] = [
            ("POST", "/internal/v1/auth", {"json": {"username": user, "password": password}}),
            ("POST", "/internal/v1/auth/apop", {"json": {"username": user, "timestamp": "t"}}),
            ("GET", f"/internal/v1/recipients/{user}", {}),
            ("POST", "/internal/v1/deliveries", {"params": {"recipient": user}, "content": b"x"}),
            ("POST", f"/internal/v1/mailboxes/{user}/snapshot", {"json": lease_body(lease)}),
            ("POST", f"/internal/v1/mailboxes/{user}/messages/batch", {"json": {"ids": ids}}),
            ("POST", f"/internal/v1/mailboxes/{user}/expunge", {"json": lease_body(lease)}),
        ]
        for headers in (
            {},
            {"Authorization": "Bearer nope"},
            {"Authorization": f"Bearer {twice.store.admin_token}"},
            {"Authorization": twice.store.service_token},
        ):
            for method, path, kwargs in calls:
                r = twice.same(method, path, headers, **kwargs)
                assert set(assert_error(r, 401, "unauthorized")) == {"code", "message"}
                assert r.headers["www-authenticate"] == "Bearer"
        # nothing was done: the message is still there
        r = twice.same("POST", f"/internal/v1/mailboxes/{user}/snapshot", json=lease_body(lease))
        assert [m["id"] for m in r.json()["messages"]] == ids
    finally:
        release(twice.store.redis_url, lease)


def test_recipients(twice: Twice) -> None:
    user, _, _ = twice.user()
    assert twice.same("GET", f"/internal/v1/recipients/{user}").json()["username"] == user
    assert twice.same("GET", f"/internal/v1/recipients/{user.upper()}").status_code == 200
    for name in ("nobody-at-all", "bad%20name", "..", "%2E%2E", "x" * 300, "{username}"):
        r = twice.same("GET", f"/internal/v1/recipients/{name}")
        assert r.status_code == 404, name
    # what the fast path leaves to FastAPI: other methods, a trailing slash, HEAD
    for method, path in (
        ("POST", f"/internal/v1/recipients/{user}"),
        ("GET", f"/internal/v1/recipients/{user}/"),
        ("GET", "/internal/v1/recipients/"),
        ("HEAD", f"/internal/v1/recipients/{user}"),
        ("GET", "/internal/v1/auth"),
        ("PUT", f"/internal/v1/mailboxes/{user}/snapshot"),
    ):
        twice.same(method, path, follow_redirects=False)


def test_deliveries(twice: Twice) -> None:
    user, _, _ = twice.user()
    path = "/internal/v1/deliveries"
    r = twice.same("POST", path, params={"recipient": "nobody-q"}, content=MESSAGE)
    assert_error(r, 404, "unknown_user")
    assert_error(twice.same("POST", path, content=MESSAGE), 422, "validation_error")
    big = b"x" * (2 * 1024 * 1024 + 1)
    r = twice.same("POST", path, params={"recipient": user}, content=big)
    assert_error(r, 413, "message_too_large")
    fast, bare = twice.both("POST", path, params={"recipient": user}, content=MESSAGE)
    assert fast.status_code == bare.status_code == 201
    assert comparable_headers(fast).keys() == comparable_headers(bare).keys()
    assert {**fast.json(), "id": "x"} == {**bare.json(), "id": "x"}


def test_snapshot_and_lease_errors(twice: Twice) -> None:
    user, _, ids = twice.user(3)
    path = f"/internal/v1/mailboxes/{user}/snapshot"
    lease = acquire(twice.store.redis_url, user)
    try:
        r = twice.same("POST", path, json=lease_body(lease))
        assert [m["id"] for m in r.json()["messages"]] == ids
        assert r.json()["highest_fence"] == lease.fence
        error = assert_error(
            twice.same("POST", path, json={"lock_token": "wrong", "fence": lease.fence}),
            409,
            "lock_not_held",
        )
        assert error["highest_fence"] == lease.fence
        for body in (
            {"lock_token": "", "fence": 1},
            {"lock_token": "t", "fence": -1},
            {"lock_token": "t", "fence": 2**63},
            {"lock_token": "t", "fence": "many"},
            {"fence": 1},
        ):
            assert_error(twice.same("POST", path, json=body), 422, "validation_error")
        for other in ("nobody-s", user.upper(), "bad%20name"):
            r = twice.same(
                "POST", f"/internal/v1/mailboxes/{other}/snapshot", json=lease_body(lease)
            )
            assert_error(r, 404, "unknown_user")
    finally:
        release(twice.store.redis_url, lease)


def test_stale_fence(twice: Twice) -> None:
    user, _, ids = twice.user(1)
    url = twice.store.redis_url
    release(url, acquire(url, user))
    high = acquire(url, user)  # fence 2
    twice.same("POST", f"/internal/v1/mailboxes/{user}/snapshot", json=lease_body(high))
    release(url, high)
    run(_locks(url, lambda _, client: client.delete(f"maildrop:{{{user}}}:fence")))
    low = acquire(url, user)
    assert low.fence < high.fence
    try:
        for call, extra in (("snapshot", {}), ("expunge", {"ids": ids})):
            r = twice.same(
                "POST", f"/internal/v1/mailboxes/{user}/{call}", json=lease_body(low, **extra)
            )
            assert assert_error(r, 409, "stale_fence")["highest_fence"] == high.fence
    finally:
        release(url, low)


def test_batch(twice: Twice) -> None:
    user, _, ids = twice.user(2)
    path = f"/internal/v1/mailboxes/{user}/messages/batch"
    r = twice.same("POST", path, json={"ids": [ids[1], ids[0], ids[1]]})
    assert r.headers["content-type"] == "application/octet-stream"
    assert len(r.headers["x-message-sizes"].split(",")) == 3
    assert_error(twice.same("POST", path, json={"ids": [ids[0], GONE]}), 404, "unknown_message")
    assert_error(twice.same("POST", path, json={"ids": ["../x"]}), 404, "unknown_message")
    for ids_given in ([], [ids[0]] * 257):
        r = twice.same("POST", path, json={"ids": ids_given})
        assert_error(r, 422, "validation_error")
    big = twice.deliver(user, b"Subject: big\n\n" + b"x" * (600 * 1024))
    r = twice.same("POST", path, json={"ids": [big, big]})
    assert_error(r, 413, "batch_too_large")
    r = twice.same("POST", "/internal/v1/mailboxes/nobody-b/messages/batch", json={"ids": ids})
    assert_error(r, 404, "unknown_user")


def test_expunge(twice: Twice) -> None:
    users = [twice.user(2), twice.user(2)]
    leases = [acquire(twice.store.redis_url, user) for user, _, _ in users]
    try:
        answers = []
        for client, (user, _, ids), lease in zip(
            (twice.fast, twice.bare), users, leases, strict=True
        ):
            r = client.post(
                f"/internal/v1/mailboxes/{user}/expunge",
                json=lease_body(lease, ids=[ids[0], GONE]),
                headers=twice.auth,
            )
            assert r.json() == {"deleted": [ids[0]], "already_gone": [GONE]}
            answers.append(r)
        assert comparable_headers(answers[0]).keys() == comparable_headers(answers[1]).keys()
        user, _, ids = users[0]
        path = f"/internal/v1/mailboxes/{user}/expunge"
        r = twice.same("POST", path, json=lease_body(leases[0], ids=[ids[0]]))
        assert r.json() == {"deleted": [], "already_gone": [ids[0]]}
        r = twice.same("POST", path, json={"ids": [ids[1]], "lock_token": "x", "fence": 1})
        assert_error(r, 409, "lock_not_held")
        r = twice.same("POST", path, json={"ids": "all", **lease_body(leases[0])})
        assert_error(r, 422, "validation_error")
        r = twice.same(
            "POST", "/internal/v1/mailboxes/nobody-e/expunge", json=lease_body(leases[0], ids=[])
        )
        assert_error(r, 404, "unknown_user")
    finally:
        for lease in leases:
            release(twice.store.redis_url, lease)


def test_the_same_access_lines(twice: Twice) -> None:
    user, password, ids = twice.user(1)
    lease = acquire(twice.store.redis_url, user)
    cases: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", "/internal/v1/auth", {"json": {"username": user, "password": password}}),
        ("POST", "/internal/v1/auth", {"content": b"{", "headers": {"Content-Type": "x/y"}}),
        ("GET", f"/internal/v1/recipients/{user}", {}),
        ("GET", "/internal/v1/recipients/nobody-l", {}),
        ("POST", f"/internal/v1/mailboxes/{user}/snapshot", {"json": lease_body(lease)}),
        ("POST", f"/internal/v1/mailboxes/{user}/messages/batch", {"json": {"ids": ids}}),
        ("POST", f"/internal/v1/mailboxes/{user}/expunge", {"json": lease_body(lease, ids=[])}),
        ("POST", f"/internal/v1/mailboxes/{user}/expunge", {"json": {"ids": []}}),
    ]
    try:
        for n, (method, path, kwargs) in enumerate(cases):
            headers = {**twice.auth, **kwargs.pop("headers", {})}
            twice.fast.request(method, path, headers={**headers, "X-Request-ID": f"f{n}"}, **kwargs)
            twice.bare.request(method, path, headers={**headers, "X-Request-ID": f"b{n}"}, **kwargs)
        twice.fast.post("/internal/v1/auth", json={}, headers={"X-Request-ID": "f-none"})
        twice.bare.post("/internal/v1/auth", json={}, headers={"X-Request-ID": "b-none"})
    finally:
        release(twice.store.redis_url, lease)
    lines = twice.access_lines(last="b-none")
    varying = {"ms", "timestamp", "request_id"}
    for n in [*range(len(cases)), "-none"]:
        fast, bare = lines[f"f{n}"], lines[f"b{n}"]
        assert {k: v for k, v in fast.items() if k not in varying} == {
            k: v for k, v in bare.items() if k not in varying
        }
        assert set(fast) >= {"method", "path", "status", "bytes", "ms", "client", "request_id"}
    assert password not in twice.store.log_file.read_text()


def test_bodies_over_the_limit_are_413_unread(twice: Twice) -> None:
    user, password, _ = twice.user()
    lease = acquire(twice.store.redis_url, user)
    try:
        for path, limit in (
            ("/internal/v1/auth", BODY_LIMIT),
            ("/internal/v1/auth/apop", BODY_LIMIT),
            (f"/internal/v1/mailboxes/{user}/snapshot", BODY_LIMIT),
            (f"/internal/v1/mailboxes/{user}/messages/batch", BODY_LIMIT),
            (f"/internal/v1/mailboxes/{user}/expunge", EXPUNGE_LIMIT),
        ):
            body = b'{"username": "' + b" " * limit + b'"}'

            def chunks(body: bytes = body) -> Iterator[bytes]:  # no Content-Length: chunked
                for start in range(0, len(body), 65536):
                    yield body[start : start + 65536]

            for content in (body, chunks()):
                r = twice.fast.post(path, content=content, headers=twice.auth)
                error = assert_error(r, 413, "request_too_large")
                assert error["limit"] == limit and r.headers["x-request-id"]
            # the token first
            r = twice.fast.post(path, content=body)
            assert_error(r, 401, "unauthorized")
        # the limit leaves room for every valid request, whatever its escapes
        escaped = json.dumps({"username": user, "password": "\U0001f600" * 4096})
        assert len(escaped) < BODY_LIMIT
        r = twice.fast.post(
            "/internal/v1/auth",
            content=escaped.encode(),
            headers={**twice.auth, "Content-Type": "application/json"},
        )
        assert r.status_code == 200 and r.json()["valid"] is False
        ids = ["1" * 70] * 100_000
        assert len(json.dumps(lease_body(lease, ids=ids))) < EXPUNGE_LIMIT
        r = twice.same("POST", f"/internal/v1/mailboxes/{user}/expunge", json=lease_body(lease))
        assert_error(r, 422, "validation_error")  # (no ids)
        # the connection is still usable after a 413
        assert twice.fast.post(
            "/internal/v1/auth", json={"username": user, "password": password}, headers=twice.auth
        ).json()["valid"]
    finally:
        release(twice.store.redis_url, lease)


def test_redis_down_is_503(twice: Twice, served_twice: Any) -> None:
    """Last in this module: it stops the module's Redis."""
    redis_own = served_twice.redis
    user, _, ids = twice.user(1)
    lease = acquire(twice.store.redis_url, user)
    redis_own.stop()
    try:
        for call, extra in (("snapshot", {}), ("expunge", {"ids": ids})):
            r = twice.same(
                "POST", f"/internal/v1/mailboxes/{user}/{call}", json=lease_body(lease, **extra)
            )
            assert_error(r, 503, "redis_unavailable")
    finally:
        redis_own.start()
