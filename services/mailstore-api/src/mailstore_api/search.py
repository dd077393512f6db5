"""The message index, ``DATA_DIR/search.sqlite3``: every message's listing row (an ordinary
table, indexed by account and received time) and SQLite FTS5 over its account (one token),
sender, recipients, subject and words (keyed by the same rowid), so neither a page of a
100,000-message list nor a search reads the Maildir.

Kept on delivery and expunge (and account removal) by one indexer thread, fed through a queue,
so neither a delivery's 201 nor an expunge waits for it: a message is listed and findable a few
milliseconds after it is stored, and a listing first waits for the jobs queued before it (read
your writes). The index is a cache of the Maildirs, never the truth: it is written without
fsync, and at every start the indexer first brings it in line with the Maildirs (adds what is
missing, drops what is gone), so a crash, a restore or a file moved by hand costs a re-index,
never a wrong answer for long; until then listings read the Maildir. Not in backups (rebuilt
from the mail); a file of another schema version or authserv-id, or one SQLite cannot read, is
dropped and built again.
"""

from __future__ import annotations

import hashlib
import json
import queue
import re
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import nh3
from mailauth.results import our_results_field, verdicts_of_field
from mailcommon.logging import get_logger

from mailstore_api.maildir import MailStore, MessageEntry, UnknownMailbox
from mailstore_api.messages import head_of, header_text, listing_fields, load

log = get_logger(__name__)
SEARCH_FILE = "search.sqlite3"
#: Characters of a message's text that are indexed (the rest of a long body is not searched).
MAX_TEXT = 200_000
#: Jobs written in one transaction.
BATCH = 500
#: How long the indexer gathers jobs into one transaction, unless a reader waits for them: one
#: commit per delivery was a third of the index's cost on the delivery path (RESULTS.md).
GATHER = 0.2
#: ``PRAGMA user_version`` of the file; a file of another version is dropped and built again.
SCHEMA = 5
#: How long a listing waits for the index to write the jobs queued before it, else it reads
#: the Maildir.
CATCH_UP = 2.0
FIELDS = {"from": "sender", "to": "recipients", "subject": "subject", "text": "body"}
_TOKEN_RE = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class Rows:
    """A page of listing rows (``messages.summary``) and how many there are in all."""

    total: int
    rows: list[dict[str, Any]]


def match_expression(words: str, field: str | None, account: str) -> str | None:
    """An FTS5 query for ``account``'s messages with the words (each a prefix, all required)
    in one column or any of the text; None when there is no word. Only letters and digits
    reach FTS5, so no input is a syntax error."""
    tokens = _TOKEN_RE.findall(words)
    if not tokens:
        return None
    column = FIELDS[field] if field else "{" + " ".join(FIELDS.values()) + "}"
    found = " AND ".join(f'{column} : "{token}"*' for token in tokens[:20])
    return f'owner : "{owner_token(account)}" AND {found}'


def owner_token(account: str) -> str:
    """The account as one FTS5 token (a hash: an address is several words to the tokenizer),
    so FTS5 alone counts an account's matches (a join per match cost 32 ms for 100,000)."""
    return hashlib.blake2b(account.encode(), digest_size=8).hexdigest()


def document(path: Path) -> tuple[str, str, str, str]:
    """Sender, recipients, subject and text of the stored message at ``path``."""
    message = load(path)
    return words_of(message, [header_text(message, n) for n in ("from", "to", "subject")])


def words_of(message: EmailMessage, headers: list[str | None]) -> tuple[str, str, str, str]:
    """Sender, recipients, subject and text of ``message``, whose From, To and Subject are
    ``headers`` (as :mod:`~mailstore_api.messages` reads them: each parsed once per message)."""
    texts = [h or "" for h in headers]
    body = message.get_body(preferencelist=("plain", "html"))
    text = ""
    if body is not None:
        try:
            content = body.get_content()
        except Exception:
            content = ""
        if isinstance(content, str):
            text = (
                content if body.get_content_subtype() == "plain" else nh3.clean(content, tags=set())
            )
    cc = header_text(message, "cc") or ""
    return texts[0], f"{texts[1]} {cc}".strip(), texts[2], distinct_words(text[:MAX_TEXT])


def distinct_words(text: str) -> str:
    """Each whitespace-separated word of ``text`` once, in first-seen order.

    Queries are AND-ed word prefixes, never phrases, so order and repetition do not change an
    answer; the index then holds a message's vocabulary, not a second copy of its text (which
    had filled a nearly full mail volume twice as fast)."""
    return " ".join(dict.fromkeys(text.split()))


Job = tuple[str, str, list[str]]
#: Put in the queue by a waiting reader, so a gathering indexer writes at once.
_WAKE: tuple[int, Job] = (0, ("wake", "", []))
#: A message's stored listing row (JSON) and its words.
Parsed = tuple[str, tuple[str, str, str, str]]
_TABLES = (
    "CREATE TABLE entries (rowid INTEGER PRIMARY KEY, account TEXT NOT NULL, id TEXT NOT NULL,"
    " received REAL NOT NULL, summary TEXT NOT NULL, UNIQUE (account, id))",
    "CREATE INDEX entries_by_time ON entries (account, received, id)",
    "CREATE VIRTUAL TABLE words USING fts5(owner, sender, recipients, subject, body,"
    " tokenize='unicode61 remove_diacritics 2')",
    "CREATE TABLE meta (authserv_id TEXT NOT NULL)",
)
_PAGE = {  # newest first?
    False: "SELECT id, summary FROM entries WHERE account = ? ORDER BY received, id LIMIT ? OFFSET ?",
    True: "SELECT id, summary FROM entries WHERE account = ?"
    " ORDER BY received DESC, id DESC LIMIT ? OFFSET ?",
}
# The plans matter at 100,000 messages (bench/console_bench.py, RESULTS.md): a join the
# planner may start from ``entries`` runs the full-text query once per row (seconds); the
# count is FTS5's alone (the account is in the query), and for a page the time index is walked
# newest first against the set of matches, stopping at the page's end (a word in every
# message: 14 ms, not 74).
_COUNT_FOUND = "SELECT count(*) FROM words WHERE words MATCH ?"
_FOUND = (
    "SELECT id, summary FROM entries WHERE account = ?"
    " AND rowid IN (SELECT rowid FROM words WHERE words MATCH ?)"
    " ORDER BY received DESC, id DESC LIMIT ? OFFSET ?"
)
_DROP = "DELETE FROM words WHERE rowid IN (SELECT rowid FROM entries WHERE account = ? AND id = ?)"


#: Keys of a listing row that are the message id (stored once, in its column).
_ID_KEYS = ("id", "uidl")


#: Where a stored row keeps our Authentication-Results field, parsed only when the row is read
#: (a page is 50 rows; every delivery is one row written).
_RESULTS_KEY = "results_field"


def _listing_row(message_id: str, stored: str) -> dict[str, Any]:
    row: dict[str, Any] = json.loads(stored)
    authentication = verdicts_of_field(row.pop(_RESULTS_KEY, None))
    return {key: message_id for key in _ID_KEYS} | row | {"authentication": authentication}


def _connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")  # a cache: rebuilt at start-up
    return conn


def open_index(path: Path, authserv_id: str) -> sqlite3.Connection:
    """The index file, dropped and created anew when it is unreadable or its schema or
    authserv-id (the verdicts of its rows are read with it) is not this one's."""
    conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    try:
        if conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA:
            stored = conn.execute("SELECT authserv_id FROM meta").fetchone()
            if stored is not None and stored[0] == authserv_id:
                conn.close()
                return _connect(path)
    except sqlite3.DatabaseError as exc:
        log.warning("search index unreadable: built again", error=str(exc))
    conn.close()
    for name in (path.name, f"{path.name}-wal", f"{path.name}-shm"):
        path.with_name(name).unlink(missing_ok=True)
    conn = _connect(path)
    conn.execute("BEGIN")
    for statement in _TABLES:
        conn.execute(statement)
    conn.execute("INSERT INTO meta VALUES (?)", (authserv_id,))
    conn.execute(f"PRAGMA user_version={SCHEMA}")
    conn.execute("COMMIT")
    return conn


class SearchIndex:
    """The index's tables and the thread that writes them."""

    def __init__(
        self, path: Path, store: MailStore, accounts: Callable[[], list[str]], authserv_id: str
    ) -> None:
        self._store = store
        self._accounts = accounts
        self._authserv_id = authserv_id
        self._lock = threading.Lock()
        self._conn = open_index(path, authserv_id)
        self._jobs: queue.Queue[tuple[int, Job] | None] = queue.Queue()
        # jobs queued and written so far, and whether the start-up reconciliation is done
        self._progress = threading.Condition()
        self._queued = self._written = 0
        self._reader_waits = threading.Event()  # a listing waits: write what is queued now
        self._reconciled = False
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="search-index", daemon=True)

    # -- called from the event loop: queue a job, return at once ------------------------------

    def start(self) -> None:
        self._thread.start()

    def added(self, accounts: list[str], message_id: str) -> None:
        for account in accounts:
            self._queue(("add", account, [message_id]))

    def removed(self, account: str, message_ids: list[str]) -> None:
        if message_ids:
            self._queue(("remove", account, message_ids))

    def forget(self, account: str) -> None:
        self._queue(("forget", account, []))

    def _queue(self, job: Job) -> None:
        with self._progress:
            self._queued += 1
            self._jobs.put((self._queued, job))

    def caught_up(self, timeout: float = CATCH_UP) -> bool:
        """Whether the index is reconciled and has written every job queued before this call
        (waiting up to ``timeout`` seconds for them)."""
        with self._progress:
            target = self._queued
            if self._written < target:
                self._reader_waits.set()
                self._jobs.put(_WAKE)
            return self._reconciled and self._progress.wait_for(
                lambda: self._written >= target, timeout
            )

    def stop(self) -> None:
        self._stopping.set()  # a reconciliation under way stops between batches
        self._jobs.put(None)
        self._thread.join(30)
        with self._lock:
            self._conn.close()

    # -- reading (blocking: a worker thread) ----------------------------------------------------

    def listing(self, account: str, offset: int, limit: int, newest_first: bool) -> Rows | None:
        """A page of ``account``'s rows by received time, or None when the index cannot answer
        for the Maildir yet (still reconciling, or behind by more than :data:`CATCH_UP`)."""
        if not self.caught_up():
            return None
        with self._lock:
            total = self._conn.execute(
                "SELECT count(*) FROM entries WHERE account = ?", (account,)
            ).fetchone()[0]
            rows = self._conn.execute(
                _PAGE[newest_first],
                (account, limit, offset),
            ).fetchall()
        return Rows(int(total), [_listing_row(*r) for r in rows])

    def search(self, account: str, words: str, field: str | None, offset: int, limit: int) -> Rows:
        """Rows of ``account``'s messages matching every word, newest first."""
        expression = match_expression(words, field, account)
        if expression is None:
            return Rows(0, [])
        self.caught_up()
        with self._lock:
            total = self._conn.execute(_COUNT_FOUND, (expression,)).fetchone()[0]
            rows = self._conn.execute(_FOUND, (account, expression, limit, offset)).fetchall()
        return Rows(int(total), [_listing_row(*r) for r in rows])

    # -- the indexer thread ---------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._reconcile()
        except Exception:
            log.exception("search index: start-up reconciliation failed")
        with self._progress:
            self._reconciled = not self._stopping.is_set()  # not a half-done one
            self._progress.notify_all()
        while True:
            batch = self._gather()
            queued = [i for i in batch if i is not None and i is not _WAKE]
            try:
                self._write([job for _, job in queued])
            except Exception:
                log.exception("search index: a batch failed")
            with self._progress:
                if queued:
                    self._written = queued[-1][0]
                self._progress.notify_all()
            if None in batch:
                return

    def _gather(self) -> list[tuple[int, Job] | None]:
        """The next jobs to write: those that arrive within :data:`GATHER` seconds of the first
        (at most :data:`BATCH`), fewer when a reader waits or the index stops (None)."""
        batch = [self._jobs.get()]
        deadline = time.monotonic() + GATHER
        while len(batch) < BATCH and None not in batch and not self._reader_waits.is_set():
            try:
                batch.append(self._jobs.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        while len(batch) < BATCH and not self._jobs.empty():
            batch.append(self._jobs.get_nowait())
        self._reader_waits.clear()
        return batch

    def _write(self, jobs: list[Job]) -> None:
        """Jobs in order, in one transaction; adding a message that is indexed already changes
        nothing (a message's file never changes under its id)."""
        parsed: dict[str, Parsed | None] = {}  # recipients of one message share its file
        rows = {
            (account, mid): self._row(account, mid, parsed)
            for kind, account, ids in jobs
            if kind == "add"
            for mid in ids
        }
        with self._lock:
            self._conn.execute("BEGIN")
            for kind, account, ids in jobs:
                if kind == "forget":
                    self._conn.execute(
                        "DELETE FROM words WHERE rowid IN"
                        " (SELECT rowid FROM entries WHERE account = ?)",
                        (account,),
                    )
                    self._conn.execute("DELETE FROM entries WHERE account = ?", (account,))
                    continue
                pairs = [(account, mid) for mid in ids]
                if kind == "add":
                    for key in pairs:
                        if (row := rows[key]) is not None:
                            self._insert(*row)
                    continue
                self._conn.executemany(_DROP, pairs)
                self._conn.executemany("DELETE FROM entries WHERE account = ? AND id = ?", pairs)
            self._conn.execute("COMMIT")

    def _insert(self, entry: tuple[object, ...], words: tuple[str, ...]) -> None:
        cursor = self._conn.execute(
            "INSERT OR IGNORE INTO entries (account, id, received, summary) VALUES (?, ?, ?, ?)",
            entry,
        )
        if not cursor.rowcount:
            return
        self._conn.execute(
            "INSERT INTO words (rowid, owner, sender, recipients, subject, body)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (cursor.lastrowid, owner_token(str(entry[0])), *words),
        )

    def _row(
        self, account: str, message_id: str, parsed: dict[str, Parsed | None]
    ) -> tuple[tuple[object, ...], tuple[str, ...]] | None:
        """The listing row and the words of a stored message, or None when it is gone; a
        message already in ``parsed`` (another recipient's hard link) is not read again."""
        try:
            entry = self._store.entry(account, message_id)
        except (OSError, UnknownMailbox):
            return None
        if entry is None:
            return None
        if message_id not in parsed:
            parsed[message_id] = self._parse(entry)
        found = parsed[message_id]
        if found is None:
            return None
        stored, words = found
        return (account, message_id, entry.received, stored), words

    def _parse(self, entry: MessageEntry) -> Parsed | None:
        """The stored listing row (JSON) and the words of the message at ``entry``."""
        try:
            data = entry.path.read_bytes()
        except OSError:
            return None
        message = BytesParser(policy=policy.default).parsebytes(data)
        assert isinstance(message, EmailMessage)
        raw_head = head_of(data)
        row = listing_fields(entry, raw_head, message)
        row[_RESULTS_KEY] = our_results_field(raw_head, self._authserv_id)
        words = words_of(message, [row["from"], row["to"], row["subject"]])
        stored = json.dumps(
            {k: v for k, v in row.items() if k not in _ID_KEYS}, separators=(",", ":")
        )
        return stored, words

    def _reconcile(self) -> None:
        """Bring the index in line with the Maildirs: index what is missing, drop the rest."""
        with self._lock:
            indexed: dict[str, set[str]] = {}
            for account, mid in self._conn.execute("SELECT account, id FROM entries"):
                indexed.setdefault(account, set()).add(mid)
        accounts = self._accounts()
        added = dropped = 0
        for account in accounts:
            try:
                entries = self._store.messages(account)
            except UnknownMailbox:
                entries = []
            present = {e.id for e in entries}
            have = indexed.pop(account, set())
            gone = list(have - present)
            if gone:
                self._write([("remove", account, gone)])
                dropped += len(gone)
            missing = [e.id for e in entries if e.id not in have]
            for start in range(0, len(missing), BATCH):
                if self._stopping.is_set():
                    return
                self._write([("add", account, missing[start : start + BATCH])])
            added += len(missing)
        for account in indexed:  # accounts that no longer exist
            self._write([("forget", account, [])])
        if added or dropped:
            with self._lock:  # a big build grew the write-ahead log: give the space back
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            log.info("search index reconciled", indexed=added, dropped=dropped)
