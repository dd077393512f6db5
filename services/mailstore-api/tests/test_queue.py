"""The outbound queue over real HTTP against a real mailstore: enqueue, claim, message, report,
back-off, leases, idempotency, expiry and its DSN, the delay notice, crash safety, the admin REST
API and ``mailctl queue``."""

from __future__ import annotations

import asyncio
import email
import email.policy
import json
import secrets
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from email.message import Message
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import PRIMARY, Mailstore
from mailcommon.client import (
    LockConflict,
    MailstoreClient,
    NotFound,
    RecipientResult,
    ReportOutcome,
)
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
    *,
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


def test_deferred_comes_back_after_the_back_off_which_doubles(store):
    with store.internal() as internal:
        queued = enqueue(internal, "someone@far.example", ["bob@far.example"]).json()
        [entry] = claim(internal)
        before = time.time()
        r = report(internal, entry, [("bob@far.example", "deferred", "451 4.7.1 try later")])
        assert r.status_code == 200, r.text
        [state] = r.json()["recipients"]
        assert state["state"] == "pending"
        assert state["attempts"] == 1
        assert state["last_reply"] == "451 4.7.1 try later"
        assert before + 1 <= state["next_attempt"] <= time.time() + 1  # QUEUE_RETRY_BASE=1
        assert claim(internal) == []  # not due yet
        [entry] = wait_for_claim(internal)
        assert entry["id"] == queued["id"]
        assert entry["recipients"] == [
            {"address": "bob@far.example", "attempts": 1, "last_reply": "451 4.7.1 try later"}
        ]
        assert time.time() >= state["next_attempt"]
        # the second deferral waits twice as long, the third four times, then QUEUE_RETRY_MAX
        delays = []
        for attempt in (2, 3, 4):
            now = time.time()
            r = report(internal, entry, [("bob@far.example", "deferred", "421 busy")])
            [state] = r.json()["recipients"]
            assert state["attempts"] == attempt
            delays.append(state["next_attempt"] - now)
            internal_retry(store, entry["id"])
            [entry] = claim(internal)
        assert [round(d) for d in delays] == [2, 4, 4]


def wait_for_claim(client: httpx.Client, timeout: float = 10, **kw: Any) -> list[dict[str, Any]]:
    """Claim until something is handed out (polling, as smtp-out will)."""
    return wait_until(lambda: claim(client, **kw), timeout, "a queue entry due")


def internal_retry(ms: Mailstore, entry_id: str) -> None:
    """Make it due now through the admin API (so the test need not wait out the back-off)."""
    with ms.admin() as admin:
        r = admin.post(f"/queue/{entry_id}/retry")
        assert r.status_code == 200, r.text


def test_lease_expiry_hands_it_out_again_and_the_stale_lease_is_refused(store):
    with store.internal() as internal:
        queued = enqueue(internal, "", ["bob@far.example"]).json()
        [first] = claim(internal, lease=1)
        assert claim(internal) == []  # leased: not handed out twice
        # the worker "dies"; after its lease the entry comes back with a new lease
        [second] = wait_for_claim(internal)
        assert second["id"] == queued["id"]
        assert second["lease"] != first["lease"]
        assert second["attempts"] == 2
        # the first worker wakes up and reports: refused, nothing changed
        r = report(internal, first, [("bob@far.example", "delivered", "250 ok")])
        assert r.status_code == 409
        assert r.json()["error"]["code"] == "stale_lease"
        with store.admin() as admin:
            shown = admin.get(f"/queue/{queued['id']}").json()
        assert shown["recipients"][0]["state"] == "pending"
        assert shown["leased_by"] == "w1"
        # the current holder settles it (keeping its lease is moot: the entry is gone)
        r = report(internal, second, [("bob@far.example", "failed", "550 no")], release=False)
        assert r.status_code == 200, r.text
        assert r.json()["removed"] is True
        r = report(internal, second, [("bob@far.example", "delivered", "250 ok")])
        assert r.status_code == 404
        assert r.json()["error"]["code"] == "unknown_entry"


def test_a_lease_that_ran_out_is_refused_though_nobody_claimed_since(store):
    with store.internal() as internal:
        enqueue(internal, "", ["bob@far.example"])
        [entry] = claim(internal, lease=0.5)
        wait_until(lambda: time.time() > entry["lease_expires"], 5, "the lease's end")
        r = report(internal, entry, [("bob@far.example", "delivered", "250 ok")])
        assert r.status_code == 409
        assert r.json()["error"]["code"] == "stale_lease"
        # a bad report changes nothing either: unknown recipient, twice the same, settled
        [entry] = claim(internal)
        r = report(internal, entry, [("eve@far.example", "delivered", "")])
        assert (r.status_code, r.json()["error"]["code"]) == (422, "unknown_recipient")
        r = report(
            internal,
            entry,
            [("bob@far.example", "deferred", "4"), ("BOB@far.example", "failed", "5")],
        )
        assert (r.status_code, r.json()["error"]["code"]) == (422, "duplicate_recipient")
        r = report(internal, entry, [("bob@far.example", "bounced", "")])
        assert r.status_code == 422
        with store.admin() as admin:
            [shown] = admin.get("/queue").json()["entries"]
        assert shown["recipients"][0]["attempts"] == 0


def test_the_same_idempotency_key_stores_once_and_answers_as_the_first_time(store):
    with store.internal() as internal:
        key = "submit-" + secrets.token_hex(8)
        first = enqueue(internal, "a@far.example", ["bob@far.example"], key=key)
        assert first.status_code == 201
        again = enqueue(internal, "a@far.example", ["bob@far.example"], key=key)
        assert again.status_code == 201
        assert again.json() == first.json()
        # even once the entry is settled and gone (the key is remembered 24 h)
        [entry] = claim(internal)
        report(internal, entry, [("bob@far.example", "delivered", "250 ok")])
        late = enqueue(internal, "a@far.example", ["bob@far.example"], key=key)
        assert late.json() == first.json()
        assert claim(internal) == []
        assert queue_files(store) == []  # the replays' files were removed
        other = enqueue(internal, "a@far.example", ["bob@far.example"], key=key + "x")
        assert other.json()["id"] != first.json()["id"]
        assert queue_files(store) == [other.json()["id"]]
        # at the same moment, from ten connections: one entry, ten times the same answer
        race = "race-" + secrets.token_hex(8)

        def send(_: int) -> dict[str, Any]:
            with store.internal() as own:
                r = enqueue(own, "a@far.example", ["dan@far.example"], key=race)
                assert r.status_code == 201
                return dict(r.json())

        with ThreadPoolExecutor(10) as pool:
            answers = list(pool.map(send, range(10)))
        assert all(a == answers[0] for a in answers)
        assert queue_files(store) == sorted([other.json()["id"], answers[0]["id"]])
        bad = enqueue(internal, "a@far.example", ["bob@far.example"], key="x" * 201)
        assert (bad.status_code, bad.json()["error"]["code"]) == (422, "invalid_idempotency_key")


def test_a_permanent_failure_bounces_a_dsn_into_the_local_senders_mailbox(store):
    sender = add_account(store)
    tagged = sender.replace("@", "+out@")  # a +tag address of the account is local too
    with store.internal() as internal:
        queued = enqueue(internal, tagged, ["bob@far.example", "carol@far.example"]).json()
        [entry] = claim(internal)
        r = report(
            internal,
            entry,
            [
                ("bob@far.example", "failed", "550 5.1.1 <bob@far.example>: no such user"),
                ("carol@far.example", "delivered", "250 2.0.0 ok"),
            ],
        )
        assert r.json()["removed"] is True
    [path] = new_mail(store, sender)
    dsn = parse(path)
    assert dsn["To"] == tagged
    assert dsn["From"].startswith("Mail Delivery System <MAILER-DAEMON@")
    assert dsn["Auto-Submitted"] == "auto-replied"
    per_message, *per_recipient = delivery_status(dsn)
    assert per_message["Reporting-MTA"] == "dns; mx.test.example"
    assert per_message["X-Queue-ID"] == queued["id"]
    [bob] = per_recipient  # only the failed recipient
    assert bob["Final-Recipient"] == "rfc822; bob@far.example"
    assert bob["Action"] == "failed"
    assert bob["Status"] == "5.1.1"
    assert bob["Diagnostic-Code"] == "smtp; 550 5.1.1 <bob@far.example>: no such user"
    headers = dsn.get_payload()[2].get_payload()
    assert "Subject: queued" in headers and "Hello over there" not in headers


def test_expiry_fails_what_is_pending_with_a_dsn_and_a_null_sender_gets_none(make_mailstore):
    ms: Mailstore = make_mailstore(**{**FAST, "QUEUE_LIFETIME": "3", "QUEUE_DELAY_NOTICE": "600"})
    ms.start()
    sender = add_account(ms)
    other = add_account(ms)
    with ms.internal() as internal:
        queued = enqueue(internal, sender, ["bob@far.example"]).json()
        nulled = enqueue(internal, "<>", ["dan@far.example"], account=other).json()
        entries = claim(internal)
        assert {e["id"] for e in entries} == {queued["id"], nulled["id"]}
        for entry in entries:
            address = entry["recipients"][0]["address"]
            r = report(internal, entry, [(address, "deferred", "451 4.4.1 no answer from host")])
            assert r.status_code == 200
            assert r.json()["recipients"][0]["next_attempt"] <= entry["created_at"] + 3
        # at the deadline the next claim fails them instead of handing them out
        deadline = max(e["created_at"] for e in entries) + 3
        wait_until(lambda: time.time() > deadline, 10, "the deadline")
        assert claim(internal) == []
    with ms.admin() as admin:
        assert admin.get("/queue").json()["entries"] == []
    assert queue_files(ms) == []
    [path] = new_mail(ms, sender)
    _, bob = delivery_status(parse(path))
    assert bob["Final-Recipient"] == "rfc822; bob@far.example"
    assert bob["Action"] == "failed"
    assert bob["Status"] == "4.4.7"  # delivery time expired
    assert bob["Diagnostic-Code"] == "smtp; 451 4.4.1 no answer from host"
    # the null sender's entry expired too, and nobody got a bounce for it
    assert new_mail(ms, other) == []
    everything = [p for p in (ms.data_dir / "mail").rglob("*") if p.parent.name == "new"]
    assert everything == [path]


def test_a_deferral_after_the_deadline_fails_at_once(make_mailstore):
    ms: Mailstore = make_mailstore(**{**FAST, "QUEUE_LIFETIME": "1"})
    ms.start()
    sender = add_account(ms)
    with ms.internal() as internal:
        enqueue(internal, sender, ["bob@far.example"])
        [entry] = claim(internal, lease=30)
        wait_until(lambda: time.time() > entry["created_at"] + 1.1, 5, "the deadline")
        r = report(internal, entry, [("bob@far.example", "deferred", "421 4.3.2 shutting down")])
        assert r.json()["removed"] is True
        assert r.json()["recipients"][0]["state"] == "failed"
    [path] = new_mail(ms, sender)
    _, bob = delivery_status(parse(path))
    assert (bob["Action"], bob["Status"]) == ("failed", "4.4.7")


def test_a_delay_notice_is_sent_once(make_mailstore):
    ms: Mailstore = make_mailstore(**{**FAST, "QUEUE_DELAY_NOTICE": "0"})
    ms.start()
    sender = add_account(ms)
    with ms.internal() as internal:
        enqueue(internal, sender, ["bob@far.example"])
        for _ in range(2):
            [entry] = wait_for_claim(internal)
            r = report(internal, entry, [("bob@far.example", "deferred", "452 4.2.2 full")])
            assert r.status_code == 200
        with ms.admin() as admin:
            [shown] = admin.get("/queue").json()["entries"]
        assert shown["delay_notified"] is True
    [path] = new_mail(ms, sender)  # one notice for two deferrals
    dsn = parse(path)
    assert dsn["Subject"].startswith("Delayed Mail")
    _, bob = delivery_status(dsn)
    assert (bob["Action"], bob["Status"]) == ("delayed", "4.2.2")
    assert bob["Will-Retry-Until"]


def test_an_entry_answered_201_survives_kill_9_and_orphans_are_removed_at_start(make_mailstore):
    ms: Mailstore = make_mailstore(**FAST)
    ms.start()
    big = MESSAGE + b"x" * 70 + b"\r\n" * 1  # a line more, and a body spilled in pieces:
    big = big + (b"y" * 998 + b"\r\n") * 600  # 600 kB, over the 256 KiB spill
    with ms.internal() as internal:
        r = enqueue(internal, "a@far.example", ["bob@far.example"], big, key="k-crash")
        assert r.status_code == 201
        queued = r.json()
        lost = enqueue(internal, "a@far.example", ["carol@far.example"]).json()
    ms.stop(signal.SIGKILL)  # right after the 201: no shutdown, nothing flushed by us after
    # an entry whose file is gone, as a database restored without the queue's files has it
    (ms.data_dir / "queue" / lost["id"]).unlink()
    # a file without an entry, as a crash before the commit leaves it
    (ms.data_dir / "queue" / "0123456789abcdef01234567").write_bytes(b"half a message")
    ms.start()
    assert queue_files(ms) == [queued["id"]]
    with ms.admin() as admin:
        assert [e["id"] for e in admin.get("/queue").json()["entries"]] == [queued["id"]]
        shown = admin.get(f"/queue/{queued['id']}").json()
    assert shown["size"] == len(big)
    assert [r["state"] for r in shown["recipients"]] == ["pending"]
    with ms.internal() as internal:
        assert internal.get(f"/queue/{queued['id']}/message").content == big
        # the key survived the crash with it
        again = enqueue(internal, "a@far.example", ["bob@far.example"], big, key="k-crash")
        assert again.json() == queued
        [entry] = claim(internal)
        assert entry["id"] == queued["id"]


def test_bad_enqueues_are_refused_and_leave_nothing(make_mailstore):
    ms: Mailstore = make_mailstore(**FAST, MAX_MESSAGE_SIZE="1000")
    ms.start()
    with ms.internal() as internal:
        cases = [
            (enqueue(internal, "a@far.example", []), 422, "validation_error"),
            (enqueue(internal, "a@far.example", ["not an address"]), 422, "invalid_address"),
            (enqueue(internal, "a@far.example", ["bob@[192.0.2.1]"]), 422, "invalid_address"),
            (enqueue(internal, "bad sender@x", ["bob@far.example"]), 422, "invalid_address"),
            (enqueue(internal, "a@far.example", ["bob@far.example"], b""), 422, "empty_message"),
            (
                enqueue(internal, "a@far.example", ["bob@far.example"], b"x" * 1001),
                413,
                "message_too_large",
            ),
            (
                enqueue(internal, "a@far.example", ["b@far.example"], account="nobody"),
                404,
                "unknown_account",
            ),
        ]
        for response, status, code in cases:
            assert (response.status_code, response.json()["error"]["code"]) == (status, code)
        # streamed past the limit without a Content-Length
        r = internal.post(
            "/queue",
            params={"sender": "a@far.example", "recipient": "b@far.example"},
            content=iter([b"x" * 600, b"y" * 600]),
        )
        assert (r.status_code, r.json()["error"]["code"]) == (413, "message_too_large")
        assert internal.post("/queue/claim", json={"worker": "w", "limit": 0}).status_code == 422
        assert internal.get("/queue/..%2Fusers.sqlite3/message").status_code == 404
        assert internal.get("/queue/0123456789abcdef01234567/message").status_code == 404
    assert queue_files(ms) == []
    # and the admin token is not the service token
    with httpx.Client(base_url=ms.url) as anon:
        r = anon.post(
            "/internal/v1/queue/claim",
            json={"worker": "w"},
            headers={"Authorization": f"Bearer {ms.admin_token}"},
        )
        assert r.status_code == 401
        r = anon.get("/api/v1/queue", headers={"Authorization": f"Bearer {ms.service_token}"})
        assert r.status_code == 401


def test_admin_rest_and_mailctl_list_show_retry_drop(make_mailstore):
    # a back-off longer than the test, so that only the retry makes the entry due
    store: Mailstore = make_mailstore(QUEUE_RETRY_BASE="600", QUEUE_RETRY_MAX="600")
    store.start()
    with store.internal() as internal:
        queued = enqueue(internal, "", ["bob@far.example", "carol@far.example"]).json()
        [entry] = claim(internal)
        report(
            internal,
            entry,
            [("bob@far.example", "deferred", "451 greylisted"), ("carol@far.example", "delivered", "250 ok")],
        )  # fmt: skip
    with store.admin() as admin:
        [listed] = admin.get("/queue").json()["entries"]
        assert listed["id"] == queued["id"]
        assert listed["sender"] == ""
        assert listed["attempts"] == 1
        bob, carol = listed["recipients"]
        assert (bob["state"], bob["attempts"], bob["last_reply"]) == (
            "pending",
            1,
            "451 greylisted",
        )
        assert bob["next_attempt"] > time.time()
        assert (carol["state"], carol["next_attempt"]) == ("delivered", None)
        assert admin.get(f"/queue/{queued['id']}").json() == listed
        assert admin.get("/queue/0123456789abcdef01234567").status_code == 404
        assert admin.get("/queue/nope").json()["error"]["code"] == "unknown_entry"

    r = mailctl(store, "queue", "list")
    assert r.returncode == 0, r.stderr
    assert queued["id"] in r.stdout and "bob@far.example" in r.stdout
    assert "carol@far.example" not in r.stdout  # only the pending recipients
    assert "<>" in r.stdout
    r = mailctl(store, "queue", "show", queued["id"])
    assert r.returncode == 0, r.stderr
    assert "451 greylisted" in r.stdout and "delivered" in r.stdout
    r = mailctl(store, "queue", "list", "--json")
    assert [e["id"] for e in json.loads(r.stdout)["entries"]] == [queued["id"]]

    with store.internal() as internal:
        assert claim(internal) == []  # in its back-off
        r = mailctl(store, "queue", "retry", queued["id"])
        assert r.returncode == 0, r.stderr
        [again] = claim(internal)  # due now
        assert [x["address"] for x in again["recipients"]] == ["bob@far.example"]

        r = mailctl(store, "queue", "drop", queued["id"])
        assert r.returncode == 0, r.stderr
        assert queue_files(store) == []
        # the worker holding it finds it gone
        r = report(internal, again, [("bob@far.example", "delivered", "250 ok")])
        assert r.status_code == 404
    r = mailctl(store, "queue", "drop", queued["id"])
    assert r.returncode == 1
    assert "unknown_entry" in r.stderr
    r = mailctl(store, "queue", "show", "0123456789abcdef01234567")
    assert r.returncode == 1
    with store.admin() as admin:
        assert admin.delete(f"/queue/{queued['id']}").status_code == 404
        assert admin.post(f"/queue/{queued['id']}/retry").status_code == 404


def test_the_typed_client_as_a_worker_uses_it(store):
    """mailcommon's client (what smtp-submit and smtp-out call) over real HTTP."""
    sender = add_account(store)

    async def worker() -> None:
        client = MailstoreClient(store.url, store.service_token)
        try:
            queued = await client.enqueue(
                sender, ["bob@far.example"], MESSAGE, account=sender, idempotency_key="c-1"
            )
            again = await client.enqueue(
                sender, ["bob@far.example"], MESSAGE, account=sender, idempotency_key="c-1"
            )
            assert again == queued
            [entry] = await client.claim("smtp-out-test", limit=5, lease_seconds=0.5)
            assert (entry.id, entry.sender, entry.account) == (queued.id, sender, sender)
            assert [r.address for r in entry.recipients] == ["bob@far.example"]
            async with client.open_queued(entry.id) as stream:
                assert await stream.aread() == MESSAGE
            await asyncio.sleep(0.6)  # the lease runs out (a stalled worker)
            with pytest.raises(LockConflict) as refused:
                await client.report(
                    entry.id, entry.lease, [RecipientResult("bob@far.example", "delivered")]
                )
            assert refused.value.code == "stale_lease"
            [entry] = await client.claim("smtp-out-test")
            outcome = await client.report(
                entry.id,
                entry.lease,
                [RecipientResult("bob@far.example", "deferred", "451 4.3.0 later")],
            )
            assert outcome == ReportOutcome(removed=False, pending=["bob@far.example"])
            with pytest.raises(NotFound):
                await client.report("0123456789abcdef01234567", "x", [])
        finally:
            await client.aclose()

    asyncio.run(worker())
