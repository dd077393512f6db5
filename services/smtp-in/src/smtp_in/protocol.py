"""One SMTP connection: aiosmtpd's ``SMTP`` with our limits, timeouts, reply codes and shutdown.

What this adds to aiosmtpd:

- connection limits: beyond the global or per-address limit the client gets ``421 4.7.0`` and the
  connection is closed before the handler ever sees it;
- an idle timeout between commands and a separate inactivity timeout while message data flows,
  each ending with ``421 4.4.2``;
- a command line with a NUL octet is refused, ``501 5.5.2``, whatever the verb;
- an RFC 3463 enhanced status code on every reply (RFC 2034: all but the greeting and the
  HELO/EHLO replies), rewriting the few aiosmtpd replies that lack one;
- the PROXY protocol (``PROXY_PROTOCOL=true``, :mod:`mailcommon.proxy`): a peer outside the
  trusted networks is closed at once; aiosmtpd reads the header before the greeting and calls
  the handler's ``handle_PROXY``, which hands it to :meth:`SMTPProtocol.proxied`; the client it
  names becomes ``session.peer`` (kept across STARTTLS) and is what the connection limits,
  log lines, ``Received:`` and SPF see;
- graceful shutdown: once the server drains, a new transaction gets ``421 4.3.2`` while the
  transactions already started run to their end;
- every ``421`` reply closes the connection (aiosmtpd 1.4.6 closes only after its own);
- one log line per refusal, with the session id bound through structlog's context variables.

The checks run in an override of each ``smtp_<VERB>`` method (aiosmtpd's documented extension
point); ``tests/test_protocol.py`` fails when aiosmtpd has a verb this class does not override.
aiosmtpd is pinned exactly (``pyproject.toml``). What this module still uses of aiosmtpd that is not
its public API, each guarded by a test that fails when aiosmtpd changes it:

- ``_getaddr`` is overridden: measured, aiosmtpd's creates a ``typing.Protocol`` class on every call
  (about 5 % of smtp-in's CPU per message); ``tests/test_addresses.py`` fails when aiosmtpd's
  differs from ours (or is gone), ``tests/test_protocol.py`` (``<a@`` refused as malformed) when
  MAIL and RCPT stop going through ours;
- ``_reader`` (the connection's ``StreamReader``) is swapped for a :class:`MeteredReader` during
  DATA, which grows the DATA memory reservation as octets arrive (aiosmtpd's DATA loop reads only
  through it); ``tests/test_memory_budget.py`` (an undeclared message outgrowing the room left is
  closed with a 421) fails when aiosmtpd reads message data elsewhere.

aiosmtpd's own timer (``timeout=``) is set so far off that it never fires: ours, armed at every
command and every octet of message data, closes with a ``421``.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import secrets
import ssl
from collections.abc import Callable, Coroutine
from email._header_value_parser import get_addr_spec, get_angle_addr
from email.errors import HeaderParseError
from typing import Any, AnyStr, TypeVar, cast

import structlog
from aiosmtpd.proxy_protocol import ProxyData
from aiosmtpd.smtp import SMTP, syntax
from mailcommon.connections import ConnectionRegistry
from mailcommon.idle import IdleTimer
from mailcommon.logging import get_logger
from mailcommon.proxy import ProxyPolicy
from mailcommon.smtpreplies import with_enhanced_code

from smtp_in import metrics
from smtp_in.handler import MailHandler, Transaction, declared_size
from smtp_in.headers import MAX_ADDED_HEADERS
from smtp_in.limits import BudgetExhausted, DataBudget, MeteredReader
from smtp_in.settings import SmtpSettings

log = get_logger(__name__)

_NUL_REPLY = "501 5.5.2 Syntax error: NUL octet in command line"
_SHUTDOWN_REPLY = "421 4.3.2 Service shutting down, try again later"
_TIMEOUT_REPLY = "421 4.4.2 Timeout exceeded, closing connection"
# aiosmtpd's own timeout, never reached: our timer (idle or DATA) closes first, with a 421.
_LIBRARY_TIMEOUT = 10 * 365 * 24 * 3600.0


_Verb = TypeVar("_Verb", bound=Callable[..., Coroutine[Any, Any, Any]])


def _command(method: _Verb) -> _Verb:
    """``smtp_<VERB>``: aiosmtpd's (or our) ``method`` behind our checks for every command.

    A NUL octet refuses the line; while the server drains, anything but QUIT outside a transaction
    gets the 421 that closes; the idle timer restarts (as aiosmtpd's does, at every known verb)."""
    verb = method.__name__.removeprefix("smtp_")

    @functools.wraps(method)  # keeps aiosmtpd's @syntax attributes for HELP
    async def run(self: SMTPProtocol, arg: str | None) -> None:
        self._arm_timer(self._idle_timeout)
        self._command = verb
        try:
            if arg is not None and "\0" in arg:
                await self.push(_NUL_REPLY)
            elif self._registry.draining and verb != "QUIT" and not self._in_transaction():
                await self.push(_SHUTDOWN_REPLY)
            else:
                self._busy = True
                await method(self, arg)
        finally:
            self._command, self._busy = None, False

    return cast(_Verb, run)


class SMTPProtocol(SMTP):
    """aiosmtpd's protocol for one connection, bound to a shared handler and registry."""

    def __init__(
        self,
        handler: MailHandler,
        *,
        settings: SmtpSettings,
        registry: ConnectionRegistry,
        budget: DataBudget,
        tls_context: ssl.SSLContext | None,
        proxy: ProxyPolicy | None,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        super().__init__(
            handler,
            # Room for our trace headers: everything we accept also fits the mailstore's limit.
            data_size_limit=settings.max_message_size - MAX_ADDED_HEADERS,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=settings.mail_hostname,
            ident="ESMTP",
            tls_context=tls_context,
            require_starttls=False,
            timeout=_LIBRARY_TIMEOUT,
            auth_require_tls=True,
            auth_exclude_mechanism=["LOGIN", "PLAIN"],
            proxy_protocol_timeout=None if proxy is None else proxy.timeout,
            loop=loop,
        )
        # aiosmtpd keeps these limits on the class, shared by every connection: keep ours here.
        self.command_size_limits = collections.defaultdict(lambda: SMTP.command_size_limit)
        self._registry = registry
        self._budget = budget
        self._budget_wait = settings.smtp_data_budget_wait
        self._idle_timeout = settings.smtp_idle_timeout
        self._data_timeout = settings.smtp_data_timeout
        self._timer = IdleTimer(self._timed_out)
        self.session_id = secrets.token_hex(6)
        self._proxy = proxy
        self._peer: tuple[str, int] = ("unknown", 0)
        self._ip = "unknown"
        self._connected = False
        self._refused = False
        self._greeted = False
        self._busy = False
        self._in_data = False
        self._command: str | None = None
        # Set by the handler when it has logged the outcome of the reply being sent (DATA).
        self.reply_logged = False

    def _getaddr(self, arg: str) -> tuple[str | None, str | None]:
        """Private in aiosmtpd, overridden as measured: aiosmtpd's address parse (``MAIL``/``RCPT``) with the same parser, without the
        ``typing.Protocol`` class aiosmtpd defines on every call (that class creation was about
        5 % of smtp-in's CPU per message), and with an address the parser trips over
        (``<a@``: IndexError, which aiosmtpd lets out as a 451) refused as malformed, 553 5.1.3.
        ``tests/test_addresses.py`` checks that it agrees with aiosmtpd's otherwise."""
        if not arg:
            return "", ""
        try:
            if arg.lstrip().startswith("<"):
                angle, rest = get_angle_addr(arg)
                addr: str = angle.addr_spec
            else:
                spec, rest = get_addr_spec(arg)
                addr = spec.addr_spec
        except (HeaderParseError, IndexError):
            return None, None
        if self.local_part_limit and len(addr.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return addr, rest

    # Connection life cycle ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._connected:  # the TLS transport after STARTTLS: same connection, same client
            super().connection_made(transport)
            assert self.session is not None  # aiosmtpd's new session has the balancer as peer
            self.session.peer = self._peer  # type: ignore[assignment]  # really (host, port)
            self._arm_timer(self._idle_timeout)
            return
        self._connected = True
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and peer:
            self._peer, self._ip = (str(peer[0]), int(peer[1])), str(peer[0])
        if self._proxy is not None:
            if not self._proxy.may_connect(self._ip):
                self._refused = True
                log.info("refused", session=self.session_id, client=self._ip, reason="untrusted")
                transport.close()
                return
            # aiosmtpd reads the header before its greeting, then calls proxied() (handle_PROXY).
            super().connection_made(transport)
            return
        refusal = self._registry.admit(self, self._ip)
        if refusal is not None:
            self._refused = True
            self._refuse(transport, refusal)
            return
        # The task aiosmtpd starts below copies this context: every line it logs has the session.
        structlog.contextvars.bind_contextvars(session=self.session_id, client=self._ip)
        super().connection_made(transport)
        self._arm_timer(self._idle_timeout)

    def proxied(self, data: ProxyData) -> bool:
        """The PROXY header has arrived (valid): whether the client it names is served."""
        assert self._proxy is not None and self.transport is not None and self.session
        client = self._proxy.client(data, self._peer)
        if client is None:
            log.info("refused", session=self.session_id, client=self._ip, reason="proxy_header")
            return False
        self._peer, self._ip = client, client[0]
        self.session.peer = client  # type: ignore[assignment]  # what the handler reads
        # aiosmtpd's task runs this: from here on, every line it logs has the real client.
        structlog.contextvars.bind_contextvars(session=self.session_id, client=self._ip)
        refusal = self._registry.admit(self, self._ip)
        if refusal is not None:
            self._refuse(self.transport, refusal)
            return False
        self._arm_timer(self._idle_timeout)
        return True

    def _refuse(self, transport: asyncio.BaseTransport, refusal: str) -> None:
        log.info("refused", session=self.session_id, client=self._ip, reply="421", reason=refusal)
        _close_with(
            transport,
            _SHUTDOWN_REPLY
            if refusal == "shutting_down"
            else "421 4.7.0 Too many connections, try again later",
        )

    def connection_lost(self, error: Exception | None) -> None:
        if self._refused:
            return
        self._timer.cancel()
        self._registry.release(self, self._ip)
        super().connection_lost(error)

    def eof_received(self) -> bool:
        # aiosmtpd ends the session on EOF (it cancels its task) but keeps the transport half
        # open for that task to close; on uvloop, seen with health probes (connect and close),
        # the connection then stayed open, holding its slot until the idle timeout.
        super().eof_received()
        return False  # the transport closes now

    def _arm_timer(self, seconds: float) -> None:
        """Close with a 421 unless another command or octet of data comes within ``seconds``
        (one lazily moved timer: a command or a segment of data costs no timer work)."""
        self._timer.arm(seconds)

    def _timed_out(self) -> None:
        log.info("timeout", data=self._in_data)
        _close_with(self.transport, _TIMEOUT_REPLY)

    def data_received(self, data: bytes) -> None:
        if self._in_data:
            self._arm_timer(self._data_timeout)
        super().data_received(data)

    # Graceful shutdown ----------------------------------------------------------------------
    def _in_transaction(self) -> bool:
        return self.envelope is not None and self.envelope.mail_from is not None

    def is_idle(self) -> bool:
        """Between transactions and not running a command: safe to close for shutdown."""
        return not self._busy and not self._in_transaction()

    def close_for_shutdown(self) -> None:
        """Tell an idle client we are going away (RFC 5321 3.8) and close."""
        _close_with(self.transport, _SHUTDOWN_REPLY)

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.close()

    # Commands -------------------------------------------------------------------------------
    @_command
    @syntax("DATA")
    async def smtp_DATA(self, arg: str) -> None:
        # A transaction may send what it declared (with slack for clients that count line ends
        # differently), never more than the limit. It reserves memory for all of that before the
        # 354; one that declared nothing reserves for its first octets and more as they arrive.
        limit = self.data_size_limit or 0
        declared = None if self.envelope is None else declared_size(self.envelope)
        if declared is not None:
            limit = min(limit, declared + declared // 10 + 64 * 1024)
        ceiling = self._budget.cost(limit)
        first = ceiling
        if declared is None:
            first = min(ceiling, self._budget.cost(DataBudget.FIRST_STEP))
        if not await self._budget.acquire(first, self._budget_wait, keep=ceiling - first):
            log.warning("data_budget_exhausted", reserved=self._budget.reserved, wanted=first)
            metrics.message("no_memory", 0)
            await self.push("452 4.3.1 Insufficient system resources, try again later")
            return
        meter: MeteredReader | None = None
        if first < ceiling:
            # It may grow: aiosmtpd's DATA loop reads only through readuntil() and read(), which
            # the meter counts. A transaction that reserved all it may send is not metered.
            meter = MeteredReader(
                self._reader,
                self._budget,
                reserved=first,
                ceiling=ceiling,
                patience=self._budget_wait,
            )
            self._reader = cast(asyncio.StreamReader, meter)
        full_limit, self.data_size_limit = self.data_size_limit, limit
        self._in_data = True
        self._arm_timer(self._data_timeout)
        try:
            await super().smtp_DATA(arg)
        except BudgetExhausted as exc:
            # Mid-message there is no reply that keeps the session in step (the rest of the
            # data would be read as commands): say why and close; the sender retries later.
            log.warning("data_budget_exhausted", reserved=self._budget.reserved, detail=str(exc))
            metrics.message("no_memory", 0)
            await self.push("421 4.3.1 Insufficient system resources, closing connection")
        finally:
            if meter is not None:
                self._reader = meter.inner
            self.data_size_limit = full_limit
            await self._budget.release(first if meter is None else meter.reserved)
            self._in_data = False
            if self.transport is not None:
                self._arm_timer(self._idle_timeout)

    @_command
    async def smtp_AUTH(self, arg: str) -> None:
        await self.push("502 5.5.1 AUTH is not offered by this mail exchanger")

    # aiosmtpd's own verbs, behind the same checks.
    smtp_HELO = _command(SMTP.smtp_HELO)
    smtp_EHLO = _command(SMTP.smtp_EHLO)
    smtp_NOOP = _command(SMTP.smtp_NOOP)
    smtp_QUIT = _command(SMTP.smtp_QUIT)
    smtp_STARTTLS = _command(SMTP.smtp_STARTTLS)
    smtp_HELP = _command(SMTP.smtp_HELP)
    smtp_VRFY = _command(SMTP.smtp_VRFY)
    smtp_MAIL = _command(SMTP.smtp_MAIL)
    smtp_RCPT = _command(SMTP.smtp_RCPT)
    smtp_RSET = _command(SMTP.smtp_RSET)
    smtp_EXPN = _command(SMTP.smtp_EXPN)

    def _create_envelope(self) -> Transaction:
        return Transaction()

    # Replies --------------------------------------------------------------------------------
    async def push(self, status: AnyStr) -> None:
        text = status if isinstance(status, str) else status.decode("utf-8", "surrogateescape")
        if self._command == "DATA" and text in metrics.DATA_REFUSALS:
            metrics.message(metrics.DATA_REFUSALS[text], 0)
        exempt = not self._greeted or (self._command in {"EHLO", "HELO"} and text.startswith("250"))
        self._greeted = True
        if not exempt:
            text = with_enhanced_code(text)
        if self._command == "RCPT":
            metrics.recipient(text)
        if text[:1] in {"4", "5"} and not self.reply_logged:
            log.info("refused", command=self._command, reply=text)
        self.reply_logged = False
        if text.startswith("421"):  # "closing transmission channel" (RFC 5321 4.2.2)
            _close_with(self.transport, text)
            return
        await super().push(text)


def _close_with(transport: asyncio.BaseTransport | None, reply: str) -> None:
    """Send ``reply`` (a 421) and close, unless the connection is closing already."""
    if transport is None or transport.is_closing():
        return
    # A socket transport (uvloop's are no subclasses of asyncio's transport classes).
    cast(asyncio.WriteTransport, transport).write(f"{reply}\r\n".encode())
    transport.close()


def protocol_factory(
    handler: MailHandler,
    *,
    settings: SmtpSettings,
    registry: ConnectionRegistry,
    budget: DataBudget,
    tls_context: ssl.SSLContext | None,
    loop: asyncio.AbstractEventLoop,
) -> Callable[[], SMTPProtocol]:
    """What ``loop.create_server`` calls for each accepted connection."""
    proxy = settings.proxy_policy()

    def make() -> SMTPProtocol:
        return SMTPProtocol(
            handler,
            settings=settings,
            registry=registry,
            budget=budget,
            tls_context=tls_context,
            proxy=proxy,
            loop=loop,
        )

    return make
