"""The mailstore failing: 4xx so senders retry, and nothing half stored; 250 only for what is stored."""

from __future__ import annotations

import smtplib
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from mailstack.logs import wait_for_records
from mailstack.stack import Stack
from smtp_testlib import DOMAINS, Mail, SmtpProcess, split_trace, wait_for


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mail]:
    """A stack of its own (its mailstore gets stopped), with a small mailstore message limit."""
    with Stack(
        tmp_path_factory.mktemp("faulty"),
        services=("redis", "mailstore-api", "smtp-in"),
        domains=DOMAINS,
        env={"MAX_MESSAGE_SIZE": "65536"},
    ) as stack:
        yield Mail(stack, stack.smtp_port)


def all_stored(mail: Mail, user: str) -> list[bytes]:
    return [split_trace(m)[1] for m in mail.stored(user)]


def test_mailstore_down_at_rcpt_and_at_data(faulty: Mail) -> None:
    bob, carol = faulty.add_user(), faulty.add_user()
    with smtplib.SMTP("127.0.0.1", faulty.smtp_port) as client:
        client.ehlo()
        client.mail("alice@pokey.onl")
        assert client.rcpt(f"{bob}@pokey.onl")[0] == 250
        faulty.stack.stop_service("mailstore-api")
        try:
            code, text = client.data(b"Subject: lost?\r\n\r\nnot lost\r\n")
            assert (code, text[:5]) == (451, b"4.3.0")
            client.mail("alice@pokey.onl")
            # carol was never looked up (bob's "exists" is cached for a while).
            code, text = client.rcpt(f"{carol}@pokey.onl")
            assert (code, text[:5]) == (451, b"4.3.0")
        finally:
            faulty.stack.start_service("mailstore-api")
        client.rset()
        client.sendmail("alice@pokey.onl", [f"{bob}@pokey.onl"], b"Subject: again\r\n\r\nok\r\n")
    assert all_stored(faulty, bob) == [b"Subject: again\n\nok\n"]
    assert list((faulty.maildir(bob) / "tmp").iterdir()) == []


def test_mailstore_refusing_the_size_gives_552(faulty: Mail, tmp_path: Path) -> None:
    # This smtp-in allows more than its mailstore (65536): the mailstore's 413 becomes 552.
    generous = SmtpProcess(faulty.stack, {"MAX_MESSAGE_SIZE": "1048576"}, tmp_path / "smtp.log")
    try:
        bob = faulty.add_user()
        with smtplib.SMTP("127.0.0.1", generous.port) as client:
            client.ehlo()
            client.mail("alice@pokey.onl")
            client.rcpt(f"{bob}@pokey.onl")
            code, text = client.data(b"Subject: big\r\n\r\n" + (b"z" * 998 + b"\r\n") * 100)
            assert (code, text[:5]) == (552, b"5.3.4")
        assert faulty.stored(bob) == []
        wait_for_records(generous.logs, {"event": "message", "result": "too_large"})
    finally:
        generous.terminate()


def test_mailstore_stopped_mid_run(faulty: Mail) -> None:
    """Every message that got 250 is stored exactly once; every other one got a 4xx."""
    users = [faulty.add_user() for _ in range(4)]
    outcomes: dict[str, tuple[int, bytes]] = {}
    lock = threading.Lock()
    stop = threading.Event()
    errors: list[BaseException] = []

    def sender(n: int) -> None:
        try:
            client = smtplib.SMTP("127.0.0.1", faulty.smtp_port, timeout=30)
            client.ehlo()
            i = 0
            while not stop.is_set():
                token = uuid.uuid4().hex
                user = users[(n + i) % len(users)]
                i += 1
                code, text = client.mail("alice@pokey.onl")
                if code == 250:
                    code, text = client.rcpt(f"{user}@pokey.onl")
                if code == 250:
                    code, text = client.data(f"Subject: {token}\r\n\r\n{token}\r\n".encode())
                else:
                    client.rset()
                with lock:
                    outcomes[token] = (code, text)
                if code != 250:  # a client's pause before it tries again: no event to wait for
                    time.sleep(0.02)
            client.quit()
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=sender, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()

    def count(accepted: bool) -> int:
        with lock:
            return sum((code == 250) == accepted for code, _ in outcomes.values())

    wait_for(lambda: count(accepted=True) >= 30, 60, "deliveries before the stop")
    refused_before = count(accepted=False)
    faulty.stack.stop_service("mailstore-api")
    wait_for(lambda: count(accepted=False) > refused_before, 60, "a refusal while it is down")
    faulty.stack.start_service("mailstore-api")
    before = count(accepted=True)
    wait_for(lambda: count(accepted=True) >= before + 30, 60, "deliveries after the restart")
    stop.set()
    for t in threads:
        t.join(60)
    assert not errors, errors

    stored: dict[str, int] = {}
    for user in users:
        for body in all_stored(faulty, user):
            token = body.split(b"\n")[0].removeprefix(b"Subject: ").decode()
            stored[token] = stored.get(token, 0) + 1
    accepted = {t for t, (code, _) in outcomes.items() if code == 250}
    refused = {t: r for t, r in outcomes.items() if r[0] != 250}
    print(f"\n{len(accepted)} accepted, {len(refused)} refused with 4xx, {len(stored)} stored")
    assert len(accepted) > 50 and len(refused) > 0
    assert all(400 <= code < 500 for code, _ in refused.values()), refused
    assert all(stored.get(t) == 1 for t in accepted), [t for t in accepted if stored.get(t) != 1]
    # A refused message may only be stored if the mailstore kept it and died before answering.
    assert set(stored) - accepted <= set(refused)
