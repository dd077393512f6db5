"""Idempotent deliveries and fail stop, over real HTTP to the real mailstore (``conftest``).

A delivery with an ``Idempotency-Key`` already stored is stored no more and answered as the first
time; a delivery thread that stopped makes deliveries 503 and both health checks fail, and the
process then ends itself.
"""

from __future__ import annotations

import secrets
import signal
import socket
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

MESSAGE = b"From: a@example.org\r\nSubject: once\r\n\r\nonly one copy, please\r\n"


def key() -> str:
    return f"tx-{secrets.token_hex(8)}"


def post(client: httpx.Client, recipients: list[str], idem: str | None, body: bytes = MESSAGE):
    headers = {"Idempotency-Key": idem} if idem is not None else {}
    return client.post(
        "/deliveries", params={"recipient": recipients}, content=body, headers=headers
    )


def test_the_same_delivery_twice_is_stored_once_with_two_identical_answers(
    mailstore: Any, internal: httpx.Client, new_user
) -> None:
    alice, _ = new_user()
    bob, _ = new_user()
    idem = key()
    first = post(internal, [alice, bob], idem)
    second = post(internal, [alice, bob], idem)
    assert first.status_code == second.status_code == 201, (first.text, second.text)
    assert first.content == second.content
    for user in (alice, bob):
        assert [p.name for p in mailstore.files(user, "new")] == [first.json()["id"]]
    other = post(internal, [alice], key())  # another key is another delivery
    assert other.status_code == 201
    assert len(mailstore.files(alice, "new")) == 2


def test_a_retry_after_the_connection_dropped_before_the_reply_leaves_one_copy(
    mailstore: Any, internal: httpx.Client, new_user
) -> None:
    alice, _ = new_user()
    idem = key()
    request = (
        f"POST /internal/v1/deliveries?recipient={alice} HTTP/1.1\r\n"
        f"Host: 127.0.0.1\r\nAuthorization: Bearer {mailstore.service_token}\r\n"
        f"Idempotency-Key: {idem}\r\nContent-Length: {len(MESSAGE)}\r\n\r\n"
    ).encode() + MESSAGE
    with socket.create_connection(("127.0.0.1", mailstore.port)) as sock:
        sock.sendall(request)  # and gone before the reply
    deadline = time.monotonic() + 10
    while not mailstore.files(alice, "new") and time.monotonic() < deadline:
        time.sleep(0.02)
    stored = mailstore.files(alice, "new")
    assert len(stored) == 1  # the mailstore wrote it although nobody read the answer
    retry = post(internal, [alice], idem)
    assert retry.status_code == 201
    assert retry.json() == {
        "id": stored[0].name,
        "recipients": [mailstore.address(alice)],
        "size": len(MESSAGE.replace(b"\r\n", b"\n")),
    }
    assert mailstore.files(alice, "new") == stored


def test_two_concurrent_requests_with_one_key_store_one_copy(mailstore: Any, new_user) -> None:
    alice, _ = new_user()
    idem = key()
    body = MESSAGE + b"x" * 280_000 + b"\r\n"  # spilled to a tmp file: a longer flight
    answers: list[httpx.Response] = []
    start = threading.Barrier(4)

    def send() -> None:
        with mailstore.internal() as client:
            start.wait()
            answers.append(post(client, [alice], idem, body))

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert [a.status_code for a in answers] == [201] * 4, [a.text for a in answers]
    assert len({a.content for a in answers}) == 1
    assert [p.name for p in mailstore.files(alice, "new")] == [answers[0].json()["id"]]


def test_a_key_survives_a_restart(make_mailstore, tmp_path: Path) -> None:
    store = make_mailstore()
    store.start()
    with store.admin() as admin:
        assert (
            admin.post("/users", json={"username": "dora", "password": "pw-" * 4}).status_code
            == 201
        )
    idem = key()
    with store.internal() as client:
        first = post(client, ["dora"], idem)
    assert first.status_code == 201
    store.stop()
    store.start()
    with store.internal() as client:
        again = post(client, ["dora"], idem)
    assert again.status_code == 201
    assert again.content == first.content
    assert [p.name for p in store.files("dora", "new")] == [first.json()["id"]]


def test_an_invalid_key_is_refused_before_anything_is_stored(
    mailstore: Any, internal: httpx.Client, new_user
) -> None:
    alice, _ = new_user()
    for bad in ("x" * 201, "caf\xe9", ""):
        r = internal.post(
            "/deliveries",
            params={"recipient": alice},
            content=MESSAGE,
            headers=[("Idempotency-Key", bad.encode("latin-1"))],
        )
        assert r.status_code == 422, (bad, r.text)
        assert r.json()["error"]["code"] == "invalid_idempotency_key"
    assert mailstore.files(alice, "new") == []
    assert post(internal, [alice], "x" * 200).status_code == 201


def test_a_stopped_delivery_thread_answers_503_and_fails_both_health_checks(
    make_mailstore,
) -> None:
    store = make_mailstore()
    store.argv = [sys.executable, str(Path(__file__).with_name("serve_broken_committer.py"))]
    store.start()
    assert httpx.get(store.url + "/readyz").status_code == 200
    with store.admin() as admin:
        assert (
            admin.post("/users", json={"username": "erin", "password": "pw-" * 4}).status_code
            == 201
        )
    with store.internal() as client:
        first = post(client, ["erin"], key())  # in the batch that stopped the thread
        second = post(client, ["erin"], key())  # refused at once
    for answer in (first, second):
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"]["code"] == "delivery_unavailable"
    health = httpx.get(store.url + "/healthz")
    assert health.status_code == 503
    assert health.json()["error"]["code"] == "delivery_stopped"
    ready = httpx.get(store.url + "/readyz")
    assert ready.status_code == 503
    assert ready.json()["error"]["checks"]["delivery"].startswith("failed")
    assert store.files("erin", "new") == []
    assert store.files("erin", "tmp") == []
    assert store.proc is not None
    # It ends itself (SIGTERM, drained) so that its restart policy restarts it; python -m
    # mailstore_api turns that SIGTERM into exit status 0, this launcher leaves it to uvicorn.
    assert store.proc.wait(60) in (0, -signal.SIGTERM)
