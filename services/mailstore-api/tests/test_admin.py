"""The admin REST API, health, OpenAPI and the one error shape, against the real service."""

from __future__ import annotations

import secrets

import httpx
import pytest
from mailcommon.names import USERNAME_RULE

pytestmark = pytest.mark.timeout(60)

MULTIPART = (
    b"From: Alice <alice@example.org>\r\n"
    b"To: bob@example.org\r\n"
    b"Subject: =?utf-8?q?caf=C3=A9?=\r\n"
    b"Date: Mon, 23 Nov 2026 10:00:00 +0000\r\n"
    b"MIME-Version: 1.0\r\n"
    b'Content-Type: multipart/mixed; boundary="XX"\r\n'
    b"\r\n"
    b"--XX\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: quoted-printable\r\n"
    b"\r\n"
    b"caf=C3=A9 au lait\r\n"
    b"--XX\r\n"
    b"Content-Type: application/octet-stream\r\n"
    b'Content-Disposition: attachment; filename="a.bin"\r\n'
    b"Content-Transfer-Encoding: base64\r\n"
    b"\r\n"
    b"AAECAwQF\r\n"
    b"--XX--\r\n"
)


def deliver(internal: httpx.Client, user: str, body: bytes) -> str:
    r = internal.post("/deliveries", params={"recipient": user}, content=body)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def error(r: httpx.Response) -> str:
    body = r.json()
    assert set(body) == {"error"}
    assert isinstance(body["error"]["message"], str)
    return str(body["error"]["code"])


# -- tokens and the error shape -------------------------------------------------------------------


def test_admin_endpoints_refuse_missing_wrong_and_service_tokens(mailstore):
    for headers in (
        {},
        {"Authorization": "Bearer x"},
        {"Authorization": f"Bearer {mailstore.service_token}"},
        {"Authorization": f"Basic {mailstore.admin_token}"},
    ):
        for method, path in (
            ("GET", "/api/v1/users"),
            ("POST", "/api/v1/users"),
            ("GET", "/api/v1/nothing"),
        ):
            r = httpx.request(method, mailstore.url + path, headers=headers, json={})
            assert r.status_code == 401
            assert r.json() == {
                "error": {"code": "unauthorized", "message": r.json()["error"]["message"]}
            }


def test_unknown_route_405_and_validation_use_the_error_shape(mailstore, admin):
    r = httpx.get(mailstore.url + "/nothing-here")
    assert r.status_code == 404
    assert error(r) == "not_found"
    r = admin.patch("/users")
    assert r.status_code == 405
    assert error(r) == "method_not_allowed"
    r = admin.post("/users", json={"username": "x"})
    assert r.status_code == 422
    assert error(r) == "validation_error"
    assert r.json()["error"]["details"][0]["loc"] == ["body", "password"]
    r = admin.get("/users/x/messages", params={"limit": "0"})
    assert r.status_code == 422
    assert error(r) == "validation_error"


def test_health_ready_and_openapi(mailstore):
    assert httpx.get(mailstore.url + "/healthz").json() == {"status": "ok"}
    r = httpx.get(mailstore.url + "/readyz")
    assert r.status_code == 200
    assert r.json()["checks"] == {
        "delivery": "ok",
        "database": "ok",
        "volume": "ok",
        "redis": "ok",
    }
    assert httpx.get(mailstore.url + "/docs").status_code == 200
    spec = httpx.get(mailstore.url + "/openapi.json").json()
    for path in (
        "/api/v1/users",
        "/internal/v1/deliveries",
        "/internal/v1/mailboxes/{username}/expunge",
    ):
        assert path in spec["paths"]
    assert "x-request-id" in r.headers


# -- users ---------------------------------------------------------------------------------------


def test_user_lifecycle(mailstore, admin, internal):
    name = f"carol.{secrets.token_hex(3)}"
    r = admin.post("/users", json={"username": name, "password": "pw-1"})
    assert r.status_code == 201
    assert r.json()["username"] == mailstore.address(name)
    assert r.json()["domain"] == mailstore.primary
    assert r.json()["messages"] == 0
    assert "password" not in r.text and "pw-1" not in r.text
    for sub in ("tmp", "new", "cur"):
        assert (mailstore.maildir(name) / sub).is_dir()
    r = admin.post("/users", json={"username": name, "password": "other"})
    assert r.status_code == 409
    assert error(r) == "user_exists"

    deliver(internal, name, b"Subject: a\n\nhello\n")
    deliver(internal, name, b"Subject: b\n\nworld!\n")
    listed = {u["username"]: u for u in admin.get("/users").json()["users"]}
    assert listed[mailstore.address(name)]["messages"] == 2
    assert listed[mailstore.address(name)]["bytes"] == len(b"Subject: a\n\nhello\n") + len(
        b"Subject: b\n\nworld!\n"
    )
    got = admin.get(f"/users/{name}").json()
    assert got["messages"] == 2 and got["created_at"]

    r = admin.put(f"/users/{name}/password", json={"password": "pw-2"})
    assert r.status_code == 204
    assert internal.post("/auth", json={"username": name, "password": "pw-2"}).json()["valid"]
    assert admin.put(f"/users/{name}/password", json={"password": ""}).status_code == 422

    assert internal.get(f"/recipients/{mailstore.address(name)}").status_code == 200
    r = admin.delete(f"/users/{name}")
    assert r.status_code == 409
    assert error(r) == "mailbox_not_empty"
    assert mailstore.maildir(name).is_dir()
    assert admin.delete(f"/users/{name}", params={"purge": "true"}).status_code == 204
    assert not mailstore.maildir(name).exists()
    assert admin.get(f"/users/{name}").status_code == 404
    assert not internal.post("/auth", json={"username": name, "password": "pw-2"}).json()["valid"]
    assert internal.get(f"/recipients/{mailstore.address(name)}").status_code == 404
    assert admin.delete(f"/users/{name}").status_code == 404


def test_empty_user_deletes_without_purge(mailstore, admin, new_user):
    user, _ = new_user()
    assert admin.delete(f"/users/{user}").status_code == 204
    assert not mailstore.maildir(user).exists()


@pytest.mark.parametrize(
    "name",
    [
        "-bob",
        ".bob",
        "_bob",
        "bob smith",
        "bob/x",
        "../bob",
        "bób",
        "",
        "b" * 65,
        "bob\x00",
        "-bob@other.example",
        "bob@",
        "bob@[192.0.2.1]",
    ],
)
def test_invalid_usernames_are_422_naming_the_rule_and_create_nothing(mailstore, admin, name):
    before = sorted(p.name for p in (mailstore.data_dir / "mail").iterdir())
    r = admin.post("/users", json={"username": name, "password": "pw"})
    assert r.status_code == 422
    assert USERNAME_RULE in r.json()["error"]["message"]
    assert sorted(p.name for p in (mailstore.data_dir / "mail").iterdir()) == before


def test_a_name_in_capitals_is_the_lower_case_account(mailstore, admin):
    """Local parts are compared lower-cased: ``Bob`` is the account ``bob`` of the primary domain."""
    name = f"Bob{secrets.token_hex(3)}"
    r = admin.post("/users", json={"username": name, "password": "pw"})
    assert r.status_code == 201
    assert r.json()["username"] == mailstore.address(name.lower())
    assert mailstore.maildir(name.lower()).is_dir()
    r = admin.post("/users", json={"username": name.lower(), "password": "pw"})
    assert r.status_code == 409
    assert error(r) == "user_exists"
    assert admin.delete(f"/users/{name}").status_code == 204


def test_a_domain_not_of_this_server_is_422_and_creates_nothing(mailstore, admin):
    before = sorted(p.name for p in (mailstore.data_dir / "mail").iterdir())
    r = admin.post("/users", json={"username": "bob@x", "password": "pw"})
    assert r.status_code == 422
    assert error(r) == "unknown_domain"
    assert sorted(p.name for p in (mailstore.data_dir / "mail").iterdir()) == before


def test_longest_valid_username(admin):
    name = "b" * 64
    assert admin.post("/users", json={"username": name, "password": "pw"}).status_code == 201
    assert admin.delete(f"/users/{name}").status_code == 204


def test_purge_is_423_while_a_pop3_session_holds_the_lock(
    mailstore, redis_server, admin, internal, new_user
):
    user, _ = new_user()
    deliver(internal, user, b"Subject: x\n\nx\n")
    lease = redis_server.acquire(mailstore.address(user))  # POP3 locks the account's address
    try:
        r = admin.delete(f"/users/{user}", params={"purge": "true"})
        assert r.status_code == 423
        assert error(r) == "mailbox_locked"
    finally:
        redis_server.release(lease)
    assert mailstore.maildir(user).is_dir()


# -- APOP secrets --------------------------------------------------------------------------------


def test_apop_secret_is_stored_encrypted(mailstore, admin, new_user):
    user, _ = new_user()
    secret = "very-recognisable-apop-secret"
    assert admin.put(f"/users/{user}/apop-secret", json={"secret": secret}).status_code == 204
    assert admin.get(f"/users/{user}").json()["apop"] is True
    for path in mailstore.data_dir.glob("users.sqlite3*"):
        assert secret.encode() not in path.read_bytes()
    assert admin.delete(f"/users/{user}/apop-secret").status_code == 204
    assert admin.get(f"/users/{user}").json()["apop"] is False
    assert admin.put("/users/nobody-z/apop-secret", json={"secret": "s"}).status_code == 404


# -- messages ------------------------------------------------------------------------------------


def test_message_listing_is_paginated_with_summary_fields(admin, internal, new_user):
    user, _ = new_user()
    ids = [
        deliver(internal, user, f"From: a@x\nTo: {user}@x\nSubject: n{i}\n\nbody\n".encode())
        for i in range(5)
    ]
    page = admin.get(f"/users/{user}/messages", params={"offset": 1, "limit": 2}).json()
    assert page["total"] == 5 and page["offset"] == 1 and page["limit"] == 2
    assert [m["id"] for m in page["messages"]] == ids[1:3]
    first = page["messages"][0]
    assert first["uidl"] == first["id"]
    assert first["subject"] == "n1"
    assert first["from"] == "a@x"
    assert first["to"] == f"{user}@x"
    assert first["date"] is None
    assert first["size"] == len(f"From: a@x\nTo: {user}@x\nSubject: n1\n\nbody\n")
    assert first["received"].endswith("+00:00")
    assert admin.get(f"/users/{user}/messages", params={"offset": 10}).json()["messages"] == []
    assert admin.get("/users/nobody-q/messages").status_code == 404


def test_parsed_and_raw_message(admin, internal, new_user):
    user, _ = new_user()
    mid = deliver(internal, user, MULTIPART)
    r = admin.get(f"/users/{user}/messages/{mid}")
    assert r.status_code == 200, r.text
    parsed = r.json()
    names = [h["name"] for h in parsed["headers"]]
    assert names[:4] == ["From", "To", "Subject", "Date"]
    assert {"name": "Subject", "value": "café"} in parsed["headers"]
    text, attachment = parsed["parts"]
    assert text["content_type"] == "text/plain"
    assert text["text"] == "café au lait"  # the line end before a boundary belongs to it
    assert attachment["content_type"] == "application/octet-stream"
    assert attachment["filename"] == "a.bin"
    assert attachment["size"] == 6
    assert attachment["text"] is None

    raw = admin.get(f"/users/{user}/messages/{mid}/raw")
    assert raw.status_code == 200
    assert raw.headers["content-type"] == "message/rfc822"
    assert raw.content == MULTIPART.replace(b"\r\n", b"\n")
    assert int(raw.headers["content-length"]) == len(raw.content)
    for path in (f"/users/{user}/messages/1.1.nope", f"/users/{user}/messages/1.1.nope/raw"):
        r = admin.get(path)
        assert r.status_code == 404
        assert error(r) == "unknown_message"


def test_message_delete_204_404_423_and_503(mailstore, redis_server, admin, internal, new_user):
    user, _ = new_user()
    keep = deliver(internal, user, b"Subject: keep\n\nx\n")
    gone = deliver(internal, user, b"Subject: gone\n\nx\n")
    lease = redis_server.acquire(mailstore.address(user))
    try:
        r = admin.delete(f"/users/{user}/messages/{gone}")
        assert r.status_code == 423
        assert error(r) == "mailbox_locked"
    finally:
        redis_server.release(lease)
    assert admin.delete(f"/users/{user}/messages/{gone}").status_code == 204
    r = admin.delete(f"/users/{user}/messages/{gone}")
    assert r.status_code == 404
    assert error(r) == "unknown_message"
    assert [m["id"] for m in admin.get(f"/users/{user}/messages").json()["messages"]] == [keep]

    # Redis down: no delete without knowing whether a session holds the mailbox
    redis_server.stop()
    try:
        r = admin.delete(f"/users/{user}/messages/{keep}")
        assert r.status_code == 503
        assert error(r) == "redis_unavailable"
        r = internal.post(f"/mailboxes/{user}/snapshot", json={"lock_token": "t", "fence": 1})
        assert r.status_code == 503
        assert error(r) == "redis_unavailable"
        r = internal.post(
            f"/mailboxes/{user}/expunge", json={"ids": [keep], "lock_token": "t", "fence": 1}
        )
        assert r.status_code == 503
        r = httpx.get(mailstore.url + "/readyz")
        assert r.status_code == 503
        assert error(r) == "not_ready"
        checks = r.json()["error"]["checks"]
        assert (
            checks["redis"].startswith("failed")
            and checks["database"] == "ok"
            and checks["volume"] == "ok"
        )
        # deliveries and logins do not need Redis
        deliver(internal, user, b"Subject: while redis is down\n\nx\n")
    finally:
        redis_server.start()
    assert admin.delete(f"/users/{user}/messages/{keep}").status_code == 204
    assert httpx.get(mailstore.url + "/readyz").status_code == 200
