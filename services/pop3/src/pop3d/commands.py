"""The command table: (state, command) → one small handler, like Dovecot's pop3-commands.c.

Every handler takes the session and the raw argument bytes (the line after the command and one
space) and parses them with :class:`pop3d.parser.Args`.
"""

from __future__ import annotations

import asyncio
import re
import ssl
from collections.abc import Awaitable, Callable

from mailcommon.client import MailstoreError, NotFound
from mailcommon.logging import get_logger
from mailcommon.sasl import SaslError, decode_plain

from pop3d import __version__
from pop3d.auth import (
    end_session_lease,
    fail_login,
    login,
    refuse,
    usable_name,
)
from pop3d.parser import ArgError, Args, NoSuchMessage
from pop3d.protocol import (
    MAX_SASL_LINE,
    LineTooLong,
    discard_buffered,
    multiline,
    read_line,
    reply,
)
from pop3d.session import Session
from pop3d.snapshot import Snapshot
from pop3d.state import AbortSession, State
from pop3d.transfer import encode_message, stream_message

log = get_logger(__name__)

Handler = Callable[[Session, bytes], Awaitable[None]]

_APOP_DIGEST = re.compile(rb"[0-9a-fA-F]{32}")
IMPLEMENTATION = f"pop3d-{__version__}"
#: Messages up to this size (W) are read whole from the mailstore and sent in one write.
SMALL_MESSAGE = 64 * 1024
NO_PLAINTEXT = "[AUTH] plain-text login is not allowed without TLS; use STLS or the POP3S port"


def _snapshot(s: Session) -> Snapshot:
    assert s.snapshot is not None  # TRANSACTION always has one
    return s.snapshot


def _live_msg(s: Session, value: int) -> int:
    """A parsed message number that must not be marked as deleted."""
    if _snapshot(s).is_deleted(value):
        raise NoSuchMessage(f"message {value} already deleted")
    return value


# --- any state ---------------------------------------------------------------------------------


def capabilities(s: Session) -> list[bytes]:
    """RFC 2449 CAPA: exactly what works in this session's state, on this connection now."""
    caps = [b"TOP", b"UIDL", b"RESP-CODES", b"PIPELINING"]
    if s.state is State.AUTHORIZATION:
        caps.append(b"AUTH-RESP-CODE")
        if s.plaintext_ok:
            caps += [b"USER", b"SASL PLAIN"]
        if not s.tls:
            caps.append(b"STLS")
    caps.append(b"IMPLEMENTATION " + IMPLEMENTATION.encode())
    return caps


async def cmd_capa(s: Session, arg: bytes) -> None:
    Args(arg).done()
    await s.send(multiline(b"+OK capability list follows\r\n", capabilities(s)))


async def cmd_quit(s: Session, arg: bytes) -> None:
    Args(arg).done()
    s.closing = True
    if s.state is State.TRANSACTION:
        await update(s)
    else:
        s.result = "quit"
        await s.ok(f"{s.ctx.settings.mail_hostname} POP3 server signing off")


async def update(s: Session) -> None:
    """RFC 1939 UPDATE: expunge the marked messages under the lease, then give the lease back."""
    s.state = State.UPDATE
    snap = _snapshot(s)
    marked = snap.marked_ids()
    assert s.lease is not None and s.user is not None
    if not marked:
        await end_session_lease(s)
        s.result = "quit"
        await s.ok(f"{s.ctx.settings.mail_hostname} POP3 server signing off")
        return
    if not s.ctx.keeper.valid(s.lease):
        await end_session_lease(s)
        s.result = "lease_lost"
        await s.err("[SYS/TEMP] maildrop lock was lost; no messages deleted, try again")
        return
    lease = s.lease.lease
    try:
        gone = set(await s.ctx.client.expunge(s.user, marked, lease.token, lease.fence))
    except MailstoreError as exc:
        await end_session_lease(s)
        s.result = f"expunge_failed:{exc.code}"
        await s.err("[SYS/TEMP] could not delete the marked messages; try again later")
        return
    await end_session_lease(s)
    s.stats.deleted = len(gone & set(marked))
    if s.stats.deleted < len(marked):
        s.result = "expunge_incomplete"
        await s.err("[SYS/TEMP] some marked messages could not be deleted")
        return
    s.result = "quit"
    await s.ok(
        f"{s.ctx.settings.mail_hostname} POP3 server signing off "
        f"({len(snap) - len(marked)} messages left)"
    )


# --- AUTHORIZATION -----------------------------------------------------------------------------


async def refused_without_tls(s: Session) -> bool:
    """Answer ``-ERR [AUTH]`` (and log the refusal) when a password may not be sent in clear here."""
    if s.plaintext_ok:
        return False
    refuse(s, "plaintext_refused", None)
    await s.err(NO_PLAINTEXT)
    return True


async def cmd_user(s: Session, arg: bytes) -> None:
    args = Args(arg)
    name = args.word()
    args.done()
    if await refused_without_tls(s):
        return
    s.user_hint = name
    await s.ok("send PASS")


async def cmd_pass(s: Session, arg: bytes) -> None:
    password = Args(arg).rest()
    if await refused_without_tls(s):
        return
    if s.user_hint is None:
        await s.err("send USER first")
        return
    raw_name, s.user_hint = s.user_hint, None
    name = usable_name(raw_name)
    if name is None:
        await login_failed_early(s, raw_name)
        return
    try:
        text = password.decode("utf-8")
    except UnicodeDecodeError:
        await login_failed_early(s, raw_name)
        return
    await login(s, name, lambda: s.ctx.client.verify_password(name, text), password=text)


async def login_failed_early(s: Session, raw_name: bytes) -> None:
    """Credentials that cannot be anybody's: the same answer and delay as a wrong password."""
    await fail_login(s, raw_name.decode("utf-8", "replace")[:64])


async def cmd_apop(s: Session, arg: bytes) -> None:
    args = Args(arg)
    name_b, digest = args.word(), args.word()
    args.done()
    if not s.ctx.settings.apop_enabled:
        await s.err("[AUTH] APOP is not enabled on this server")
        return
    name = usable_name(name_b)
    if name is None or not _APOP_DIGEST.fullmatch(digest):
        await login_failed_early(s, name_b)
        return
    hexdigest = digest.decode().lower()
    await login(s, name, lambda: s.ctx.client.verify_apop(name, s.timestamp, hexdigest))


async def cmd_auth(s: Session, arg: bytes) -> None:
    args = Args(arg)
    mech, initial = args.opt_word(), args.opt_word()
    args.done()
    if mech is None:  # RFC 1734-style mechanism list, which some clients ask for
        await s.send(
            multiline(b"+OK SASL mechanisms follow\r\n", [b"PLAIN"] if s.plaintext_ok else [])
        )
        return
    if mech.upper() != b"PLAIN":
        await s.err("unsupported authentication mechanism")
        return
    if await refused_without_tls(s):
        return
    if initial is None:
        await s.send(b"+ \r\n")
        try:
            async with asyncio.timeout(s.ctx.settings.pop3_auth_timeout):
                response = await read_line(s.reader, MAX_SASL_LINE)
        except LineTooLong:
            await s.err("[AUTH] authentication line too long")
            return
        if response is None:
            s.closing = True
            return
        if response == b"*":
            await s.err("authentication cancelled")
            return
        initial = response
    try:
        name, password = decode_plain(initial)
    except SaslError:
        await login_failed_early(s, b"")
        return
    await login(s, name, lambda: s.ctx.client.verify_password(name, password), password=password)


async def cmd_stls(s: Session, arg: bytes) -> None:
    Args(arg).done()
    if s.tls:
        await s.err("already using TLS")
        return
    await s.ok("begin TLS negotiation")
    # Anything the client pipelined after STLS was sent in clear text: never execute it.
    discard_buffered(s.reader)
    try:
        async with asyncio.timeout(s.ctx.settings.pop3_tls_handshake_timeout):
            await s.writer.start_tls(s.ctx.tls)
    except (ssl.SSLError, OSError, TimeoutError) as exc:
        s.result = "tls_failed"
        log.info("tls_failed", sid=s.sid, error=str(exc))
        raise AbortSession from exc
    s.tls = True
    s.user_hint = None  # RFC 2595: forget what was said before TLS


# --- TRANSACTION -------------------------------------------------------------------------------


async def cmd_stat(s: Session, arg: bytes) -> None:
    Args(arg).done()
    count, size = _snapshot(s).stat()
    await s.ok(f"{count} {size}")


async def cmd_list(s: Session, arg: bytes) -> None:
    snap = _snapshot(s)
    await _scan_listing(
        s, arg, snap.sizes, lambda: b"+OK %d messages (%d octets)\r\n" % snap.stat()
    )


async def cmd_uidl(s: Session, arg: bytes) -> None:
    await _scan_listing(s, arg, _snapshot(s).ids, lambda: b"+OK unique-id listing follows\r\n")


async def _scan_listing(
    s: Session, arg: bytes, column: list[int] | list[str], header: Callable[[], bytes]
) -> None:
    """LIST and UIDL (RFC 1939 5): with a message number, ``+OK n value`` for that message;
    without, ``header()`` and a line ``n value`` for each message not marked as deleted."""
    snap = _snapshot(s)
    args = Args(arg, len(snap))
    n = args.opt_msg()
    args.done()
    if n is not None:
        msg = _live_msg(s, n)
        await s.ok(f"{msg} {column[msg - 1]}")
        return
    lines = [f"{i} {column[i - 1]}".encode() for i in snap.live()]
    await s.send(multiline(header(), lines))


async def _send_message(s: Session, n: int, top: int | None) -> None:
    """RETR/TOP. Small messages are read whole (the mailstore connection is free again before
    the client has read a byte) and sent in one write; larger ones are streamed chunk by chunk
    with back-pressure, so memory stays bounded whatever the size and the reader's speed.
    A small message comes from the session's prefetch when it is there, else is read in one
    batch with the small messages after it (:mod:`pop3d.prefetch`)."""
    snap = _snapshot(s)
    assert s.user is not None
    size = snap.sizes[n - 1]
    head = reply(True, f"{size} octets" if top is None else "top of message follows")
    data = await s.prefetch.read(s.user, snap, n, SMALL_MESSAGE)
    if data is not None:
        await s.send(head + encode_message(data, top))
        if top is None:
            s.stats.retrieved += 1
        return
    started = False
    try:
        async with s.ctx.client.open_message(s.user, snap.ids[n - 1]) as response:
            if size <= SMALL_MESSAGE:
                body = await response.aread()
            else:
                await s.send(head)
                started = True
                sent = await stream_message(response.aiter_raw(), s.writer, top, s.drain)
                s.stats.octets_sent += sent
        if not started:
            await s.send(head + encode_message(body, top))
    except NotFound:
        if started:
            raise AbortSession from None
        await s.err(f"[SYS/PERM] message {n} is no longer available")
        return
    except MailstoreError as exc:
        if started:
            s.result = f"retr_failed:{exc.code}"
            raise AbortSession from exc
        await s.err("[SYS/TEMP] message temporarily unavailable, try again later")
        return
    if top is None:
        s.stats.retrieved += 1


async def cmd_retr(s: Session, arg: bytes) -> None:
    args = Args(arg, len(_snapshot(s)))
    n = args.msg()
    args.done()
    await _send_message(s, _live_msg(s, n), None)


async def cmd_top(s: Session, arg: bytes) -> None:
    args = Args(arg, len(_snapshot(s)))
    n, lines = args.msg(), args.lines()
    args.done()
    await _send_message(s, _live_msg(s, n), lines)


async def cmd_dele(s: Session, arg: bytes) -> None:
    args = Args(arg, len(_snapshot(s)))
    n = args.msg()
    args.done()
    msg = _live_msg(s, n)
    _snapshot(s).mark(msg)
    s.prefetch.discard(msg)
    await s.ok(f"message {msg} deleted")


async def cmd_noop(s: Session, arg: bytes) -> None:
    Args(arg).done()
    await s.ok()


async def cmd_rset(s: Session, arg: bytes) -> None:
    Args(arg).done()
    snap = _snapshot(s)
    snap.reset()
    count, size = snap.stat()
    await s.ok(f"maildrop has {count} messages ({size} octets)")


async def cmd_last(s: Session, arg: bytes) -> None:
    await s.err("LAST is not supported (removed in RFC 1939)")


TABLE: dict[State, dict[bytes, Handler]] = {
    State.AUTHORIZATION: {
        b"CAPA": cmd_capa,
        b"USER": cmd_user,
        b"PASS": cmd_pass,
        b"APOP": cmd_apop,
        b"AUTH": cmd_auth,
        b"STLS": cmd_stls,
        b"QUIT": cmd_quit,
    },
    State.TRANSACTION: {
        b"CAPA": cmd_capa,
        b"STAT": cmd_stat,
        b"LIST": cmd_list,
        b"RETR": cmd_retr,
        b"DELE": cmd_dele,
        b"NOOP": cmd_noop,
        b"RSET": cmd_rset,
        b"TOP": cmd_top,
        b"UIDL": cmd_uidl,
        b"LAST": cmd_last,
        b"QUIT": cmd_quit,
    },
    State.UPDATE: {},
}
KNOWN: frozenset[bytes] = frozenset(name for table in TABLE.values() for name in table)


async def dispatch(s: Session, line: bytes) -> None:
    """Run one command line."""
    s.commands += 1
    name, _, arg = line.partition(b" ")
    key = name.upper()
    s.prefetch.after(key)
    handler = TABLE[s.state].get(key)
    if handler is None:
        await s.bad("command not valid in this state" if key in KNOWN else "unknown command")
        return
    try:
        await handler(s, arg)
    except NoSuchMessage as exc:
        await s.err(str(exc))
    except ArgError as exc:
        await s.bad(str(exc))
