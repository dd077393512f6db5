"""Schema migrations and the volume of the release before domains, on real files.

``tests/fixtures/volume-f52a741`` is a ``DATA_DIR`` made by commit f52a741 (one user namespace,
``mail/<user>/``; see its README): extracted into a fresh directory, the mailstore of today must
migrate it in place at its first start, keeping every message (same ids: POP3 UIDLs), password
and APOP secret, and a second start must change nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis
from mailcommon.locks import MaildropLocks
from mailstore_api.db import Database
from mailstore_api.maildir import MailStore
from mailstore_api.migrations import MIGRATIONS, Context

pytestmark = pytest.mark.timeout(120)

FIXTURE = Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "volume-f52a741"
MANIFEST: dict[str, Any] = json.loads((FIXTURE / "manifest.json").read_text())
PRIMARY = "pokey.onl"  # the first of the manifest's MAIL_DOMAINS
USERS = sorted(MANIFEST["passwords"])
STAMP = "<4711.1796173036@mx.pokey.onl>"


def user_version(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def rows(path: Path, query: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(query).fetchall()
    finally:
        conn.close()


def dump(path: Path) -> list[str]:
    """The database's whole content as SQL."""
    conn = sqlite3.connect(path)
    try:
        return list(conn.iterdump())
    finally:
        conn.close()


def files(data_dir: Path) -> dict[str, tuple[int, int, str]]:
    """Every directory and file under mail/: (inode, links, content digest)."""
    out: dict[str, tuple[int, int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(data_dir / "mail"):
        for name in dirnames:
            out[str(Path(dirpath, name).relative_to(data_dir)) + "/"] = (0, 0, "")
        for name in filenames:
            path = Path(dirpath, name)
            st = path.stat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            out[str(path.relative_to(data_dir))] = (st.st_ino, st.st_nlink, digest)
    return out


@pytest.fixture
def legacy(make_mailstore, tmp_path):
    """The mailstore of today on a copy of the old volume, not started yet."""
    root = tmp_path / "legacy"
    root.mkdir()
    with tarfile.open(FIXTURE / "volume.tar.gz") as tar:
        tar.extractall(root, filter="fully_trusted")  # our own fixture; keeps the hard link
    assert (root / "data" / "mail" / "alice" / "new").is_dir()
    store = make_mailstore(
        root,
        MAIL_DOMAINS=MANIFEST["domains"],
        APOP_ENABLED="true",
        LOG_LEVEL="INFO",
        # the fixture's keys were recorded when it was made: keep them, however long ago
        DELIVERY_KEY_RETENTION=str(100 * 365 * 86400),
    )
    store.admin_token = MANIFEST["admin_token"]
    store.service_token = MANIFEST["service_token"]
    return store


def log_events(store) -> list[dict[str, Any]]:
    lines = store.log_file.read_text().splitlines()
    return [json.loads(line) for line in lines if line.startswith("{")]


def snapshot_ids(store, redis_url: str, address: str) -> list[str]:
    """What a POP3 session's UIDL lists: the snapshot under the maildrop lock."""

    async def run() -> list[str]:
        client = aioredis.Redis.from_url(redis_url)
        locks = MaildropLocks(client)
        # bob's old sessions registered fence 1 with the mailstore: start above it, as pop3 does
        await locks.raise_fence(address, 1)
        lease = await locks.acquire(address, 30_000)
        assert lease is not None
        try:
            with store.internal() as internal:
                r = internal.post(
                    f"/mailboxes/{address}/snapshot",
                    json={"lock_token": lease.token, "fence": lease.fence},
                )
                assert r.status_code == 200, r.text
                return [m["id"] for m in r.json()["messages"]]
        finally:
            await locks.release(lease)
            await client.aclose()

    return asyncio.run(run())


def test_the_old_volume_migrates_with_every_message_password_and_secret(legacy, redis_server):
    store = legacy
    data = store.data_dir
    assert user_version(data / "users.sqlite3") == 0  # the first release never set one
    shared = set(MANIFEST["uidls"]["alice"]) & set(MANIFEST["uidls"]["bob"])
    assert len(shared) == 1
    (shared_id,) = shared
    old_inode = (data / "mail" / "alice" / "new" / shared_id).stat().st_ino
    store.start()

    # the schema is the newest, the moves are done, the old layout is gone
    assert user_version(data / "users.sqlite3") == len(MIGRATIONS)
    assert rows(data / "users.sqlite3", "SELECT * FROM maildir_moves") == []
    assert sorted(p.name for p in (data / "mail").iterdir() if not p.name.startswith(".")) == [
        PRIMARY
    ]
    assert not any(p.name.startswith(".trash") for p in (data / "mail").iterdir())
    for user in USERS:
        assert not (data / "mail" / user).exists()
        box = data / "mail" / PRIMARY / user
        for sub in ("tmp", "new", "cur"):
            assert (box / sub).is_dir()
        assert sorted(p.name for p in (box / "new").iterdir()) == sorted(MANIFEST["uidls"][user])
        assert list((box / "tmp").iterdir()) == [] and list((box / "cur").iterdir()) == []
    alice_copy = data / "mail" / PRIMARY / "alice" / "new" / shared_id
    bob_copy = data / "mail" / PRIMARY / "bob" / "new" / shared_id
    assert alice_copy.stat().st_ino == bob_copy.stat().st_ino == old_inode  # moved, not copied
    assert alice_copy.stat().st_nlink == 2

    with store.admin() as admin, store.internal() as internal:
        domains = {d["name"]: d for d in admin.get("/domains").json()["domains"]}
        assert set(domains) == {"pokey.onl", "example.test"}
        assert domains[PRIMARY]["primary"] and domains[PRIMARY]["accounts"] == len(USERS)
        users = {u["username"]: u for u in admin.get("/users").json()["users"]}
        assert sorted(users) == [f"{user}@{PRIMARY}" for user in USERS]
        for user in USERS:
            address = f"{user}@{PRIMARY}"
            listing = admin.get(f"/users/{user}/messages").json()["messages"]
            assert [m["id"] for m in listing] == MANIFEST["uidls"][user]  # same ids, same order
            assert [m["uidl"] for m in listing] == MANIFEST["uidls"][user]
            assert [m["subject"] for m in listing] == MANIFEST["subjects"][user]
            sizes = [int(uidl.split(",S=")[1].split(",")[0]) for uidl in MANIFEST["uidls"][user]]
            assert users[address]["messages"] == len(sizes)  # usage counted from the files
            assert users[address]["bytes"] == sum(sizes)
            assert users[address]["apop"] == (user in MANIFEST["apop"])
            # every password, by the bare name (old clients) and by the address
            password = MANIFEST["passwords"][user]
            for name in (user, address, address.upper()):
                auth = internal.post("/auth", json={"username": name, "password": password})
                assert auth.json()["valid"] and auth.json()["username"] == address, name
            wrong = internal.post("/auth", json={"username": user, "password": password + "x"})
            assert not wrong.json()["valid"]
            rcpt = internal.get(f"/recipients/{user}+list@{PRIMARY}")
            assert rcpt.json() == {"address": address, "accounts": [address], "limited": False}
            # example.test no longer shares the namespace: it is another domain
            assert internal.get(f"/recipients/{user}@example.test").status_code == 404
        # the APOP secret, sealed under the bare name by the old release, still opens
        for user, secret in MANIFEST["apop"].items():
            digest = hashlib.md5((STAMP + secret).encode()).hexdigest()
            for name in (user, f"{user}@{PRIMARY}"):
                r = internal.post(
                    "/auth/apop", json={"username": name, "timestamp": STAMP, "digest": digest}
                )
                assert r.json() == {"valid": True, "username": f"{user}@{PRIMARY}"}, name
            bad = hashlib.md5((STAMP + secret + "x").encode()).hexdigest()
            r = internal.post(
                "/auth/apop", json={"username": user, "timestamp": STAMP, "digest": bad}
            )
            assert r.json() == {"valid": False, "username": None}
        # bob's fencing number came along
        assert rows(data / "users.sqlite3", "SELECT account, highest FROM fences") == [
            (f"bob@{PRIMARY}", 1)
        ]
        # a delivery key recorded by the old release is answered as the first time
        key, name, recipients = rows(
            data / "deliveries.sqlite3",
            f"SELECT key, name, recipients FROM deliveries WHERE name = '{shared_id}'",
        )[0]
        assert json.loads(recipients) == [f"alice@{PRIMARY}", f"bob@{PRIMARY}"]  # qualified
        message = (data / "mail" / PRIMARY / "alice" / "new" / shared_id).read_bytes()
        again = internal.post(
            "/deliveries",
            params=[("recipient", "alice"), ("recipient", "bob")],
            content=message,
            headers={"Idempotency-Key": key},
        )
        assert again.status_code == 201, again.text
        assert again.json()["id"] == name
        assert again.json()["recipients"] == [f"alice@{PRIMARY}", f"bob@{PRIMARY}"]
        assert len(list((data / "mail" / PRIMARY / "alice" / "new").iterdir())) == 3
    # the POP3 UIDLs are unchanged: a client with "keep on" downloads nothing again
    for user in USERS:
        assert snapshot_ids(store, redis_server.url, f"{user}@{PRIMARY}") == MANIFEST["uidls"][user]
    store.stop()
    migrated = [e for e in log_events(store) if e["event"] == "accounts database migrated"]
    assert [e["versions"] for e in migrated] == [list(range(1, len(MIGRATIONS) + 1))]
    moved = [e for e in log_events(store) if e["event"] == "maildir moved"]
    assert sorted(e["source"] for e in moved) == USERS

    # the second start changes nothing
    before = files(data)
    users_before = dump(data / "users.sqlite3")
    keys_before = dump(data / "deliveries.sqlite3")
    events_before = len(log_events(store))
    store.start()
    with store.admin() as admin:
        listing = admin.get("/users/bob/messages").json()["messages"]
        assert [m["id"] for m in listing] == MANIFEST["uidls"]["bob"]
    store.stop()
    assert files(data) == before
    assert user_version(data / "users.sqlite3") == len(MIGRATIONS)
    assert dump(data / "users.sqlite3") == users_before
    assert dump(data / "deliveries.sqlite3") == keys_before
    later = log_events(store)[events_before:]
    assert not [e for e in later if e["event"] in ("accounts database migrated", "maildir moved")]


def test_a_database_newer_than_the_code_refuses_to_start(make_mailstore):
    store = make_mailstore()
    store.start()
    with store.admin() as admin:
        assert admin.post("/users", json={"username": "kept", "password": "pw"}).status_code == 201
    store.stop()
    database = store.data_dir / "users.sqlite3"
    newer = len(MIGRATIONS) + 1
    conn = sqlite3.connect(database)
    conn.execute(f"PRAGMA user_version = {newer}")
    conn.commit()
    conn.close()
    before = dump(database)
    proc = subprocess.run(
        store.argv, env=store.env(), capture_output=True, text=True, timeout=60, check=False
    )
    assert proc.returncode == 2, proc.stderr  # as for any configuration it refuses
    assert proc.stderr.startswith("mailstore-api: refusing to start: ")
    assert f"schema version {newer}" in proc.stderr and "newer release" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "Traceback" not in proc.stdout + proc.stderr
    assert user_version(database) == newer  # nothing was changed
    assert dump(database) == before
    assert store.maildir("kept").is_dir()


def test_an_old_user_named_like_the_primary_domain_migrates_too(legacy):
    """The old rule allowed dots, so a user may be named ``pokey.onl``: its Maildir was
    ``mail/pokey.onl/``, the very folder the primary domain's Maildirs move into."""
    store = legacy
    data = store.data_dir
    (data / "mail" / "carol.x").rename(data / "mail" / PRIMARY)
    conn = sqlite3.connect(data / "users.sqlite3")
    conn.execute("UPDATE users SET username = ? WHERE username = 'carol.x'", (PRIMARY,))
    conn.commit()
    conn.close()
    (data / "mail" / PRIMARY / "new" / "1796173037.000001abcdef0123.mail,S=4,W=5").write_bytes(
        b"own\n"
    )
    store.start()
    expected = {**MANIFEST["uidls"], PRIMARY: ["1796173037.000001abcdef0123.mail,S=4,W=5"]}
    del expected["carol.x"]
    for user, ids in expected.items():
        box = data / "mail" / PRIMARY / user
        assert sorted(p.name for p in (box / "new").iterdir()) == sorted(ids), user
        assert sorted(p.name for p in box.iterdir()) == ["cur", "new", "tmp"], user
    assert sorted(p.name for p in (data / "mail" / PRIMARY).iterdir()) == sorted(expected)
    with store.admin() as admin, store.internal() as internal:
        for user, ids in expected.items():
            listing = admin.get(f"/users/{user}@{PRIMARY}/messages").json()["messages"]
            assert [m["id"] for m in listing] == ids, user
        password = MANIFEST["passwords"]["carol.x"]
        auth = internal.post("/auth", json={"username": PRIMARY, "password": password}).json()
        assert auth["valid"] and auth["username"] == f"{PRIMARY}@{PRIMARY}"


def _steps(data: Path) -> list[Any]:
    """The start-up's migration work, step by step, with the real code: the schema migration,
    each Maildir put aside, each moved, each move marked done."""
    store = MailStore(data / "mail", "mx.pokey.onl")
    holder: dict[str, Database] = {}

    def migrate() -> None:
        holder["db"] = Database(
            data / "users.sqlite3", Context(PRIMARY, "2026-12-02T01:00:00+00:00")
        )

    steps: list[Any] = [migrate]
    for user in sorted(MANIFEST["uidls"]):
        steps.append(lambda u=user: store.stage(u, f"{PRIMARY}/{u}"))
    for user in sorted(MANIFEST["uidls"]):
        steps.append(lambda u=user: store.move(u, f"{PRIMARY}/{u}"))
        steps.append(lambda u=user: holder["db"].maildir_moved(u))

    def close() -> None:  # the process ended: its connections are gone
        holder["db"].close()

    steps.append(close)
    return steps


# 1: the schema migrated only; 2: one Maildir aside; 4: all aside; 5: alice's moved, not yet
# marked; 6: alice's marked; 8: bob's marked too
@pytest.mark.parametrize("crash_after", [1, 2, 4, 5, 6, 8])
def test_a_migration_cut_short_by_a_crash_is_finished_at_the_next_start(legacy, crash_after):
    """The first start died ``crash_after`` steps into the migration (steps as in ``_steps``):
    the next one finishes it, every message once, in place."""
    store = legacy
    data = store.data_dir
    (shared_id,) = set(MANIFEST["uidls"]["alice"]) & set(MANIFEST["uidls"]["bob"])
    steps = _steps(data)
    for step in steps[:crash_after]:
        step()
    steps[-1]()
    store.start()
    for user, ids in MANIFEST["uidls"].items():
        box = data / "mail" / PRIMARY / user
        assert sorted(p.name for p in (box / "new").iterdir()) == sorted(ids), user
        assert sorted(p.name for p in box.iterdir()) == ["cur", "new", "tmp"], user
    assert sorted(p.name for p in (data / "mail").iterdir()) == [PRIMARY]  # nothing aside
    assert (data / "mail" / PRIMARY / "bob" / "new" / shared_id).stat().st_nlink == 2
    assert rows(data / "users.sqlite3", "SELECT * FROM maildir_moves") == []
    with store.admin() as admin, store.internal() as internal:
        for user, ids in MANIFEST["uidls"].items():
            listing = admin.get(f"/users/{user}/messages").json()["messages"]
            assert [m["id"] for m in listing] == ids
            password = MANIFEST["passwords"][user]
            auth = internal.post("/auth", json={"username": user, "password": password}).json()
            assert auth["valid"]
