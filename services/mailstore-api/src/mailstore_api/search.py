"""The search index: SQLite FTS5 over the sender, recipients, subject and text of every message,
in ``DATA_DIR/search.sqlite3``.

Kept on delivery and expunge (and account removal) by one indexer thread, fed through a queue,
so neither a delivery's 201 nor an expunge waits for it: a message is findable a few
milliseconds after it is stored. The index is a cache of the Maildirs, never the truth: it is
written without fsync, and at every start the indexer first brings it in line with the
Maildirs (adds what is missing, drops what is gone), so a crash, a restore or a file moved by
hand costs a re-index, never a wrong answer for long. Not in backups (rebuilt from the mail).
"""

from __future__ import annotations

import queue
import re
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nh3
from mailcommon.logging import get_logger

from mailstore_api.maildir import MailStore, UnknownMailbox
from mailstore_api.messages import load

log = get_logger(__name__)
SEARCH_FILE = "search.sqlite3"
#: Characters of a message's text that are indexed (the rest of a long body is not searched).
MAX_TEXT = 200_000
#: Jobs written in one transaction.
BATCH = 500
FIELDS = {"from": "sender", "to": "recipients", "subject": "subject", "text": "body"}
_TOKEN_RE = re.compile(r"\w+", re.UNICODE)


@dataclass(frozen=True)
class Hits:
    total: int
    ids: list[str]


def match_expression(words: str, field: str | None) -> str | None:
    """An FTS5 query for the words (each a prefix, all required) in one column or any; None
    when there is no word. Only letters and digits reach FTS5, so no input is a syntax error."""
    tokens = _TOKEN_RE.findall(words)
    if not tokens:
        return None
    column = f"{FIELDS[field]} : " if field else ""
    return " AND ".join(f'{column}"{token}"*' for token in tokens[:20])


def document(path: Path) -> tuple[str, str, str, str]:
    """Sender, recipients, subject and text of the stored message at ``path``."""
    message = load(path)
    texts = []
    for name in ("from", "to", "subject"):
        try:
            texts.append(str(message.get(name) or ""))
        except Exception:  # a header the policy cannot parse: its raw text
            texts.append(" ".join(str(v) for k, v in message.raw_items() if k.lower() == name))
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
    cc = str(message.get("cc") or "")
    return texts[0], f"{texts[1]} {cc}".strip(), texts[2], distinct_words(text[:MAX_TEXT])


def distinct_words(text: str) -> str:
    """Each whitespace-separated word of ``text`` once, in first-seen order.

    Queries are AND-ed word prefixes, never phrases, so order and repetition do not change an
    answer; the index then holds a message's vocabulary, not a second copy of its text (which
    had filled a nearly full mail volume twice as fast)."""
    return " ".join(dict.fromkeys(text.split()))


class SearchIndex:
    """The FTS5 table and the thread that writes it."""

    def __init__(self, path: Path, store: MailStore, accounts: Callable[[], list[str]]) -> None:
        self._store = store
        self._accounts = accounts
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=OFF")  # a cache: rebuilt at start-up
        self._conn.execute(
            "CREATE VIRTUAL TABLE IF NOT EXISTS messages USING fts5("
            "account UNINDEXED, id UNINDEXED, received UNINDEXED,"
            " sender, recipients, subject, body, tokenize='unicode61 remove_diacritics 2')"
        )
        self._jobs: queue.Queue[tuple[str, str, list[str]] | None] = queue.Queue()
        self._idle = threading.Event()
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

    def _queue(self, job: tuple[str, str, list[str]]) -> None:
        self._idle.clear()
        self._jobs.put(job)

    def wait_idle(self, timeout: float) -> bool:
        """Whether every job queued so far is written (for tests and start-up checks)."""
        return self._idle.wait(timeout)

    def stop(self) -> None:
        self._jobs.put(None)
        self._thread.join(30)
        with self._lock:
            self._conn.close()

    # -- searching (blocking: a worker thread) --------------------------------------------------

    def search(self, account: str, words: str, field: str | None, offset: int, limit: int) -> Hits:
        """Messages of ``account`` matching every word, newest first."""
        expression = match_expression(words, field)
        if expression is None:
            return Hits(0, [])
        with self._lock:
            total = self._conn.execute(
                "SELECT count(*) FROM messages WHERE messages MATCH ? AND account = ?",
                (expression, account),
            ).fetchone()[0]
            rows = self._conn.execute(
                "SELECT id FROM messages WHERE messages MATCH ? AND account = ?"
                " ORDER BY received DESC LIMIT ? OFFSET ?",
                (expression, account, limit, offset),
            ).fetchall()
        return Hits(int(total), [str(r[0]) for r in rows])

    # -- the indexer thread ---------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._reconcile()
        except Exception:
            log.exception("search index: start-up reconciliation failed")
        while True:
            if self._jobs.empty():
                self._idle.set()
            job = self._jobs.get()
            batch = [job]
            while len(batch) < BATCH and not self._jobs.empty():
                batch.append(self._jobs.get_nowait())
            stop = None in batch
            try:
                self._write([j for j in batch if j is not None])
            except Exception:
                log.exception("search index: a batch failed")
            if stop:
                self._idle.set()
                return

    def _write(self, jobs: list[tuple[str, str, list[str]]]) -> None:
        rows: list[tuple[object, ...] | None] = []
        for kind, account, ids in jobs:
            if kind == "add":
                rows.extend(self._row(account, mid) for mid in ids)
        with self._lock:
            self._conn.execute("BEGIN")
            for kind, account, ids in jobs:
                if kind in {"remove", "add"}:
                    self._conn.executemany(
                        "DELETE FROM messages WHERE account = ? AND id = ?",
                        [(account, mid) for mid in ids],
                    )
                elif kind == "forget":
                    self._conn.execute("DELETE FROM messages WHERE account = ?", (account,))
            self._conn.executemany(
                "INSERT INTO messages VALUES (?, ?, ?, ?, ?, ?, ?)", [r for r in rows if r]
            )
            self._conn.execute("COMMIT")

    def _row(self, account: str, message_id: str) -> tuple[object, ...] | None:
        try:
            path = self._store.find(account, message_id)
            if path is None:
                return None
            # the time it was received (an import's original date): its mtime
            return (account, message_id, path.stat().st_mtime, *document(path))
        except (OSError, UnknownMailbox):
            return None

    def _reconcile(self) -> None:
        """Bring the index in line with the Maildirs: index what is missing, drop the rest."""
        with self._lock:
            indexed: dict[str, set[str]] = {}
            for account, mid in self._conn.execute("SELECT account, id FROM messages"):
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
                self._write([("add", account, missing[start : start + BATCH])])
            added += len(missing)
        for account in indexed:  # accounts that no longer exist
            self._write([("forget", account, [])])
        if added or dropped:
            log.info("search index reconciled", indexed=added, dropped=dropped)
