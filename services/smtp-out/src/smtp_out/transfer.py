"""One SMTP transaction with one remote MX address, over aiosmtplib.

Why aiosmtplib: it is the maintained asyncio SMTP client (typed, on PyPI since 2016, the client
aiosmtpd's own docs point to); it speaks ESMTP, STARTTLS on an existing connection, SIZE and
SMTPUTF8, dot-stuffs and normalises line ends in DATA, and raises one exception class per reply
kind with the code and text, which is all a relay needs. A hand-written client would re-do
exactly that (and the TLS upgrade of an asyncio transport) with less testing; the standard
library's smtplib blocks, so every delivery would need a thread.

The session: connect (``SMTP_OUT_CONNECT_TIMEOUT``), greeting, ``EHLO MAIL_HOSTNAME`` (``HELO``
when EHLO is refused), STARTTLS whenever offered (opportunistic, RFC 7435: the certificate is not
verified, since nothing says which name it should carry; MTA-STS, which would, is not done),
``MAIL FROM`` (with SIZE, BODY=8BITMIME and SMTPUTF8 when they apply and are offered), one ``RCPT``
per recipient, ``DATA``, ``QUIT``. Every reply is kept as the recipient's result: 2xx delivered,
5xx failed, 4xx deferred.

What cannot be a recipient's answer is :class:`HostUnusable` (no connection, no greeting, a
drop before DATA): nothing was sent, so the caller tries the next address or MX host. A failed
TLS handshake is :class:`TlsFailed`: the caller connects once more to the same address without
STARTTLS, since opportunistic TLS must not keep mail from a receiver that offers TLS it cannot
complete (an active attacker can strip STARTTLS from EHLO anyway; only MTA-STS or DANE stop
that). A connection lost after the message was sent is a deferral, never a try at another host:
the receiver may have taken the message, and a second copy should not go out sooner than the
back-off.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

import aiosmtplib

from smtp_out.results import Result, from_reply

MAX_REPLY = 4000


class HostUnusable(Exception):
    """Nothing was delivered through this address: try the next (``reply`` says why)."""

    def __init__(self, reply: str) -> None:
        super().__init__(reply)
        self.reply = reply


class TlsFailed(HostUnusable):
    """The STARTTLS handshake failed (the connection is gone)."""


@dataclass(frozen=True)
class Envelope:
    sender: str  # '' for the null sender
    recipients: list[str]
    message: bytes  # as it goes out: DKIM fields on top, CRLF line ends


@dataclass(frozen=True)
class Peer:
    """One remote MX address and how to talk to it."""

    address: str
    port: int
    host: str  # the MX host name (for the logs)
    helo: str  # our EHLO name (MAIL_HOSTNAME)
    connect_timeout: float
    command_timeout: float


@dataclass(frozen=True)
class Transcript:
    """What one transaction gave: a result per recipient, and whether TLS carried it."""

    results: dict[str, Result]
    tls: str | None  # the TLS version, or None in clear


def opportunistic_context() -> ssl.SSLContext:
    """TLS without verification (RFC 7435): encrypted against a passive listener, no more."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def reply_text(code: int, message: str) -> str:
    """A reply as one line: ``"250 2.0.0 Ok"`` (multi-line texts joined with spaces)."""
    text = " ".join(line.strip() for line in str(message).splitlines() if line.strip())
    return f"{code} {text}".strip()[:MAX_REPLY]


def _needs_smtputf8(envelope: Envelope) -> bool:
    return not all(a.isascii() for a in (envelope.sender, *envelope.recipients))


#: A session that broke: aiosmtplib's errors (disconnects, timeouts, an unexpected state) and the
#: socket's own (ssl.SSLError, a failed handshake, is an OSError).
_BROKEN = (aiosmtplib.SMTPException, OSError, TimeoutError)


async def deliver(peer: Peer, envelope: Envelope, tls: ssl.SSLContext | None) -> Transcript:
    """Send ``envelope`` to ``peer``, STARTTLS with ``tls`` when offered (None: never)."""
    client = aiosmtplib.SMTP(
        hostname=peer.address,
        port=peer.port,
        local_hostname=peer.helo,
        timeout=peer.command_timeout,
        use_tls=False,
        start_tls=False,
    )
    try:
        await client.connect(timeout=peer.connect_timeout)
    except aiosmtplib.SMTPResponseException as exc:  # a 4xx/5xx greeting
        raise HostUnusable(reply_text(exc.code, exc.message)) from exc
    except _BROKEN as exc:
        raise HostUnusable(
            f"451 4.4.1 Cannot connect to {peer.host} [{peer.address}]: {exc}"
        ) from exc
    try:
        transcript = await _session(client, peer, envelope, tls)
    except BaseException:
        client.close()  # a broken session is not worth a QUIT
        raise
    try:
        await client.quit(timeout=min(peer.command_timeout, 10.0))
    except _BROKEN:
        pass  # the results stand; the receiver ends the session itself
    finally:
        client.close()
    return transcript


async def _greet(client: aiosmtplib.SMTP, peer: Peer) -> None:
    try:
        try:
            await client.ehlo()
        except aiosmtplib.SMTPHeloError:
            await client.helo()
    except aiosmtplib.SMTPResponseException as exc:
        raise HostUnusable(reply_text(exc.code, exc.message)) from exc
    except _BROKEN as exc:
        raise HostUnusable(f"451 4.4.2 {peer.host} [{peer.address}] lost at EHLO: {exc}") from exc


async def _session(
    client: aiosmtplib.SMTP, peer: Peer, envelope: Envelope, tls: ssl.SSLContext | None
) -> Transcript:
    await _greet(client, peer)
    version = await _starttls(client, peer, tls) if tls is not None else None
    return await _transaction(client, peer, envelope, version)


async def _starttls(client: aiosmtplib.SMTP, peer: Peer, tls: ssl.SSLContext) -> str | None:
    """STARTTLS when offered; the TLS version, or None when the session stays in clear."""
    if not client.supports_extension("starttls"):
        return None
    try:
        await client.starttls(tls_context=tls)
    except aiosmtplib.SMTPResponseException:
        return None  # STARTTLS refused (454): the session goes on in clear (RFC 3207 4)
    except _BROKEN as exc:
        raise TlsFailed(f"451 4.7.5 TLS with {peer.host} [{peer.address}] failed: {exc}") from exc
    await _greet(client, peer)  # RFC 3207 4.2: forget what was said before TLS
    transport = client.transport
    tls_object = transport.get_extra_info("ssl_object") if transport else None
    return str(tls_object.version()) if tls_object is not None else "TLS"


async def _transaction(
    client: aiosmtplib.SMTP, peer: Peer, envelope: Envelope, version: str | None
) -> Transcript:
    results: dict[str, Result] = {}
    options: list[str] = []
    encoding = "ascii"
    if client.supports_extension("size"):
        options.append(f"SIZE={len(envelope.message)}")
    if not envelope.message.isascii() and client.supports_extension("8bitmime"):
        options.append("BODY=8BITMIME")
    if _needs_smtputf8(envelope):
        if not client.supports_extension("smtputf8"):
            reply = "550 5.6.7 The receiver does not support SMTPUTF8 for this address"
            return Transcript({r: from_reply(reply) for r in envelope.recipients}, version)
        options.append("SMTPUTF8")
        encoding = "utf-8"
    try:
        await client.mail(envelope.sender, options=options, encoding=encoding)
    except aiosmtplib.SMTPResponseException as exc:
        reply = reply_text(exc.code, exc.message)
        return Transcript({r: from_reply(reply) for r in envelope.recipients}, version)
    except _BROKEN as exc:
        raise HostUnusable(f"451 4.4.2 {peer.host} [{peer.address}] lost at MAIL: {exc}") from exc
    accepted: list[str] = []
    for recipient in envelope.recipients:
        try:
            await client.rcpt(recipient, encoding=encoding)
        except aiosmtplib.SMTPResponseException as exc:
            results[recipient] = from_reply(reply_text(exc.code, exc.message))
        except _BROKEN as exc:
            raise HostUnusable(
                f"451 4.4.2 {peer.host} [{peer.address}] lost at RCPT: {exc}"
            ) from exc
        else:
            accepted.append(recipient)
    if not accepted:
        return Transcript(results, version)
    try:
        response = await client.data(envelope.message)
    except aiosmtplib.SMTPResponseException as exc:
        outcome = from_reply(reply_text(exc.code, exc.message))
    except _BROKEN as exc:
        # The message may have arrived: a deferral, retried after the back-off (a lost 250).
        outcome = from_reply(f"451 4.4.2 {peer.host} [{peer.address}] lost during DATA: {exc}")
    else:
        outcome = from_reply(reply_text(response.code, response.message))
    results.update(dict.fromkeys(accepted, outcome))
    return Transcript(results, version)
