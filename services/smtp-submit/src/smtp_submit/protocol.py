"""One submission connection: aiosmtpd's ``SMTP`` with AUTH through the mailstore, after TLS only.

What this adds to aiosmtpd (its public extension points: ``auth_<MECHANISM>`` methods,
``challenge_auth``, ``smtp_<VERB>`` overrides and the handler's hooks):

- AUTH PLAIN (RFC 4616, :mod:`mailcommon.sasl`: an authorization identity other than the user's
  is refused) and LOGIN, checked by :class:`smtp_submit.login.Logins` (aiosmtpd's own
  authenticator is synchronous and cannot ask the mailstore);
- AUTH only on an encrypted connection: on 587 before STARTTLS it answers ``530 5.7.0 Must issue
  a STARTTLS command first`` (RFC 3207) and EHLO does not advertise it; on 465 the connection is
  TLS from its first octet (RFC 8314) and AUTH is offered at once. aiosmtpd's own TLS rule for
  AUTH (``auth_require_tls``) looks only at STARTTLS, so it is off and this class decides;
- the RFC 3463 enhanced status code on every reply (:mod:`mailcommon.smtpreplies`);
- connection limits (``MAX_CONNECTIONS``, ``MAX_CONNECTIONS_PER_IP``, both ports together,
  :class:`mailcommon.connections.ConnectionRegistry`): beyond them, and while the server drains,
  ``421`` and the connection is closed before aiosmtpd sees it.

"No AUTH, no mail" is the handler's (``handle_MAIL``): aiosmtpd's ``auth_required`` would refuse
with the same words but warns, per connection, that TLS is not required, which it is here.
"""

from __future__ import annotations

import asyncio
import collections
import ssl
from collections.abc import Callable
from typing import Any, AnyStr, cast

from aiosmtpd.smtp import MISSING, SMTP, AuthResult
from mailcommon.connections import ConnectionRegistry
from mailcommon.logging import get_logger
from mailcommon.sasl import SaslError, decode_plain, decode_response, parse_plain
from mailcommon.smtpreplies import with_enhanced_code

from smtp_submit.handler import SubmitHandler, Transaction
from smtp_submit.login import Logins
from smtp_submit.senders import MAX_ADDED_HEADERS
from smtp_submit.settings import SubmitSettings

log = get_logger(__name__)

STARTTLS_FIRST = "530 5.7.0 Must issue a STARTTLS command first"
TOO_MANY = "421 4.7.0 Too many connections, try again later"
SHUTTING_DOWN = "421 4.3.2 Service shutting down, try again later"
MALFORMED = "501 5.5.2 Malformed credentials"


class SubmitProtocol(SMTP):
    """aiosmtpd's protocol for one submission connection."""

    def __init__(
        self,
        handler: SubmitHandler,
        *,
        settings: SubmitSettings,
        logins: Logins,
        registry: ConnectionRegistry,
        tls_context: ssl.SSLContext | None,
        implicit_tls: bool,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        super().__init__(
            handler,
            data_size_limit=settings.max_message_size - MAX_ADDED_HEADERS,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=settings.mail_hostname,
            ident="ESMTP",
            tls_context=None if implicit_tls else tls_context,
            require_starttls=False,
            timeout=settings.submit_idle_timeout,
            auth_require_tls=False,
            auth_required=False,
            loop=loop,
        )
        # aiosmtpd keeps these limits on the class, shared by every connection: keep ours here.
        self.command_size_limits = collections.defaultdict(lambda: SMTP.command_size_limit)
        self._logins = logins
        self._registry = registry
        self._implicit_tls = implicit_tls
        self._ip = "unknown"
        self._admitted = False
        self._refused = False
        self._greeted = False
        self._command: str | None = None

    # Connection life cycle --------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self._admitted:  # the TLS transport after STARTTLS: the same connection
            super().connection_made(transport)
            return
        peer = transport.get_extra_info("peername")
        self._ip = str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"
        refusal = self._registry.admit(self, self._ip)
        if refusal is not None:
            self._refused = True
            reply = SHUTTING_DOWN if refusal == "shutting_down" else TOO_MANY
            log.info("refused", client=self._ip, reply=reply[:3], reason=refusal)
            cast(asyncio.WriteTransport, transport).write(f"{reply}\r\n".encode())
            transport.close()
            return
        self._admitted = True
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._refused:
            return
        self._registry.release(self, self._ip)
        super().connection_lost(error)

    def eof_received(self) -> bool:
        # aiosmtpd ends the session on EOF but keeps a plain transport half open (and asks the
        # same of a TLS one, which cannot): the connection then held its slot in the registry
        # until the idle timeout. Closed now, as smtp-in does.
        super().eof_received()
        return False

    def is_idle(self) -> bool:
        """Between transactions (what a graceful shutdown may close at once)."""
        return self.envelope is None or self.envelope.mail_from is None

    def close_for_shutdown(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            cast(asyncio.WriteTransport, self.transport).write(f"{SHUTTING_DOWN}\r\n".encode())
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None:
            cast(asyncio.WriteTransport, self.transport).abort()  # no TLS close handshake

    # TLS --------------------------------------------------------------------------------------
    @property
    def encrypted(self) -> bool:
        """Whether this connection is TLS now (465 from the start; 587 after STARTTLS)."""
        return self._implicit_tls or (self.session is not None and self.session.ssl is not None)

    def tls_description(self) -> str | None:
        """``using TLSv1.3 with cipher TLS_AES_256_GCM_SHA384`` for the Received field."""
        if self.transport is None:
            return None
        obj: Any = self.transport.get_extra_info("ssl_object")
        if obj is None:
            return None
        cipher = obj.cipher()
        return f"using {obj.version()} with cipher {cipher[0] if cipher else 'unknown'}"

    def _peer_ip(self) -> str:
        peer: Any = self.session.peer if self.session is not None else None
        return str(peer[0]) if isinstance(peer, tuple) and peer else "unknown"

    # AUTH -------------------------------------------------------------------------------------
    async def smtp_AUTH(self, arg: str) -> None:
        if not self.encrypted:
            await self.push(STARTTLS_FIRST)
            return
        await super().smtp_AUTH(arg)

    async def auth_PLAIN(self, _: Any, args: list[str]) -> AuthResult:
        try:
            if len(args) == 1:
                raw = await self.challenge_auth("")
                if raw is MISSING:
                    return AuthResult(success=False, handled=True)  # answered: 501
                user, password = parse_plain(raw)
            else:
                user, password = decode_plain(args[1].encode())
        except SaslError:
            await self.push(MALFORMED)
            return AuthResult(success=False, handled=True)
        return await self._login(user, password)

    async def auth_LOGIN(self, _: Any, args: list[str]) -> AuthResult:
        if len(args) == 1:
            login = await self.challenge_auth(self.AuthLoginUsernameChallenge)
        else:
            login = await self._initial_response(args[1])
        if login is MISSING:
            return AuthResult(success=False, handled=True)
        password = await self.challenge_auth(self.AuthLoginPasswordChallenge)
        if password is MISSING:
            return AuthResult(success=False, handled=True)
        try:
            user, secret = bytes(login).decode(), bytes(password).decode()
        except UnicodeDecodeError:
            await self.push(MALFORMED)
            return AuthResult(success=False, handled=True)
        return await self._login(user, secret)

    async def _initial_response(self, b64: str) -> Any:
        try:
            return decode_response(b64.encode())
        except SaslError:
            await self.push(MALFORMED)
            return MISSING

    async def _login(self, user: str, password: str) -> AuthResult:
        result = await self._logins.login(self._peer_ip(), user, password)
        if result.account is None:
            return AuthResult(success=False, handled=False, message=result.reply)
        return AuthResult(success=True, auth_data=result.account, message=result.reply)

    # Replies ----------------------------------------------------------------------------------
    async def push(self, status: AnyStr) -> None:
        text = status if isinstance(status, str) else status.decode("utf-8", "surrogateescape")
        exempt = not self._greeted or (self._command in {"EHLO", "HELO"} and text.startswith("250"))
        self._greeted = True
        if not exempt:
            text = with_enhanced_code(text)
        await super().push(text)

    async def smtp_EHLO(self, hostname: str) -> None:
        self._command = "EHLO"
        try:
            await super().smtp_EHLO(hostname)
        finally:
            self._command = None

    async def smtp_HELO(self, hostname: str) -> None:
        self._command = "HELO"
        try:
            await super().smtp_HELO(hostname)
        finally:
            self._command = None

    def _create_envelope(self) -> Transaction:
        return Transaction()


def protocol_factory(
    handler: SubmitHandler,
    *,
    settings: SubmitSettings,
    logins: Logins,
    registry: ConnectionRegistry,
    tls_context: ssl.SSLContext,
    implicit_tls: bool,
    loop: asyncio.AbstractEventLoop,
) -> Callable[[], SubmitProtocol]:
    """What ``loop.create_server`` calls for each accepted connection on one of the two ports."""

    def make() -> SubmitProtocol:
        return SubmitProtocol(
            handler,
            settings=settings,
            logins=logins,
            registry=registry,
            tls_context=tls_context,
            implicit_tls=implicit_tls,
            loop=loop,
        )

    return make
