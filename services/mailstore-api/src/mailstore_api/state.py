"""Everything a request handler needs, built once at start-up and handed to every request as the
lifespan state ``store`` (``scope["state"]``, ``request.state.store``)."""

from __future__ import annotations

import datetime
import os
import signal
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import redis.asyncio as aioredis
from fastapi import Request
from mailauth.signing import DkimSigner
from mailcommon.locks import MaildropLocks
from mailcommon.logging import get_logger
from mailcommon.redisclient import connect_redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from mailstore_api.apop import ApopSecrets
from mailstore_api.committer import GroupCommitter, open_sync
from mailstore_api.db import DATABASE_FILE, Database, DeliveryKeys
from mailstore_api.directory import Directory
from mailstore_api.events import Events
from mailstore_api.maildir import MailStore
from mailstore_api.migrations import Context
from mailstore_api.outbound.store import QUEUE_DIR, QueueStore
from mailstore_api.passwords import Passwords
from mailstore_api.search import SEARCH_FILE, SearchIndex
from mailstore_api.settings import MailstoreSettings, Tokens
from mailstore_api.threads import in_thread
from mailstore_api.usage import Usage

T = TypeVar("T")
log = get_logger(__name__)
#: Seconds from the delivery thread stopping on a failure to the process ending itself (SIGTERM to
#: itself: uvicorn drains, answering 503): time for a health check to see the failure; then the
#: restart policy (compose: ``restart: unless-stopped``) starts it again. Docker does not restart a
#: container for being unhealthy, only for having ended.
END_AFTER_STOP = 10.0


def _end_process_soon() -> None:
    """From the stopped delivery thread: SIGTERM to this process in :data:`END_AFTER_STOP` s."""
    timer = threading.Timer(END_AFTER_STOP, os.kill, (os.getpid(), signal.SIGTERM))
    timer.daemon = True
    timer.start()


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
    # Domains, accounts and aliases, kept in memory: this process is the only writer of the
    # database. Changed only through the modules domains, accounts and aliases.
    directory: Directory
    # The full-text index of the messages (kept on delivery, expunge and account removal).
    search: SearchIndex
    # The domains' DKIM keys (on the secrets volume, generated on first use): the records shown.
    dkim: DkimSigner
    # The outbound queue (mailstore_api.outbound).
    queue: QueueStore
    usage: Usage = field(default_factory=Usage)
    # New-message announcements (the console's live list).
    events: Events = field(default_factory=Events)
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
        await self.run_io(self.search.stop)
        self.io.shutdown(wait=True)
        self.db.close()


def now_iso() -> str:
    """The time now, for ``created_at`` columns."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def open_directory(settings: MailstoreSettings, db: Database, store: MailStore) -> Directory:
    """Seed the domains of ``MAIL_DOMAINS``, finish a migration's Maildir moves, load the
    directory (blocking, at start-up)."""
    for domain in settings.mail_domains:
        if db.add_domain(domain, now_iso()):
            log.info("domain added from MAIL_DOMAINS", domain=domain)
    moves = db.maildir_moves()
    for source, target in moves:  # every old Maildir aside first: one may be named like a domain
        store.stage(source, target)
    for source, target in moves:
        store.move(source, target)
        db.maildir_moved(source)
        log.info("maildir moved", source=source, target=target)
    directory = Directory(settings.primary_domain, settings.postmaster())
    directory.load(db)
    return directory


def build_state(settings: MailstoreSettings, tokens: Tokens) -> State:
    """Open (and migrate) the database and the Maildir root, count usage, connect (lazily) to
    Redis."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.data_dir / DATABASE_FILE, Context(settings.primary_domain, now_iso()))
    if db.migrated:
        log.info("accounts database migrated", versions=db.migrated)
    store = MailStore(settings.data_dir / "mail", settings.mail_hostname)
    directory = open_directory(settings, db, store)
    sync = open_sync(store.root)
    # The keys' commits ride on the committer's syncfs only when it covers their file system.
    covered = sync is not None and settings.data_dir.stat().st_dev == store.root.stat().st_dev
    keys = DeliveryKeys(settings.data_dir / "deliveries.sqlite3", fsync_commits=not covered)
    keys.qualify_recipients(settings.primary_domain)
    client = connect_redis(settings, socket_timeout=2.0, retry=Retry(NoBackoff(), 1))
    state = State(
        settings=settings,
        tokens=tokens,
        db=db,
        store=store,
        passwords=Passwords(settings.auth_cache_ttl),
        apop=ApopSecrets(tokens.service),
        redis=client,
        locks=MaildropLocks(client),
        committer=GroupCommitter(
            store, keys, sync, settings.delivery_key_retention, on_stop=_end_process_soon
        ),
        directory=directory,
        search=SearchIndex(
            settings.data_dir / SEARCH_FILE,
            store,
            lambda: list(directory.accounts),
            settings.mail_hostname,
        ),
        dkim=settings.dkim_signer(settings.secrets_dir),
        queue=QueueStore(db, settings.data_dir / QUEUE_DIR),
    )
    # After the committer's start-up recovery, which may have linked messages.
    state.usage.count(store, list(directory.accounts))
    state.search.start()  # first brings the index in line with the Maildirs, in its thread
    state.io = ThreadPoolExecutor(settings.io_threads, thread_name_prefix="io")
    return state


async def get_state(request: Request) -> State:
    """FastAPI dependency: the application state (async: a sync dependency costs a thread hop)."""
    return cast(State, request.state.store)
