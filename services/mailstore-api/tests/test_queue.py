"""The outbound queue over real HTTP against a real mailstore: enqueue, claim, message, report,
back-off, leases, idempotency, expiry and its DSN, the delay notice, crash safety, the admin REST
API and ``mailctl queue``."""

from __future__ import annotations

import email
import email.policy
import secrets
import signal
import time
from email.message import Message
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import PRIMARY, Mailstore
from mailstack.ports import wait_until
from test_cli import mailctl

pytestmark = pytest.mark.timeout(90)

MESSAGE = (
    b"From: Alice <alice@test.example>\r\nTo: <bob@far.example>\r\nSubject: queued\r\n"
    b"Message-ID: <q1@test.example>\r\n\r\nHello over there.\r\n.dot line\r\n"
)
#: Small back-off for the tests: 1 s doubling, at most 4 s; a lifetime of 60 s.
FAST = {"QUEUE_RETRY_BASE": "1", "QUEUE_RETRY_MAX": "4", "QUEUE_LIFETIME": "60"}


@pytest.fixture
def store(make_mailstore) -> Mailstore:
    """A mailstore of the test's own (claims see only this test's entries)."""
    ms: Mailstore = make_mailstore(**FAST)
    ms.start()
    return ms


def add_account(ms: Mailstore, name: str | None = None) -> str:
    name = name or f"s{secrets.token_hex(4)}"
    with ms.admin() as admin:
        r = admin.post("/users", json={"username": name, "password": "pw-" + name})
        assert r.status_code == 201, r.text
    return f"{name}@{PRIMARY}"


def enqueue(
    client: httpx.Client,
    sender: str,
    recipients: list[str],
    body: bytes = MESSAGE,
    key: str | None = None,
    account: str | None = None,
) -> httpx.Response:
    params: list[tuple[str, str]] = [("sender", sender)]
    params += [("recipient", r) for r in recipients]
    if account:
        params.append(("account", account))
    headers = {"Content-Type": "message/rfc822"}
    if key:
        headers["Idempotency-Key"] = key
    return client.post("/queue", params=params, content=body, headers=headers)


def claim(client: httpx.Client, lease: float = 30, limit: int = 10) -> list[dict[str, Any]]:
    r = client.post("/queue/claim", json={"worker": "w1", "limit": limit, "lease_seconds": lease})
    assert r.status_code == 200, r.text
    return list(r.json()["entries"])


def report(
    client: httpx.Client, entry: dict[str, Any], results: list[tuple[str, str, str]], **extra: Any
) -> httpx.Response:
    return client.post(
        f"/queue/{entry['id']}/report",
        json={
            "lease": entry["lease"],
            "results": [{"recipient": a, "status": s, "reply": t} for a, s, t in results],
            **extra,
        },
    )


def queue_files(ms: Mailstore) -> list[str]:
    return sorted(p.name for p in (ms.data_dir / "queue").iterdir())


def new_mail(ms: Mailstore, account: str) -> list[Path]:
    return ms.files(account, "new")


def parse(path: Path) -> Message:
    return email.message_from_bytes(path.read_bytes(), policy=email.policy.compat32)


def delivery_status(dsn: Message) -> list[Message]:
    """The field blocks of the message/delivery-status part: per message, then per recipient."""
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    parts = dsn.get_payload()
    assert isinstance(parts, list)
    assert [p.get_content_type() for p in parts] == [
        "text/plain",
        "message/delivery-status",
        "text/rfc822-headers",
    ]
    blocks = parts[1].get_payload()
    assert isinstance(blocks, list)
    return blocks


def test_enqueue_claim_message_and_delivered_removes_it(store):
    sender = add_account(store)
    with store.internal() as internal:
        r = enqueue(internal, sender, ["bob@far.example", "<Carol@Far.Example>"], account=sender)
        assert r.status_code == 201, r.text
        queued = r.json()
        assert queued["recipients"] == ["bob@far.example", "Carol@far.example"]
        assert queued["size"] == len(MESSAGE)
        assert queue_files(store) == [queued["id"]]

        [entry] = claim(internal)
        assert entry["id"] == queued["id"]
        assert entry["sender"] == sender
        assert entry["account"] == sender
        assert entry["attempts"] == 1
        assert [r["address"] for r in entry["recipients"]] == [
            "bob@far.example",
            "Carol@far.example",
        ]
        assert all(r["attempts"] == 0 for r in entry["recipients"])
        assert entry["lease_expires"] > time.time() + 20

        m = internal.get(f"/queue/{entry['id']}/message")
        assert m.status_code == 200
        assert m.content == MESSAGE  # byte for byte, CRLF kept
        assert m.headers["content-type"].startswith("message/rfc822")

        r = report(internal, entry, [("bob@far.example", "delivered", "250 2.0.0 Ok: queued")])
        assert r.status_code == 200, r.text
        assert r.json()["removed"] is False
        assert [x["state"] for x in r.json()["recipients"]] == ["delivered", "pending"]
    with store.admin() as admin:
        shown = admin.get(f"/queue/{entry['id']}").json()
        assert [x["state"] for x in shown["recipients"]] == ["delivered", "pending"]
        assert shown["leased_by"] is None  # the report released the lease
    with store.internal() as internal:
        # carol is still due: the next claim hands the entry out again, with her alone
        [again] = claim(internal)
        assert [r["address"] for r in again["recipients"]] == ["Carol@far.example"]
        assert again["attempts"] == 2
        assert again["lease"] != entry["lease"]
        r = report(internal, again, [("carol@far.example", "delivered", "250 ok")])
        assert r.status_code == 200, r.text
        assert r.json()["removed"] is True
        assert internal.get(f"/queue/{entry['id']}/message").status_code == 404
    with store.admin() as admin:
        assert admin.get(f"/queue/{entry['id']}").status_code == 404
        assert admin.get("/queue").json()["entries"] == []
    assert queue_files(store) == []
    assert new_mail(store, sender) == []  # delivered: no DSN
    metrics = httpx.get(
        store.url + "/metrics", headers={"Authorization": f"Bearer {store.admin_token}"}
    ).text
    assert "maildrop_queue_entries 0.0" in metrics
    assert 'maildrop_queue_results_total{result="delivered"} 2.0' in metrics
