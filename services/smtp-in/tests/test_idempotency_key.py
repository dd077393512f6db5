"""smtp-in sends its transaction id as each delivery's Idempotency-Key, and resends a delivery
whose connection dropped, once, with the same key: here against a mailstore stand-in of the
test's own (a real HTTP server on loopback) that drops the first delivery without a reply."""

from __future__ import annotations

import json
import re
import smtplib
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from smtp_testlib import HOST, Mail, SmtpProcess


class Recorder(BaseHTTPRequestHandler):
    """Every recipient exists; the first delivery's connection is closed unanswered."""

    protocol_version = "HTTP/1.1"
    posts: list[tuple[dict[str, str], bytes]] = []

    def _answer(self, status: int, body: dict[str, object]) -> None:
        payload = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def do_GET(self) -> None:
        address = self.path.rsplit("/", 1)[-1]
        self._answer(200, {"address": address, "accounts": [address], "limited": False})

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.posts.append(({k.lower(): v for k, v in self.headers.items()}, body))
        if len(self.posts) == 1:
            self.close_connection = True  # the message may have been stored: no answer
            return
        self._answer(200, {"id": "1.M1.stand-in", "recipients": ["alice"], "size": len(body)})

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def stand_in() -> Iterator[str]:
    server = ThreadingHTTPServer((HOST, 0), Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Recorder.posts = []
    yield f"http://{HOST}:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_a_dropped_delivery_is_resent_once_with_the_transaction_id(
    mail: Mail, stand_in: str, spawn_smtp: Callable[..., SmtpProcess]
) -> None:
    server = spawn_smtp(mail.stack, MAILSTORE_URL=stand_in)
    with smtplib.SMTP(HOST, server.port, local_hostname="client.test", timeout=30) as client:
        client.ehlo()
        client.mail("bob@example.org")
        assert client.rcpt("alice@pokey.onl")[0] == 250
        code, reply = client.data(b"Subject: once\r\n\r\nhello\r\n")
    assert (code, reply) == (250, b"2.0.0 Ok: queued as 1.M1.stand-in")
    assert len(Recorder.posts) == 2
    (first_headers, first_body), (second_headers, second_body) = Recorder.posts
    found = re.search(rb"with E?SMTP\w* id ([0-9a-f]{16})", first_body)
    assert found is not None
    key = found.group(1).decode()
    assert first_headers["idempotency-key"] == second_headers["idempotency-key"] == key
    assert first_body == second_body
