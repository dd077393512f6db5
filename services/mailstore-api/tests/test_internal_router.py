"""The internal router's own rules over real HTTP: body limits, invalid bodies, no such route,
the one error shape, the access line, Redis down, and the OpenAPI it publishes."""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from mailcommon.locks import Lease, MaildropLocks
from mailstore_api.api.internal import BODY_LIMIT, EXPUNGE_LIMIT, OPERATIONS, PREFIX
from mailstore_api.internal_calls import Snapshot

pytestmark = pytest.mark.timeout(120)

MESSAGE = b"From: a@example.org\r\nSubject: hi\r\n\r\nbody\r\n"


def acquire(redis_url: str, user: str) -> Lease:
    async def run() -> Lease | None:
        client = aioredis.Redis.from_url(redis_url)
        try:
            return await MaildropLocks(client).acquire(user, 60_000)
        finally:
            await client.aclose()

    lease = asyncio.run(run())
    assert lease is not None
    return lease


def lease_body(lease: Lease, **extra: Any) -> dict[str, Any]:
    return {"lock_token": lease.token, "fence": lease.fence, **extra}


def assert_error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    error: dict[str, Any] = r.json()["error"]
    assert error["code"] == code and error["message"]
    return error


def test_bodies_over_the_limit_are_413_after_the_token(mailstore, internal, new_user):
    user, password = new_user()
    for path, limit in (
        ("/auth", BODY_LIMIT),
        ("/auth/apop", BODY_LIMIT),
        (f"/mailboxes/{user}/snapshot", BODY_LIMIT),
        (f"/mailboxes/{user}/messages/batch", BODY_LIMIT),
        (f"/mailboxes/{user}/expunge", EXPUNGE_LIMIT),
    ):
        body = b'{"username": "' + b" " * limit + b'"}'

        def chunks(body: bytes = body) -> Iterator[bytes]:  # no Content-Length: chunked
            for start in range(0, len(body), 65536):
                yield body[start : start + 65536]

        for content in (body, chunks()):
            r = internal.post(path, content=content)
            error = assert_error(r, 413, "request_too_large")
            assert error["limit"] == limit and r.headers["x-request-id"]
        r = httpx.post(f"{mailstore.url}{PREFIX}{path}", content=body)
        assert_error(r, 401, "unauthorized")
    # the limit leaves room for every valid request, whatever its escapes
    escaped = json.dumps({"username": user, "password": "\U0001f600" * 4096})
    assert len(escaped) < BODY_LIMIT
    r = internal.post("/auth", content=escaped, headers={"Content-Type": "application/json"})
    assert r.status_code == 200 and r.json()["valid"] is False
    assert len(json.dumps({"ids": ["1" * 70] * 100_000, "lock_token": "t" * 256})) < EXPUNGE_LIMIT
    # the connection is still usable after a 413
    r = internal.post("/auth", json={"username": user, "password": password})
    assert r.json()["valid"] is True


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
        (b'\xef\xbb\xbf{"username": "bob", "password": "sec"}', "application/json"),  # a BOM
    ],
)
def test_invalid_bodies_are_422_without_the_input(internal, content, content_type):
    r = internal.post("/auth", content=content, headers={"Content-Type": content_type})
    error = assert_error(r, 422, "validation_error")
    assert b"sec" not in r.content  # never the input: it may hold a password
    assert all(d["loc"][0] == "body" for d in error.get("details", [{"loc": ["body"]}]))


def test_json_by_its_content_type_or_none(internal, new_user):
    user, password = new_user()
    body = json.dumps({"username": user, "password": password}).encode()
    for headers in (
        {"Content-Type": "application/json; charset=utf-8"},
        {"Content-Type": "application/merge-patch+json"},
        {},  # none given: JSON, as FastAPI takes it
    ):
        r = internal.post("/auth", content=body, headers=headers)
        assert r.status_code == 200 and r.json()["valid"] is True, (headers, r.text)


def test_no_such_route_or_method_in_the_one_shape(internal, new_user):
    user, _ = new_user()
    for method, path, status, code in (
        ("GET", "/auth", 405, "method_not_allowed"),
        ("PUT", f"/mailboxes/{user}/snapshot", 405, "method_not_allowed"),
        ("POST", f"/recipients/{user}", 405, "method_not_allowed"),
        ("POST", "/auth/", 404, "not_found"),
        ("GET", f"/recipients/{user}/", 404, "not_found"),
        ("GET", "/recipients/", 404, "not_found"),
        ("GET", "/no-such-thing", 404, "not_found"),
        ("POST", "/mailboxes//snapshot", 404, "not_found"),
    ):
        r = internal.request(method, path, follow_redirects=False)
        assert_error(r, status, code)
    assert internal.get("/auth").headers["allow"] == "POST"


def test_every_route_needs_the_service_token(mailstore, admin, new_user):
    user, _ = new_user()
    for headers in (
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": f"Bearer {mailstore.admin_token}"},
        {"Authorization": mailstore.service_token},
    ):
        for op in OPERATIONS:
            path = op.path.replace("{username}", user).replace("{message_id}", "1.1.x")
            r = httpx.request(
                op.method,
                f"{mailstore.url}{PREFIX}{path}",
                headers=headers,
                params={"recipient": user},
            )
            assert set(assert_error(r, 401, "unauthorized")) == {"code", "message"}
            assert r.headers["www-authenticate"] == "Bearer"
    assert admin.get(f"/users/{user}").json()["messages"] == 0  # nothing was delivered


def test_the_snapshot_is_the_documented_model(mailstore, redis_server, internal, new_user):
    user, _ = new_user()
    ids = [internal.post("/deliveries", params={"recipient": user}, content=MESSAGE).json()["id"]]
    lease = acquire(redis_server.url, mailstore.address(user))
    r = internal.post(f"/mailboxes/{user}/snapshot", json=lease_body(lease))
    snapshot = Snapshot.model_validate_json(r.content, strict=True)
    assert [m.id for m in snapshot.messages] == ids
    assert snapshot.model_dump() == r.json()  # no field more than the model has


def test_one_access_line_per_call(make_mailstore):
    store = make_mailstore(LOG_LEVEL="INFO")
    store.start()
    with store.admin() as admin, store.internal() as internal:
        admin.post("/users", json={"username": "ann", "password": "pw-ann-1"})
        calls: list[tuple[str, str, dict[str, Any], int]] = [
            ("POST", "/auth", {"json": {"username": "ann", "password": "pw-ann-1"}}, 200),
            ("POST", "/auth", {"content": b"{", "headers": {"Content-Type": "x/y"}}, 422),
            ("POST", "/auth", {"content": b"x" * (BODY_LIMIT + 1)}, 413),
            ("GET", f"/recipients/ann@{store.primary}", {}, 200),
            ("GET", f"/recipients/nobody-l@{store.primary}", {}, 404),
            ("GET", "/auth", {}, 405),
            ("POST", "/deliveries", {"params": {"recipient": "ann"}, "content": MESSAGE}, 201),
        ]
        for n, (method, path, kwargs, status) in enumerate(calls):
            headers = {**kwargs.pop("headers", {}), "X-Request-ID": f"r{n}"}
            r = internal.request(method, path, headers=headers, **kwargs)
            assert r.status_code == status and r.headers["x-request-id"] == f"r{n}"
        delivered = r.json()["id"]
        r = httpx.post(f"{store.url}{PREFIX}/auth", json={}, headers={"X-Request-ID": "r-none"})
        assert r.status_code == 401
    assert store.stop() in (0, -signal.SIGTERM)  # the log buffer flushed
    lines = [json.loads(x) for x in store.log_file.read_text().splitlines() if x[:1] == "{"]
    access = [x for x in lines if x.get("event") == "request"]
    for n, (method, path, _, status) in [*enumerate(calls), ("-none", ("POST", "/auth", {}, 401))]:
        (line,) = [x for x in access if x["request_id"] == f"r{n}"]
        assert line["method"] == method and line["path"] == PREFIX + path
        assert line["status"] == status and line["bytes"] > 0 and line["client"] == "127.0.0.1"
    (delivery,) = [x for x in access if x["request_id"] == f"r{len(calls) - 1}"]
    assert delivery["message_id"] == delivered and delivery["size"] > 0
    assert "pw-ann-1" not in store.log_file.read_text()
    assert "Traceback" not in store.log_file.read_text()


def test_redis_down_is_503(make_mailstore, own_redis):
    redis = own_redis
    store = make_mailstore()
    store.redis_url = redis.url
    store.start()
    with store.admin() as admin, store.internal() as internal:
        user = f"r{secrets.token_hex(4)}"
        admin.post("/users", json={"username": user, "password": "pw-redis-1"})
        mid = internal.post("/deliveries", params={"recipient": user}, content=MESSAGE)
        lease = acquire(redis.url, store.address(user))
        redis.stop()
        for call, extra in (("snapshot", {}), ("expunge", {"ids": [mid.json()["id"]]})):
            r = internal.post(f"/mailboxes/{user}/{call}", json=lease_body(lease, **extra))
            assert_error(r, 503, "redis_unavailable")
        assert admin.get(f"/users/{user}").json()["messages"] == 1


def test_openapi_has_both_apis_from_the_routers_models(mailstore):
    spec = httpx.get(mailstore.url + "/openapi.json").json()
    schemas = spec["components"]["schemas"]
    internal = {
        (method.upper(), path[len(PREFIX) :])
        for path, item in spec["paths"].items()
        if path.startswith(PREFIX)
        for method in item
    }
    assert internal == {(op.method, op.path) for op in OPERATIONS}
    assert "/api/v1/users" in spec["paths"] and "/healthz" in spec["paths"]
    for op in OPERATIONS:
        item = spec["paths"][PREFIX + op.path][op.method.lower()]
        assert item["security"] == [{"service token": []}]
        assert "422" in item["responses"] and item["summary"]
        if op.body is not None:
            ref = item["requestBody"]["content"]["application/json"]["schema"]["$ref"]
            expected = op.body.model_json_schema(ref_template="#/components/schemas/{model}")
            nested = expected.pop("$defs", {})  # a nested model is a component of its own
            assert schemas[ref.rsplit("/", 1)[1]] == expected
            for name, schema in nested.items():
                assert schemas[name] == schema
    delivery = spec["paths"][f"{PREFIX}/deliveries"]["post"]
    parameters = {p["name"]: p for p in delivery["parameters"]}
    assert parameters["Idempotency-Key"]["in"] == "header"
    assert parameters["Idempotency-Key"]["required"] is False
    assert parameters["recipient"]["required"] is True
    assert "message/rfc822" in delivery["requestBody"]["content"]
    assert "201" in delivery["responses"] and "503" in delivery["responses"]
    assert spec["components"]["securitySchemes"]["service token"]["scheme"] == "bearer"
