"""The listeners and the per-connection loop."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import ssl
import time

from mailcommon.client import MailstoreClient
from mailcommon.idle import IdleTimer
from mailcommon.locks import MaildropLocks
from mailcommon.logging import get_logger
from mailcommon.logincache import LoginCache
from mailcommon.proxy import Address, ProxyPolicy
from mailcommon.redisclient import connect_redis
from mailcommon.throttle import AuthThrottle
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from pop3d import metrics
from pop3d.auth import end_session_lease, log_key
from pop3d.commands import dispatch
from pop3d.context import Context
from pop3d.leases import LeaseKeeper
from pop3d.prefetch import PrefetchBudget
from pop3d.protocol import READER_LIMIT, LineTooLong, read_line, reply
from pop3d.proxied import ProxiedListener
from pop3d.session import Session
from pop3d.settings import Pop3Settings
from pop3d.state import AbortSession
from pop3d.throttle import ConnectionLimiter

log = get_logger(__name__)

REDIS_POOL_SIZE = 64


def build_context(settings: Pop3Settings, service_token: str, tls: ssl.SSLContext) -> Context:
    # One bounded pool per process: commands wait for a free connection (up to 5 s) instead of
    # failing when thousands of sessions log in or renew at once. A pooled connection may be
    # stale (Redis restarted, or failed over): the command is retried on a fresh one.
    redis = connect_redis(
        settings,
        socket_timeout=5.0,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 2),
        max_connections=REDIS_POOL_SIZE,
        wait_timeout=5.0,
    )
    locks = MaildropLocks(redis)
    return Context(
        settings=settings,
        client=MailstoreClient(
            settings.mailstore_url,
            service_token,
            timeout=settings.mailstore_timeout,
            max_connections=settings.pop3_mailstore_connections,
        ),
        redis=redis,
        locks=locks,
        keeper=LeaseKeeper(locks, settings.lock_ttl_ms),
        throttle=AuthThrottle(
            redis,
            settings.pop3_auth_fail_window,
            settings.pop3_auth_fail_max_per_ip,
            settings.pop3_auth_fail_max_per_user,
            settings.pop3_auth_fail_max_per_known_net,
            prefix="pop3",
            known_ttl=settings.pop3_known_network_ttl,
        ),
        limiter=ConnectionLimiter(settings.max_connections, settings.max_connections_per_ip),
        logins=LoginCache(settings.auth_cache_ttl),
        tls=tls,
        prefetch_budget=PrefetchBudget(settings.pop3_prefetch_total),
        log_key=log_key(service_token),
    )


def autologout(s: Session) -> None:
    """The idle timer expired while waiting for a command: say so and close; the pending read
    then sees the end of the stream."""
    farewell = reply(False, "autologout: idle for too long")
    with contextlib.suppress(OSError, RuntimeError):  # the transport may be gone already
        s.writer.write(farewell)
        s.stats.octets_sent += len(farewell)
        s.writer.close()


async def run_session(s: Session) -> None:
    """Greeting, then one command at a time until QUIT, EOF, timeout or abuse."""
    await s.ok(f"POP3 server ready {s.timestamp}")
    idle = IdleTimer(lambda: autologout(s))
    try:
        while not s.closing:
            idle.arm(s.timeout)
            try:
                line = await read_line(s.reader)
            except LineTooLong:
                idle.disarm()
                await s.bad("command line too long (255 octets at most)")
                continue
            idle.disarm()
            if line is None:
                s.result = "timeout" if idle.expired else "disconnected"
                return
            await dispatch(s, line)
    finally:
        idle.cancel()


class Pop3Server:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.servers: list[asyncio.Server] = []
        self.proxied: list[ProxiedListener] = []
        self._sessions: set[asyncio.Task[None]] = set()
        metrics.count_connections(lambda: ctx.limiter.total)

    async def _handle(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        tls_port: bool,
        client: Address | None = None,
    ) -> None:
        """One session; ``client``: the address a PROXY header named (else the peer's own)."""
        peer = client or writer.get_extra_info("peername") or ("?", 0)
        ip, port = str(peer[0]), int(peer[1])
        refusal = self.ctx.limiter.try_open(ip)
        if refusal is not None:
            log.info("refusal", peer=f"{ip}:{port}", reason="connection_limit", detail=refusal)
            with contextlib.suppress(Exception):
                writer.write(reply(False, f"[SYS/TEMP] {refusal}, try again later"))
                writer.close()
            return
        task = asyncio.current_task()
        if task is not None:
            self._sessions.add(task)
        s = Session(self.ctx, reader, writer, ip, port, tls_port=tls_port)
        try:
            await run_session(s)
        except AbortSession:
            if s.result in ("disconnected", "quit"):
                s.result = "aborted"
        except (ConnectionError, TimeoutError, OSError) as exc:
            s.result = f"connection_error:{type(exc).__name__}"
        except asyncio.CancelledError:
            # Shutdown: end quietly (asyncio's stream callback would log a cancelled task as an
            # error). The session ends without UPDATE, so nothing is deleted.
            s.result = "shutdown"
        except Exception:
            s.result = "internal_error"
            log.exception("session_error", sid=s.sid)
        finally:
            s.prefetch.release()
            self.ctx.limiter.close(ip)
            if task is not None:
                self._sessions.discard(task)
            try:
                await asyncio.shield(end_session_lease(s))
            finally:
                with contextlib.suppress(Exception):
                    writer.close()
                # A connection that never sent a command (health probes, port scanners) is
                # logged at debug level only, so probes every few seconds do not flood the log.
                metrics.session(s.result, s.stats.retrieved, s.stats.deleted)
                quiet = s.commands == 0 and s.result == "disconnected"
                (log.debug if quiet else log.info)(
                    "session",
                    sid=s.sid,
                    user=s.user,
                    peer=f"{ip}:{port}",
                    tls=s.tls,
                    retrieved=s.stats.retrieved,
                    prefetched=s.stats.prefetched,
                    batches=s.stats.batches,
                    deleted=s.stats.deleted,
                    octets=s.stats.octets_sent,
                    cached_login=s.stats.cached_login,
                    result=s.result,
                    duration_ms=int((time.monotonic() - s.stats.started) * 1000),
                )

    async def _plain(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await self._handle(reader, writer, tls_port=False)

    async def _implicit_tls(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await self._handle(reader, writer, tls_port=True)

    async def start(self) -> None:
        st = self.ctx.settings
        policy = st.proxy_policy()
        if policy is not None:
            self._start_proxied(policy)
        else:
            await self._start_plain()
        self.ctx.keeper.start()
        log.info(
            "listening",
            # "uvloop" or "asyncio": the event loop serving the sessions (POP3_UVLOOP).
            loop=type(asyncio.get_running_loop()).__module__.partition(".")[0],
            host=st.pop3_bind_host,
            pop3_port=st.pop3_bind_port,
            pop3s_port=st.pop3s_bind_port or None,
            plaintext_auth=st.pop3_allow_plaintext_auth,
            apop=st.apop_enabled,
            proxy_protocol=policy is not None,
        )

    def _start_proxied(self, policy: ProxyPolicy) -> None:
        """Behind a balancer: each connection's PROXY header first (pop3d.proxied)."""
        st = self.ctx.settings
        ports: list[tuple[int, ssl.SSLContext | None]] = [(st.pop3_bind_port, None)]
        if st.pop3s_bind_port:
            ports.append((st.pop3s_bind_port, self.ctx.tls))
        for port, tls in ports:
            listener = ProxiedListener(
                st.pop3_bind_host,
                port,
                st.pop3_backlog,
                policy=policy,
                tls=tls,
                handshake_timeout=st.pop3_tls_handshake_timeout,
                serve=self._handle,
                tasks=self._sessions,
            )
            listener.start()
            self.proxied.append(listener)

    async def _start_plain(self) -> None:
        st = self.ctx.settings
        self.servers.append(
            await asyncio.start_server(
                self._plain,
                st.pop3_bind_host,
                st.pop3_bind_port,
                limit=READER_LIMIT,
                backlog=st.pop3_backlog,
            )
        )
        if st.pop3s_bind_port:
            self.servers.append(
                await asyncio.start_server(
                    self._implicit_tls,
                    st.pop3_bind_host,
                    st.pop3s_bind_port,
                    limit=READER_LIMIT,
                    backlog=st.pop3_backlog,
                    ssl=self.ctx.tls,
                    ssl_handshake_timeout=st.pop3_tls_handshake_timeout,
                )
            )

    async def stop(self) -> None:
        for server in self.servers:
            server.close()
        for listener in self.proxied:
            listener.close()
        for task in list(self._sessions):
            task.cancel()  # sessions end without UPDATE: nothing is deleted
        if self._sessions:
            await asyncio.wait(list(self._sessions), timeout=10)
        await self.ctx.keeper.stop()
        await self.ctx.client.aclose()
        await self.ctx.redis.aclose()

    async def run(self) -> None:
        await self.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("stopping")
        await self.stop()
