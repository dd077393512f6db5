"""Authentication: USER/PASS, APOP and AUTH PLAIN (RFC 5034) all end in :func:`login`.

``login`` is the one path into TRANSACTION: throttle check, credential check at the mailstore,
the failed-login delay, the maildrop lock, the snapshot (with the stale-fence retry), and only
then ``+OK``. Refusals never say whether the user exists.

A name and password verified within ``AUTH_CACHE_TTL`` (``Context.logins``) skip the check at the
mailstore: the throttle is read (a right password is refused while the address, or the name
from a network it never logged in from, has used up its failures, as on the full path), then the lock and the snapshot are taken, and the
snapshot's credential tag must still be the one the check returned. Otherwise (the password was
changed, the account deleted) the entry is dropped, the lock given back, and the full path runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
from collections.abc import Awaitable, Callable

from mailcommon.addresses import account_address
from mailcommon.client import (
    LockConflict,
    MailstoreError,
    MailstoreUnavailable,
    NotFound,
    Verified,
)
from mailcommon.locks import Lease
from mailcommon.logging import get_logger
from mailcommon.throttle import Attempt, Outcome
from redis.exceptions import RedisError

from pop3d import metrics
from pop3d.leases import LeaseState
from pop3d.session import Session
from pop3d.snapshot import Snapshot
from pop3d.state import State

log = get_logger(__name__)

REDIS_ERRORS = (RedisError, OSError)
MAX_USERNAME = 255


def usable_name(name: bytes) -> str | None:
    """The user name as text, or None when it cannot be anybody's (checked without a lookup)."""
    if not name or len(name) > MAX_USERNAME:
        return None
    try:
        text = name.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not text.isprintable() or " " in text:
        return None
    return text


def log_key(service_token: str) -> bytes:
    """The key of :func:`user_tag`: derived from the service token, never stored."""
    return hmac.new(service_token.encode(), b"pop3d log user names", hashlib.sha256).digest()


def user_tag(key: bytes, name: str) -> str:
    """What the logs say for a user name that was not (yet) verified: a short keyed hash.

    A password typed into the user name (a classic slip) must not reach the logs, and a login
    that failed does not tell whether the name is an account. The key is derived from the
    service token (the same on every replica and across restarts), so the attempts on one name
    can still be followed without the name itself being written.
    """
    digest = hmac.new(key, name.lower().encode("utf-8", "replace"), hashlib.sha256)
    return digest.hexdigest()[:16]


def refuse(s: Session, reason: str, user: str | None, *, verified: bool = False) -> None:
    """One ``refusal`` log line. ``user`` is logged as given only when ``verified`` (the
    mailstore accepted the credentials of that account); otherwise as ``user_hash``."""
    name: dict[str, str] = {}
    if user and verified:
        name["user"] = user[:64]
    elif user:
        name["user_hash"] = user_tag(s.ctx.log_key, user)
    metrics.login(reason)
    log.info("refusal", sid=s.sid, peer=f"{s.peer_ip}:{s.peer_port}", reason=reason, **name)


async def fail_login(s: Session, user: str, attempt: Attempt | None = None) -> None:
    """Count the failure in Redis (resolving ``attempt`` when it was admitted), wait the
    failed-login delay, answer ``-ERR [AUTH]``."""
    # The login failed anyway; the next attempt will meet a Redis error itself.
    with contextlib.suppress(*REDIS_ERRORS):
        if attempt is None:
            await s.ctx.throttle.record_failure(s.peer_ip, user)
        else:
            await s.ctx.throttle.resolve(attempt, Outcome.FAILED)
    refuse(s, "bad_credentials", user)
    await asyncio.sleep(s.ctx.settings.pop3_auth_fail_delay)
    await s.err("[AUTH] invalid user name or password")


async def _not_failed(s: Session, attempt: Attempt, outcome: Outcome = Outcome.UNCHECKED) -> None:
    with contextlib.suppress(*REDIS_ERRORS):  # else it is forgotten when its lifetime ends
        await s.ctx.throttle.resolve(attempt, outcome)


async def login(
    s: Session,
    name: str,
    verify: Callable[[], Awaitable[Verified | None]],
    *,
    password: str | None = None,
) -> None:
    """Check the credentials and enter TRANSACTION, answering the client either way.

    The attempt is registered as in flight before the check, atomically with the throttle's
    check, so parallel guesses cannot outrun it (:class:`mailcommon.throttle.AuthThrottle`).
    ``password`` (USER/PASS and AUTH PLAIN, not APOP) makes the login cacheable. The throttle and
    the cache count an account by its address, however it was given (``bob``,
    ``Bob@Example.org``): one name cannot be guessed at several times over.
    """
    ctx = s.ctx
    shown = name
    name = account_address(name, ctx.settings.primary_domain) or name
    if password is not None:
        known = ctx.logins.hit(name, password)
        if known is not None:
            if await _known_login(s, name, known, shown):
                return
            ctx.logins.forget(name)
    try:
        attempt = await ctx.throttle.admit(s.peer_ip, name)
    except REDIS_ERRORS as exc:
        refuse(s, "redis_unavailable", name)
        log.warning("redis_error", sid=s.sid, error=f"{type(exc).__name__}: {exc}")
        await s.err("[SYS/TEMP] service temporarily unavailable, try again later")
        return
    if attempt is None:
        refuse(s, "throttled", name)
        await asyncio.sleep(ctx.settings.pop3_auth_fail_delay)
        await s.err("[LOGIN-DELAY] too many failed logins, try again later")
        return
    try:
        account = await verify()
    except MailstoreUnavailable:
        await _not_failed(s, attempt)
        refuse(s, "mailstore_unavailable", name)
        await s.err("[SYS/TEMP] service temporarily unavailable, try again later")
        return
    except MailstoreError:
        account = None
    except BaseException:  # cancelled (shutdown): not a failure, and no longer in flight
        await asyncio.shield(_not_failed(s, attempt))
        raise
    if account is None:
        await fail_login(s, name, attempt)
        return
    await _not_failed(s, attempt, Outcome.RIGHT)  # and its network is known from now on
    if password is not None and account.credential_tag is not None:
        ctx.logins.remember(name, password, account)
    await enter_transaction(s, account.username, shown=shown)


async def _known_login(s: Session, name: str, known: Verified, shown: str) -> bool:
    """A login verified recently: True once answered; False (nothing answered, nothing held)
    when the full path must decide."""
    try:
        if not await s.ctx.throttle.allows(s.peer_ip, name):
            return False  # the full path refuses it, after the failed-login delay
    except REDIS_ERRORS:
        return False  # the full path meets the error too, and answers it
    answered = await enter_transaction(s, known.username, known.credential_tag, shown=shown)
    s.stats.cached_login = s.user is not None
    if s.user is not None:
        with contextlib.suppress(*REDIS_ERRORS):  # the network stays as known as it was
            await s.ctx.throttle.remember(s.peer_ip, name)
    return answered


async def _acquire(s: Session, user: str) -> Lease | None:
    return await s.ctx.locks.acquire(user, s.ctx.settings.lock_ttl_ms)


async def enter_transaction(
    s: Session, user: str, credential_tag: str | None = None, *, shown: str
) -> bool:
    """Take the maildrop lock, then the snapshot; +OK only once both are held. ``user`` is the
    account's address, ``shown`` the name as the client gave it (the +OK line says that one).

    With ``credential_tag`` (a login known from the cache), a snapshot of an account whose tag
    differs, or of no account, gives everything back and returns False without answering.
    Otherwise the client has its answer and the result is True.
    """
    ctx = s.ctx
    lease: Lease | None = None
    try:
        lease = await _acquire(s, user)
        if lease is None:
            refuse(s, "in_use", user, verified=True)
            await s.err("[IN-USE] maildrop is locked by another session, try again later")
            return True
        try:
            snapshot = await ctx.client.snapshot(user, lease.token, lease.fence)
        except LockConflict as exc:
            if exc.code != "stale_fence":
                raise
            # Redis lost its counter: lift it above what the mailstore has seen and retry once.
            await ctx.locks.raise_fence(user, exc.highest_fence)
            await ctx.locks.release(lease)
            lease = await _acquire(s, user)
            if lease is None:
                refuse(s, "in_use", user, verified=True)
                await s.err("[IN-USE] maildrop is locked by another session, try again later")
                return True
            snapshot = await ctx.client.snapshot(user, lease.token, lease.fence)
    except REDIS_ERRORS as exc:
        await _release_quietly(s, lease)
        refuse(s, "redis_unavailable", user, verified=True)
        log.warning("redis_error", sid=s.sid, error=f"{type(exc).__name__}: {exc}")
        await s.err("[SYS/TEMP] service temporarily unavailable, try again later")
        return True
    except NotFound:
        await _release_quietly(s, lease)
        if credential_tag is not None:
            return False
        refuse(s, "mailbox_not_found", user, verified=True)
        await s.err("[SYS/PERM] mailbox unavailable")
        return True
    except MailstoreError as exc:  # unavailable, lock conflicts twice, anything unexpected
        await _release_quietly(s, lease)
        refuse(s, f"snapshot_failed:{exc.code}", user, verified=True)
        await s.err("[SYS/TEMP] mailbox temporarily unavailable, try again later")
        return True
    if credential_tag is not None and snapshot.credential_tag != credential_tag:
        await _release_quietly(s, lease)
        return False
    s.lease = LeaseState(lease)
    ctx.keeper.add(s.lease)
    s.user = user
    s.snapshot = Snapshot(snapshot.entries)
    s.state = State.TRANSACTION
    metrics.login("ok")
    count, size = s.snapshot.stat()
    await s.ok(f"{shown}'s maildrop has {count} messages ({size} octets)")
    return True


async def _release_quietly(s: Session, lease: Lease | None) -> None:
    if lease is None:
        return
    with contextlib.suppress(*REDIS_ERRORS):  # else it expires by itself
        await s.ctx.locks.release(lease)


async def end_session_lease(s: Session) -> None:
    """Give the maildrop back (compare-and-delete); called whenever a session ends."""
    if s.lease is None:
        return
    s.ctx.keeper.discard(s.lease)
    lease, s.lease = s.lease, None
    await _release_quietly(s, lease.lease)
