"""One user can never read, list or delete another user's mail, through any service.

- POP3: a user sees exactly their own messages (by UIDL and content); another user's password,
  a PLAIN authorization identity naming someone else, or a user name with tricks in it never opens
  someone else's maildrop.
- REST and internal API: a message id of another user's message, or a path trick on the message id
  (``../other/new/<id>``, URL-encoded, double-encoded, backslashes, absolute paths), never reaches
  another user's Maildir: no 2xx, never the other user's bytes, and the message is still there.
- The admin API is admin-only (test_security_tokens); users have no credentials for it.
"""

from __future__ import annotations

import base64
import http.client
import poplib
import secrets
import smtplib
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest

HOST = "127.0.0.1"


@pytest.fixture(scope="module")
def pair(stack: Any, seed_mailbox: Callable[..., list[str]]) -> Iterator[dict[str, Any]]:
    """alice and bob, two messages each, with distinctive bodies; ids by user."""
    users: dict[str, Any] = {}
    for who in ("alice", "bob"):
        name, password = f"{who}{secrets.token_hex(4)}", secrets.token_urlsafe(12)
        bodies = [f"Subject: {who} {i}\n\nPRIVATE-{who.upper()}-{i}\n".encode() for i in range(2)]
        ids = seed_mailbox(stack, {name: password}, *bodies)
        users[who] = {"name": name, "password": password, "ids": ids}
    yield users


def pop3_session(stack: Any, user: str, password: str) -> poplib.POP3:
    pop = poplib.POP3(HOST, stack.pop3_port, timeout=30)
    pop.user(user)
    pop.pass_(password)
    return pop


def test_pop3_user_sees_only_own_mail(stack: Any, pair: dict[str, Any]) -> None:
    for who, other in (("alice", "bob"), ("bob", "alice")):
        me = pair[who]
        pop = pop3_session(stack, me["name"], me["password"])
        try:
            assert pop.stat()[0] == 2
            uidls = [line.split()[1].decode() for line in pop.uidl()[1]]
            assert uidls == me["ids"]
            for n in (1, 2):
                text = b"\n".join(pop.retr(n)[1])
                assert f"PRIVATE-{who.upper()}".encode() in text
                assert f"PRIVATE-{other.upper()}".encode() not in text
            for n in ("3", "4", "0"):
                with pytest.raises(poplib.error_proto):
                    pop.retr(n)
        finally:
            pop.quit()


@pytest.mark.parametrize(
    "trick",
    [
        "wrong-password",
        "plain-authzid",
        "uppercase-name",
        "name-with-space",
        "name-with-nul",
        "path-in-name",
    ],
)
def test_pop3_never_opens_another_users_maildrop(
    stack: Any, pair: dict[str, Any], trick: str
) -> None:
    alice, bob = pair["alice"], pair["bob"]
    pop = poplib.POP3(HOST, stack.pop3_port, timeout=30)
    try:
        if trick == "plain-authzid":
            # authorize as bob while authenticating as alice: no proxy logins
            blob = f"{bob['name']}\0{alice['name']}\0{alice['password']}".encode()
            reply = pop._shortcmd("AUTH PLAIN " + base64.b64encode(blob).decode())  # type: ignore[attr-defined]
            raise AssertionError(f"proxy login accepted: {reply!r}")
        name = {
            "wrong-password": bob["name"],
            "uppercase-name": bob["name"].upper(),
            "name-with-space": f"{bob['name']} {alice['name']}",
            "name-with-nul": f"{alice['name']}\0{bob['name']}",
            "path-in-name": f"{alice['name']}/../{bob['name']}",
        }[trick]
        pop.user(name)  # may be refused already (a space makes two arguments)
        with pytest.raises(poplib.error_proto) as refused:
            pop.pass_(alice["password"])
        assert b"-ERR" in refused.value.args[0]
    except poplib.error_proto as exc:
        assert trick in ("plain-authzid", "name-with-space"), exc
    finally:
        pop.close()
    # bob's mail is untouched
    pop = pop3_session(stack, bob["name"], bob["password"])
    try:
        assert [line.split()[1].decode() for line in pop.uidl()[1]] == bob["ids"]
    finally:
        pop.quit()


def raw_request(stack: Any, method: str, path: str, token: str) -> tuple[int, bytes]:
    """An HTTP request with the path exactly as given (no client-side normalisation)."""
    port = int(stack.api_url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        conn.putrequest(method, path, skip_accept_encoding=True)
        conn.putheader("Authorization", f"Bearer {token}")
        conn.endheaders()
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def tricks(bob: str, bob_id: str) -> list[str]:
    plain = [
        bob_id,  # another user's id under one's own name
        f"../{bob}/new/{bob_id}",
        f"../../{bob}/new/{bob_id}",
        f"../../mail/{bob}/new/{bob_id}",
        f"..\\{bob}\\new\\{bob_id}",
        f"/{bob}/new/{bob_id}",
        f"new/../../{bob}/new/{bob_id}",
        f"{bob_id}/../../../{bob}/new/{bob_id}",
        f"..%2f{bob}%2fnew%2f{bob_id}",
    ]
    encoded = [quote(t, safe="") for t in plain]
    double = [quote(t, safe="") for t in encoded]
    dotted = [
        f"%2e%2e%2f{bob}%2fnew%2f{bob_id}",
        f"%2E%2E/{bob}/new/{bob_id}",
        f"..%5c{bob}%5cnew%5c{bob_id}",
        f"%252e%252e%252f{bob}%252fnew%252f{bob_id}",
        f"..%c0%af{bob}%c0%afnew%c0%af{bob_id}",
        f"{bob_id}%00",
        f"{bob_id}:2,S",
    ]
    return plain + encoded + double + dotted


def test_message_id_path_tricks_never_reach_another_maildir(
    stack: Any, pair: dict[str, Any]
) -> None:
    alice, bob = pair["alice"]["name"], pair["bob"]["name"]
    bob_id = pair["bob"]["ids"][0]
    secret = b"PRIVATE-BOB"
    problems: list[str] = []
    internal = stack.service_token
    for trick in tricks(bob, bob_id):
        urls = [
            ("admin", "GET", f"/api/v1/users/{alice}/messages/{trick}"),
            ("admin", "GET", f"/api/v1/users/{alice}/messages/{trick}/raw"),
            ("admin", "DELETE", f"/api/v1/users/{alice}/messages/{trick}"),
            ("internal", "GET", f"/internal/v1/mailboxes/{alice}/messages/{trick}"),
        ]
        for audience, method, url in urls:
            token = stack.admin_token if audience == "admin" else internal
            status, body = raw_request(stack, method, url, token)
            if 200 <= status < 300 or secret in body:
                problems.append(f"{method} {url} -> {status} {body[:120]!r}")
    assert not problems, "\n".join(problems)
    # bob still has both messages, byte for byte
    with httpx.Client(base_url=stack.api_url, timeout=30) as api:
        listing = api.get(
            f"/api/v1/users/{bob}/messages",
            headers={"Authorization": f"Bearer {stack.admin_token}"},
        )
    assert sorted(m["id"] for m in listing.json()["messages"]) == sorted(pair["bob"]["ids"])


def test_expunge_of_another_users_ids_deletes_nothing(stack: Any, pair: dict[str, Any]) -> None:
    """alice's POP3 session can only ever name her own snapshot; bob's ids are not in it."""
    alice, bob = pair["alice"], pair["bob"]
    pop = pop3_session(stack, alice["name"], alice["password"])
    try:
        for n in ("1", "2"):
            pop.dele(n)
        pop.rset()  # alice keeps her mail too
    finally:
        pop.quit()
    for who in (alice, bob):
        pop = pop3_session(stack, who["name"], who["password"])
        try:
            assert [line.split()[1].decode() for line in pop.uidl()[1]] == who["ids"]
        finally:
            pop.quit()


def pop3_refused(stack: Any, user: str, password: str) -> bool:
    pop = poplib.POP3(HOST, stack.pop3_port, timeout=30)
    try:
        pop.user(user)
        pop.pass_(password)
    except poplib.error_proto:
        return True
    else:
        pop.quit()
        return False
    finally:
        pop.close()


def test_password_change_revokes_the_old_password_at_once(stack: Any, admin: httpx.Client) -> None:
    name, old, new = (
        f"pw{secrets.token_hex(4)}",
        secrets.token_urlsafe(12),
        secrets.token_urlsafe(12),
    )
    assert admin.post("/users", json={"username": name, "password": old}).status_code == 201
    pop3_session(stack, name, old).quit()  # a verified login is cached for a while...
    assert admin.put(f"/users/{name}/password", json={"password": new}).status_code == 204
    assert pop3_refused(stack, name, old)  # ...but not past a password change
    pop3_session(stack, name, new).quit()


def test_a_new_user_of_a_deleted_name_never_sees_the_old_mail(
    stack: Any, admin: httpx.Client, seed_mailbox: Callable[..., list[str]]
) -> None:
    name, old, new = (
        f"re{secrets.token_hex(4)}",
        secrets.token_urlsafe(12),
        secrets.token_urlsafe(12),
    )
    [delivered] = seed_mailbox(stack, {name: old}, b"Subject: old\n\nOLD-OWNER-SECRET\n")
    # not without purge while mail remains; refused while a POP3 session holds the maildrop
    assert admin.delete(f"/users/{name}").status_code == 409
    pop = pop3_session(stack, name, old)
    try:
        assert admin.delete(f"/users/{name}", params={"purge": "true"}).status_code == 423
    finally:
        pop.quit()
    assert admin.delete(f"/users/{name}", params={"purge": "true"}).status_code == 204
    assert pop3_refused(stack, name, old)
    # somebody else gets the name
    assert admin.post("/users", json={"username": name, "password": new}).status_code == 201
    assert admin.get(f"/users/{name}/messages").json()["messages"] == []
    raw = admin.get(f"/users/{name}/messages/{delivered}/raw")
    assert raw.status_code == 404 and b"OLD-OWNER-SECRET" not in raw.content
    pop = pop3_session(stack, name, new)
    try:
        assert pop.stat() == (0, 0)
    finally:
        pop.quit()
    assert pop3_refused(stack, name, old)


def test_path_tricks_never_reach_files_outside_the_maildirs(
    stack: Any, pair: dict[str, Any]
) -> None:
    """Neither a message id nor a user name can name the users database or a system file."""
    alice = pair["alice"]["name"]
    targets = [
        "../../../users.sqlite3",
        "../../users.sqlite3",
        "../../../../../../../../etc/passwd",
        "/etc/passwd",
        "..",
        ".",
        "new",
        "tmp",
    ]
    spellings = []
    for target in targets:
        spellings += [target, quote(target, safe=""), quote(quote(target, safe=""), safe="")]
    internal = stack.service_token
    problems: list[str] = []
    for trick in spellings:
        for audience, method, url in (
            ("admin", "GET", f"/api/v1/users/{alice}/messages/{trick}/raw"),
            ("admin", "GET", f"/api/v1/users/{alice}/messages/{trick}"),
            ("admin", "GET", f"/api/v1/users/{trick}/messages"),
            ("admin", "GET", f"/api/v1/users/{trick}"),
            ("internal", "GET", f"/internal/v1/mailboxes/{alice}/messages/{trick}"),
            ("internal", "GET", f"/internal/v1/mailboxes/{trick}/messages/x"),
        ):
            token = stack.admin_token if audience == "admin" else internal
            status, body = raw_request(stack, method, url, token)
            leaked = b"SQLite format 3" in body or b"root:" in body or b"$argon2" in body
            if 200 <= status < 300 or status >= 500 or leaked:
                problems.append(f"{method} {url} -> {status} {body[:120]!r}")
    assert not problems, "\n".join(problems)


@pytest.mark.local_only
def test_the_volume_is_readable_by_the_mailstore_alone(stack: Any, make_user: Any) -> None:
    """The users database holds the argon2id hashes; Maildirs hold the mail: 0600 files, 0700 dirs.

    Found during the session: users.sqlite3 (and -wal, -shm) were created 0644.
    """
    user, _ = make_user()
    with smtplib.SMTP("127.0.0.1", stack.smtp_port, timeout=30) as smtp:
        smtp.sendmail("alice@pokey.onl", [f"{user}@pokey.onl"], b"Subject: p\r\n\r\nprivate\r\n")
    paths = list(stack.data_dir.rglob("*"))
    assert any(p.name == "users.sqlite3" for p in paths)
    assert any(p.parent.name == "new" for p in paths)
    loose = {str(p.relative_to(stack.data_dir)): oct(p.stat().st_mode & 0o777) for p in paths}
    loose = {name: mode for name, mode in loose.items() if int(mode, 8) & 0o077}
    assert loose == {}
