"""Everything a request handler needs, built once at start-up and handed to every request as the
lifespan state ``store`` (``scope["state"]``, ``request.state.store``)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import redis.asyncio as aioredis
from fastapi import Request
from mailcommon.locks import MaildropLocks
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from mailstore_api.apop import ApopSecrets
from mailstore_api.committer import GroupCommitter, VolumeSync
from mailstore_api.db import Database
from mailstore_api.maildir import MailStore
from mailstore_api.passwords import Passwords
from mailstore_api.settings import MailstoreSettings, Tokens
from mailstore_api.threads import in_thread

T = TypeVar("T")


@dataclass
class State:
    settings: MailstoreSettings
    tokens: Tokens
    db: Database
    store: MailStore
    passwords: Passwords
    apop: ApopSecrets
    redis: aioredis.Redis
    locks: MaildropLocks
    committer: GroupCommitter
    # The user names, kept in memory: this process is the only writer of the database.
    users: set[str] = field(default_factory=set)
    # Worker threads for file-system and database work (IO_THREADS).
    io: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(16, thread_name_prefix="io")
    )

    async def run_io(self, func: Callable[..., T], *args: Any) -> T:
        """Run blocking ``func(*args)`` in a worker thread."""
        return await in_thread(self.io, func, *args)

    async def aclose(self) -> None:
        await self.redis.aclose()
        await self.run_io(self.committer.stop)
        self.io.shutdown(wait=True)
        self.db.close()


def build_state(settings: MailstoreSettings, tokens: Tokens) -> State:
    """Open the database and the Maildir root, clean up leftovers, connect (lazily) to Redis."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.data_dir / "users.sqlite3")
    store = MailStore(settings.data_dir / "mail", settings.mail_hostname)
    client = aioredis.Redis.from_url(
        settings.redis_url,
        socket_connect_timeout=2.0,
        socket_timeout=2.0,
        retry=Retry(NoBackoff(), 1),
    )
    state = State(
        settings=settings,
        tokens=tokens,
        db=db,
        store=store,
        passwords=Passwords(settings.auth_cache_ttl),
        apop=ApopSecrets(tokens.service),
        redis=client,
        locks=MaildropLocks(client),
        committer=GroupCommitter(store, VolumeSync(store.root)),
    )
    state.users = db.usernames()
    state.io = ThreadPoolExecutor(settings.io_threads, thread_name_prefix="io")
    return state


async def get_state(request: Request) -> State:
    """FastAPI dependency: the application state (async: a sync dependency costs a thread hop)."""
    return cast(State, request.state.store)
