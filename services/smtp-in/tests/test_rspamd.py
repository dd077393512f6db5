"""smtp_in.rspamd against a real rspamd on loopback (mailstack.rspamd; with Knot DNS for its own
SPF check), and against servers that answer badly: a closed port, silence, junk. Each action
comes from a Subject marker the launcher's rules know (mailstack.rspamd.MARKERS)."""

from __future__ import annotations

import asyncio
import smtplib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Literal

import pytest
from mailstack.dnsserver import AuthoritativeDns, txt
from mailstack.logs import wait_for_records
from mailstack.ports import free_port, wait_until
from mailstack.rspamd import MARKERS
from mailstack.rspamd import Rspamd as RspamdServer
from mailstack.stack import Stack
from smtp_in.rspamd import (
    MAX_REPLY,
    REJECT_REPLY,
    SOFT_REJECT_REPLY,
    TEMPFAIL_REPLY,
    Rspamd,
    SpamVerdict,
)
from smtp_testlib import Mail, SmtpProcess, split_trace

HOST = "127.0.0.1"


@pytest.fixture(scope="module")
def rspamd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RspamdServer]:
    with RspamdServer(Path(tmp_path_factory.mktemp("rspamd"))) as server:
        yield server


def message(subject: str, body: bytes = b"Hello Bob,\r\n\r\nsee you at noon.\r\n") -> bytes:
    return (
        b"Authentication-Results: mx.pokey.onl; spf=pass smtp.mailfrom=alice@sender.example\r\n"
        b"Date: Wed, 02 Dec 2026 06:00:00 +0000\r\n"
        b"Message-ID: <lunch.1@sender.example>\r\n"
        b"From: Alice <alice@sender.example>\r\n"
        b"To: Bob <bob@pokey.onl>, Carol <carol@pokey.onl>\r\n"
        b"Subject: " + subject.encode() + b"\r\n"
        b"MIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=us-ascii\r\n"
        b"\r\n" + body
    )


Fail = Literal["accept", "tempfail"]


async def scan_once(
    url: str,
    data: bytes,
    *,
    queue_id: str = "0123456789abcdef",
    fail: Fail = "accept",
    timeout: float = 10.0,
    password: str = "",
) -> SpamVerdict:
    """One scan by a scanner of its own, from alice to bob and carol."""
    scanner = Rspamd(url, mta_name="mx.pokey.onl", timeout=timeout, fail=fail, password=password)
    try:
        return await scanner.scan(
            data,
            ip="192.0.2.77",
            helo="mail.sender.example",
            mail_from="alice@sender.example",
            recipients=["bob@pokey.onl", "carol@pokey.onl"],
            queue_id=queue_id,
        )
    finally:
        await scanner.aclose()


def scan(
    url: str, data: bytes, queue_id: str = "0123456789abcdef", fail: Fail = "accept"
) -> SpamVerdict:
    return asyncio.run(scan_once(url, data, queue_id=queue_id, fail=fail))


def test_reject_is_550(rspamd: RspamdServer) -> None:
    verdict = scan(rspamd.url, message(f"lunch {MARKERS['reject']}"))
    assert verdict.action == "reject"
    assert verdict.reply == REJECT_REPLY and verdict.reply.startswith("550 5.7.1 ")
    assert verdict.reachable and verdict.headers == b""
    assert "MAILDROP_TEST_REJECT" in verdict.symbols
    assert verdict.score is not None and verdict.required is not None
    assert verdict.score >= verdict.required


def test_soft_reject_is_451(rspamd: RspamdServer) -> None:
    verdict = scan(rspamd.url, message(f"lunch {MARKERS['soft reject']}"))
    assert verdict.action == "soft reject"
    assert verdict.reply == SOFT_REJECT_REPLY and verdict.reply.startswith("451 4.7.1 ")
    assert verdict.headers == b""


@pytest.mark.parametrize("action", ["add header", "rewrite subject", "discard"])
def test_spam_is_accepted_with_x_spam(rspamd: RspamdServer, action: str) -> None:
    """``discard`` stands for the actions we do not act on: tagged, never dropped."""
    verdict = scan(rspamd.url, message(f"lunch {MARKERS[action]}"))
    assert verdict.action == action
    assert verdict.reply is None
    assert verdict.score is not None
    assert verdict.headers == f"X-Spam: Yes\r\nX-Spam-Score: {verdict.score:.2f}\r\n".encode()


@pytest.mark.parametrize(
    ("subject", "action"),
    [("lunch at noon", "no action"), (f"lunch {MARKERS['greylist']}", "greylist")],
)
def test_ham_and_greylist_are_accepted_as_they_are(
    rspamd: RspamdServer, subject: str, action: str
) -> None:
    verdict = scan(rspamd.url, message(subject))
    assert verdict.action == action
    assert verdict.reply is None and verdict.headers == b""
    assert verdict.reachable and verdict.score is not None


def _logged(rspamd: RspamdServer, queue_id: str) -> str:
    """rspamd's log line for the scan of ``queue_id``."""
    return wait_until(
        lambda: next((x for x in rspamd.logs().splitlines() if f"qid: <{queue_id}>" in x), None),
        30,
        f"rspamd's log line for {queue_id}",
    )


def test_rspamd_reads_the_envelope_headers(rspamd: RspamdServer) -> None:
    """rspamd logs the envelope it was given: queue id, client address, sender, recipients."""
    scan(rspamd.url, message("envelope check"), queue_id="feedc0ffee000001")
    line = _logged(rspamd, "feedc0ffee000001")
    assert "ip: 192.0.2.77," in line
    assert "from: <alice@sender.example>" in line
    assert "rcpts: <bob@pokey.onl,carol@pokey.onl>" in line


def test_a_large_message_is_scanned_whole(rspamd: RspamdServer) -> None:
    """Sent in many pieces, under one Content-Length; rspamd reads all of it."""
    body = b"".join(b"line %06d of a long letter\r\n" % i for i in range(100_000))
    data = message("long letter", body)
    verdict = scan(rspamd.url, data, queue_id="feedc0ffee000002")
    assert verdict.reachable and verdict.action == "no action"
    assert f"len: {len(data)}," in _logged(rspamd, "feedc0ffee000002")


@pytest.mark.parametrize(
    ("fail", "reply", "headers"),
    [
        ("accept", None, b"X-Spam-Checker: unavailable\r\n"),
        ("tempfail", TEMPFAIL_REPLY, b""),
    ],
)
def test_unreachable(fail: Fail, reply: str | None, headers: bytes) -> None:
    verdict = scan(f"http://{HOST}:{free_port(HOST)}", message("nobody listens"), fail=fail)
    assert not verdict.reachable
    assert verdict.reply == reply and verdict.headers == headers
    assert verdict.action == "unavailable" and verdict.score is None


class BadServer:
    """An HTTP server in the test's event loop that reads one request and answers ``answer``
    (None: nothing, the connection stays open); it keeps what it was sent."""

    def __init__(self, answer: bytes | None) -> None:
        self.answer = answer
        self.requests: list[bytes] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(
                int(line.split(b":", 1)[1])
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length:")
            )
            self.requests.append(head + await reader.readexactly(length))
            if self.answer is None:
                await asyncio.Event().wait()  # until the test's loop ends
            else:
                writer.write(self.answer)
                await writer.drain()
        finally:
            writer.close()

    async def scan(
        self, data: bytes, fail: Fail = "accept", timeout: float = 10.0, password: str = ""
    ) -> SpamVerdict:
        server = await asyncio.start_server(self._serve, HOST, 0)
        port = server.sockets[0].getsockname()[1]
        try:
            url = f"http://{HOST}:{port}"
            return await scan_once(url, data, fail=fail, timeout=timeout, password=password)
        finally:
            server.close()


def _http(status: str, body: bytes) -> bytes:
    return b"HTTP/1.1 " + status.encode() + b"\r\nContent-Length: %d\r\n\r\n" % len(body) + body


@pytest.mark.parametrize(
    "answer",
    [
        b"SPAM? NO IDEA\r\n",  # not HTTP
        _http("200 OK", b"<html>not json</html>"),
        _http("200 OK", b'{"score": 3.0}'),  # no action
        _http("200 OK", b'["reject"]'),
        _http("500 Internal Server Error", b'{"error": "oops"}'),
        _http("200 OK", b'{"action": "reject", "pad": "' + b"x" * MAX_REPLY + b'"}'),
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"x" * (MAX_REPLY + 1),  # no length
    ],
    ids=["not-http", "not-json", "no-action", "not-object", "status-500", "too-long", "unframed"],
)
@pytest.mark.parametrize("fail", ["accept", "tempfail"])
def test_a_bad_reply_is_unavailable(answer: bytes, fail: Fail) -> None:
    verdict = asyncio.run(BadServer(answer).scan(message("lunch"), fail=fail))
    assert not verdict.reachable and verdict.action == "unavailable"
    assert verdict.reply == (TEMPFAIL_REPLY if fail == "tempfail" else None)


def test_no_answer_within_the_timeout_is_unavailable() -> None:
    verdict = asyncio.run(BadServer(None).scan(message("lunch"), timeout=0.5, fail="tempfail"))
    assert not verdict.reachable and verdict.reply == TEMPFAIL_REPLY


def test_the_request_carries_the_envelope_and_the_message() -> None:
    server = BadServer(_http("200 OK", b'{"action": "no action", "score": 0.5}'))
    data = message("lunch", b"x" * 300_000 + b"\r\n")
    verdict = asyncio.run(server.scan(data, password="s3cret"))
    assert verdict.reachable and verdict.action == "no action" and verdict.score == 0.5
    [request] = server.requests
    head, body = request.split(b"\r\n\r\n", 1)
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /checkv2 HTTP/1.1"
    for expected in (
        b"IP: 192.0.2.77",
        b"Helo: mail.sender.example",
        b"From: alice@sender.example",
        b"Rcpt: bob@pokey.onl",
        b"Rcpt: carol@pokey.onl",
        b"Queue-Id: 0123456789abcdef",
        b"MTA-Name: mx.pokey.onl",
        b"Password: s3cret",
        b"Content-Length: %d" % len(data),
    ):
        assert expected in lines
    assert body == data


def test_rspamd_checks_spf_itself_whatever_authentication_results_says(tmp_path: Path) -> None:
    """The message says ``spf=pass`` (our verdict); rspamd asks DNS itself and finds ``-all``."""
    with AuthoritativeDns(tmp_path / "knot") as dns:
        dns.serve("sender.example", [f"@ TXT {txt('v=spf1 ip4:198.51.100.0/24 -all')}"])
        with RspamdServer(tmp_path / "rspamd", nameserver=dns.nameserver) as server:
            verdict = scan(server.url, message("lunch at noon"))
    assert verdict.reachable
    assert "R_SPF_FAIL" in verdict.symbols


# --- Through smtp-in: rspamd's action decides the reply and the flags -------------------------------
def smtp_send(port: int, user: str, data: bytes) -> tuple[int, bytes]:
    with smtplib.SMTP(HOST, port, local_hostname="client.test", timeout=60) as client:
        client.ehlo()
        assert client.mail("alice@sender.example")[0] == 250
        assert client.rcpt(f"{user}@pokey.onl")[0] == 250
        try:
            return client.data(data)
        except smtplib.SMTPDataError as exc:
            return exc.smtp_code, exc.smtp_error


@pytest.fixture(scope="module")
def scanning(
    stack: Stack, rspamd: RspamdServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SmtpProcess]:
    proc = SmtpProcess(
        stack, {"RSPAMD_URL": rspamd.url}, tmp_path_factory.mktemp("scan") / "smtp-in.log"
    )
    yield proc
    proc.terminate()


@pytest.mark.parametrize(
    ("marker", "code", "text"),
    [("reject", 550, REJECT_REPLY), ("soft reject", 451, SOFT_REJECT_REPLY)],
)
def test_smtp_in_refuses_what_rspamd_refuses(
    mail: Mail, scanning: SmtpProcess, marker: str, code: int, text: str
) -> None:
    user = mail.add_user()
    reply = smtp_send(scanning.port, user, message(f"Offer {MARKERS[marker]}"))
    assert reply == (code, text[4:].encode())
    assert mail.stored(user) == []
    result = f"spam_{marker.replace(' ', '_')}"
    record = wait_for_records(scanning.logs, {"event": "message", "result": result})[-1]
    assert record["spam"] == marker


def test_smtp_in_flags_what_rspamd_tags(mail: Mail, scanning: SmtpProcess) -> None:
    user = mail.add_user()
    assert smtp_send(scanning.port, user, message(f"Offer {MARKERS['add header']}"))[0] == 250
    trace, rest = split_trace(mail.stored(user)[0])
    assert b"X-Spam: Yes" in trace
    assert any(line.startswith(b"X-Spam-Score: ") for line in trace)
    assert rest.startswith(b"Authentication-Results: mx.pokey.onl;")  # another authserv-id's


def test_smtp_in_stores_clean_mail_unflagged(mail: Mail, scanning: SmtpProcess) -> None:
    user = mail.add_user()
    assert smtp_send(scanning.port, user, message("Lunch"))[0] == 250
    trace, _ = split_trace(mail.stored(user)[0])
    assert not any(line.startswith(b"X-Spam") for line in trace)


@pytest.mark.parametrize(("fail", "code"), [("accept", 250), ("tempfail", 451)])
def test_smtp_in_with_rspamd_down(
    mail: Mail, stack: Stack, spawn_smtp: Callable[..., SmtpProcess], fail: str, code: int
) -> None:
    proc = spawn_smtp(stack, RSPAMD_URL=f"http://{HOST}:{free_port()}", RSPAMD_FAIL=fail)
    user = mail.add_user()
    reply = smtp_send(proc.port, user, message("Lunch"))
    assert reply[0] == code
    if code == 250:
        assert b"X-Spam-Checker: unavailable" in split_trace(mail.stored(user)[0])[0]
    else:
        assert reply[1] == TEMPFAIL_REPLY[4:].encode()
        assert mail.stored(user) == []
