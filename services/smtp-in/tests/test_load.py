"""1,000 messages over 20 concurrent connections: every one delivered, exactly once."""

from __future__ import annotations

import smtplib
import threading
import time
from collections import Counter

from smtp_testlib import Mail, split_trace

CONNECTIONS = 20
PER_CONNECTION = 50


def test_thousand_messages_over_twenty_connections(mail: Mail) -> None:
    users = [mail.add_user() for _ in range(5)]
    replies: list[tuple[str, int]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def sender(n: int) -> None:
        try:
            with smtplib.SMTP("127.0.0.1", mail.smtp_port, timeout=60) as client:
                client.ehlo(f"load{n}.test")
                for i in range(PER_CONNECTION):
                    token = f"c{n}m{i}"
                    to = [f"{users[(n + i) % 5]}@pokey.onl"]
                    refused = client.sendmail(
                        "load@example.test",
                        to,
                        f"Subject: {token}\r\n\r\n{token}\r\n" + ("x" * 76 + "\r\n") * 26,
                    )
                    with lock:
                        replies.append((token, len(refused)))
        except BaseException as exc:
            errors.append(exc)

    started = time.monotonic()
    threads = [threading.Thread(target=sender, args=(n,)) for n in range(CONNECTIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    elapsed = time.monotonic() - started
    assert not errors, errors[:3]
    assert len(replies) == CONNECTIONS * PER_CONNECTION
    assert all(refused == 0 for _, refused in replies)

    seen: Counter[str] = Counter()
    for user in users:
        for message in mail.stored(user):
            seen[split_trace(message)[1].split(b"\n")[0].removeprefix(b"Subject: ").decode()] += 1
    expected = {f"c{n}m{i}" for n in range(CONNECTIONS) for i in range(PER_CONNECTION)}
    assert set(seen) == expected
    assert set(seen.values()) == {1}
    print(f"\n1000 messages in {elapsed:.1f} s ({1000 / elapsed:.0f}/s)")
