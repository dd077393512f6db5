"""AUTH PLAIN and LOGIN end here: the throttle, the password check at the mailstore, the delay.

The same path as POP3's logins (``pop3d.auth.login``): the attempt is admitted by
:class:`mailcommon.throttle.AuthThrottle` (per client address, per user name, per name and known
network) before the password is checked, so parallel guesses cannot outrun the count; a failure
is counted and answered after ``SUBMIT_AUTH_FAIL_DELAY``. Refusals never say whether the account
exists. Redis or the mailstore unreachable: ``454 4.7.0`` (RFC 4954 6), never a login.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass

from mailcommon.addresses import account_address
from mailcommon.client import MailstoreClient, MailstoreError, MailstoreUnavailable
from mailcommon.logging import get_logger
from mailcommon.throttle import Attempt, AuthThrottle, Outcome
from redis.exceptions import RedisError

from smtp_submit import metrics

log = get_logger(__name__)

REDIS_ERRORS = (RedisError, OSError)
BAD_CREDENTIALS = "535 5.7.8 Authentication credentials invalid"
THROTTLED = "454 4.7.0 Too many failed logins, try again later"
UNAVAILABLE = "454 4.7.0 Temporary authentication failure, try again later"


@dataclass(frozen=True)
class LoginResult:
    """The account logged in (its address), or the reply that refuses the login."""

    account: str | None
    reply: str


class Logins:
    """One per process: checks credentials for every connection."""

    def __init__(
        self,
        mailstore: MailstoreClient,
        throttle: AuthThrottle,
        primary_domain: str,
        fail_delay: float,
    ) -> None:
        self.mailstore = mailstore
        self.throttle = throttle
        self.primary_domain = primary_domain
        self.fail_delay = fail_delay

    async def login(self, ip: str, name: str, password: str) -> LoginResult:
        """Check ``name`` and ``password`` for a client at ``ip``."""
        address = account_address(name, self.primary_domain)
        if address is None or not password:
            # Cannot be anybody's: counted all the same, so the answer tells nothing.
            with contextlib.suppress(*REDIS_ERRORS):
                await self.throttle.record_failure(ip, name[:255])
            return await self._failed("bad_credentials")
        try:
            attempt = await self.throttle.admit(ip, address)
        except REDIS_ERRORS as exc:
            log.warning("redis_error", during="AUTH", error=f"{type(exc).__name__}: {exc}")
            metrics.login("unavailable")
            return LoginResult(None, UNAVAILABLE)
        if attempt is None:
            return await self._failed("throttled", THROTTLED)
        try:
            verified = await self.mailstore.verify_password(address, password)
        except MailstoreUnavailable as exc:
            await self._resolve(attempt, Outcome.UNCHECKED)
            log.warning("mailstore_error", during="AUTH", error=str(exc))
            metrics.login("unavailable")
            return LoginResult(None, UNAVAILABLE)
        except MailstoreError:
            verified = None
        except BaseException:  # cancelled (client gone, shutdown): not a failure
            await asyncio.shield(self._resolve(attempt, Outcome.UNCHECKED))
            raise
        if verified is None:
            await self._resolve(attempt, Outcome.FAILED)
            return await self._failed("bad_credentials")
        await self._resolve(attempt, Outcome.RIGHT)
        metrics.login("ok")
        log.info("login", user=verified.username, result="ok")
        return LoginResult(verified.username, "235 2.7.0 Authentication successful")

    async def _resolve(self, attempt: Attempt, outcome: Outcome) -> None:
        with contextlib.suppress(*REDIS_ERRORS):  # else it is forgotten when its lifetime ends
            await self.throttle.resolve(attempt, outcome)

    async def _failed(self, reason: str, reply: str = BAD_CREDENTIALS) -> LoginResult:
        metrics.login(reason)
        log.info("login", result=reason)
        await asyncio.sleep(self.fail_delay)
        return LoginResult(None, reply)
