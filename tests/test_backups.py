"""Backups, restores and imports end to end: ``mailctl backup`` over the REST API while 500
deliveries and POP3 deletes run, ``mailctl verify``, ``mailctl restore`` into a new stack whose
POP3 UIDLs are the old ones, damaged backups refused; ``mailctl import`` of a Maildir written by
mpop and of an mbox written by Python's ``mailbox``, byte-exact over POP3, once however often it
runs, with the original dates; ``mailctl export`` read back."""

from __future__ import annotations

import asyncio
import datetime
import fcntl
import hashlib
import mailbox
import os
import poplib
import secrets
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mailstack import mpop
from mailstack.stack import Stack

HOST = "127.0.0.1"
pytestmark = pytest.mark.timeout(600)
#: What these tests need: the mail arrives through the internal API, smtp-in's path into the store.
SERVICES = ("redis", "mailstore-api", "pop3")
POP3_ENV = {"POP3_ALLOW_PLAINTEXT_AUTH": "true"}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with Stack(tmp_path_factory.mktemp("source"), SERVICES, env=POP3_ENV) as running:
        yield running


def mailctl_env(stack: Any, data_dir: Path | None = None) -> dict[str, str]:
    env = {**os.environ, "MAILSTORE_API_URL": stack.api_url, "ADMIN_TOKEN": stack.admin_token}
    if data_dir is not None:
        env["DATA_DIR"] = str(data_dir)
    return env


def mailctl(
    stack: Any, *args: str, data_dir: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailstore_api.cli", *args],
        env=mailctl_env(stack, data_dir),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def fresh_address(prefix: str) -> str:
    return f"{prefix}{secrets.token_hex(4)}@pokey.onl"


def message(n: int, size: int = 0) -> bytes:
    """A distinct message; ``size`` pads the body (a large one is spilled by the mailstore)."""
    padding = b"".join(b"line %d of the padding\r\n" % i for i in range(size // 24))
    return b"Subject: m%d\r\nMessage-ID: <m%d.%s@test>\r\n\r\nbody %d\r\n%s" % (
        n,
        n,
        secrets.token_hex(4).encode(),
        n,
        padding,
    )


def stored(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n")


async def deliver(
    stack: Any,
    items: list[tuple[str, bytes]],
    acked: dict[str, bytes],
    progress: tuple[int, threading.Event] | None = None,
) -> None:
    """Deliver through the internal API (smtp-in's path), 50 at a time; each message
    acknowledged (201) goes into ``acked`` (id -> stored bytes); ``progress``: an event set once
    that many are acknowledged."""
    concurrency = 50
    limit = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(
        base_url=f"{stack.api_url}/internal/v1",
        headers={"Authorization": f"Bearer {stack.service_token}"},
        timeout=120,
        limits=httpx.Limits(max_connections=concurrency),
    ) as client:

        async def one(recipient: str, data: bytes) -> None:
            async with limit:
                r = await client.post("/deliveries", params={"recipient": recipient}, content=data)
            assert r.status_code == 201, r.text
            acked[r.json()["id"]] = stored(data)
            if progress is not None and len(acked) >= progress[0]:
                progress[1].set()

        await asyncio.gather(*(one(rcpt, data) for rcpt, data in items))


def pop3(stack: Any, address: str, password: str) -> poplib.POP3:
    client = poplib.POP3(HOST, stack.pop3_port, timeout=60)
    client.user(address)
    client.pass_(password)
    return client


def uidls(stack: Any, address: str, password: str) -> set[str]:
    client = pop3(stack, address, password)
    try:
        return {line.split()[1].decode() for line in client.uidl()[1]}
    finally:
        client.quit()


def backup_members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isreg()}  # type: ignore[union-attr]


def messages_of(members: dict[str, bytes], address: str) -> dict[str, bytes]:
    local, domain = address.split("@")
    prefix = f"mail/{domain}/{local}/"
    return {
        name.rsplit("/", 1)[1]: data
        for name, data in members.items()
        if name.startswith(prefix) and name.split("/")[3] in ("new", "cur")
    }


def test_backup_under_load_is_consistent_and_restores_the_uidls(
    stack: Any, make_user: Callable[..., tuple[str, str]], tmp_path: Path
) -> None:
    busy = [make_user(fresh_address("busy")) for _ in range(5)]
    popped, popped_pw = make_user(fresh_address("popped"))
    quiet, quiet_pw = make_user(fresh_address("quiet"))
    acked: dict[str, bytes] = {}
    sent = [(busy[n % 5][0], message(n, 300_000 if n % 50 == 0 else 0)) for n in range(100)]
    sent += [(popped, message(1000 + n)) for n in range(150)]
    sent += [(quiet, message(2000 + n)) for n in range(20)]
    asyncio.run(deliver(stack, sent, acked))
    popped_ids = uidls(stack, popped, popped_pw)

    load = [(busy[n % 5][0], message(3000 + n, 300_000 if n % 50 == 0 else 0)) for n in range(500)]
    during: dict[str, bytes] = {}
    started = threading.Event()
    hundred = threading.Event()  # 100 of the load acknowledged: the backup starts
    done = threading.Event()
    deleted: set[str] = set()

    def pop3_deletes() -> None:
        started.wait()
        while not done.is_set():
            client = pop3(stack, popped, popped_pw)
            listing = client.uidl()[1][:5]
            for line in listing:
                number, uid = line.split()
                client.dele(int(number))
                deleted.add(uid.decode())
            client.quit()
            if not listing:
                return

    results: dict[str, Any] = {}

    def run_backup() -> None:
        hundred.wait()
        # Every message acknowledged before the backup starts must be in it.
        results["before"] = {**acked, **during}
        results["proc"] = mailctl(stack, "backup", str(tmp_path / "backup.tar"))

    threads = [threading.Thread(target=pop3_deletes), threading.Thread(target=run_backup)]
    for t in threads:
        t.start()
    started.set()
    try:
        asyncio.run(deliver(stack, load, during, (100, hundred)))
    finally:
        done.set()
        for t in threads:
            t.join()
    proc = results["proc"]
    assert proc.returncode == 0, proc.stderr
    assert deleted, "POP3 deleted nothing while the backup ran"

    members = backup_members(tmp_path / "backup.tar")
    assert not [n for n in members if "/tmp/" in n]
    in_backup: dict[str, bytes] = {}
    for address, _ in [*busy, (popped, ""), (quiet, "")]:
        in_backup |= messages_of(members, address)
    everything = {**acked, **during}
    for uid, data in in_backup.items():  # nothing partial: each file is a message as sent
        assert everything[uid] == data, uid
    missing = set(results["before"]) - set(in_backup)
    # Only messages POP3 deleted may be missing (expunged during the backup).
    assert missing <= deleted & popped_ids, sorted(missing)[:5]

    assert mailctl(stack, "verify", str(tmp_path / "backup.tar")).returncode == 0

    restored = Stack(tmp_path / "restored", SERVICES, env=POP3_ENV)
    r = mailctl(restored, "restore", str(tmp_path / "backup.tar"), data_dir=restored.data_dir)
    assert r.returncode == 0, r.stderr
    with restored:
        assert uidls(restored, quiet, quiet_pw) == uidls(stack, quiet, quiet_pw)
        assert uidls(restored, quiet, quiet_pw) == set(messages_of(members, quiet))
        for address, password in [*busy, (popped, popped_pw)]:
            assert uidls(restored, address, password) == set(messages_of(members, address))
        client = pop3(restored, quiet, quiet_pw)
        try:
            first = client.uidl(1).split()[2].decode()
            assert b"\r\n".join(client.retr(1)[1]) + b"\r\n" == acked[first].replace(b"\n", b"\r\n")
        finally:
            client.quit()


def flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]


def test_damaged_backups_are_refused_by_verify_and_restore(
    stack: Any, make_user: Callable[..., tuple[str, str]], tmp_path: Path
) -> None:
    address, _ = make_user(fresh_address("damaged"))
    marker = b"a message to damage " + secrets.token_hex(8).encode()
    asyncio.run(deliver(stack, [(address, b"Subject: x\r\n\r\n" + marker + b"\r\n")], {}))
    good = tmp_path / "good.tar"
    assert mailctl(stack, "backup", str(good)).returncode == 0
    data = good.read_bytes()
    # Made from the volume without the server: the same members (nothing arrives meanwhile).
    local = tmp_path / "local.tar"
    r = mailctl(stack, "backup", "--local", str(local), data_dir=stack.data_dir)
    assert r.returncode == 0, r.stderr
    assert mailctl(stack, "verify", str(local)).returncode == 0
    assert backup_members(local).keys() == backup_members(good).keys()
    # To stdout, here a pipe (widened to mailctl's 1 MiB buffer): the same backup.
    with subprocess.Popen(
        [sys.executable, "-m", "mailstore_api.cli", "backup", "--local", "-"],
        env=mailctl_env(stack, stack.data_dir),
        stdout=subprocess.PIPE,
    ) as to_stdout:
        assert to_stdout.stdout is not None
        output = to_stdout.stdout.read()
        assert to_stdout.wait(timeout=300) == 0
        assert fcntl.fcntl(to_stdout.stdout.fileno(), fcntl.F_GETPIPE_SZ) == 1 << 20
    piped = tmp_path / "piped.tar"
    piped.write_bytes(output)
    assert mailctl(stack, "verify", str(piped)).returncode == 0
    assert backup_members(piped).keys() == backup_members(good).keys()
    # Any tar reads it: GNU tar lists what tarfile does.
    listed = subprocess.run(["tar", "-tf", str(good)], capture_output=True, check=True, text=True)
    assert listed.stdout.splitlines() == list(backup_members(good))
    flipped = tmp_path / "flipped.tar"
    flipped.write_bytes(flip(data, data.index(marker) + 3))
    truncated = tmp_path / "truncated.tar"
    truncated.write_bytes(data[: len(data) // 2])
    manifest_flipped = tmp_path / "manifest.tar"
    manifest_flipped.write_bytes(flip(data, data.rindex(b'"sha256"') + 14))

    checks = {
        flipped: "checksum or size differs",
        truncated: "",
        manifest_flipped: "does not match",
    }
    for path, reason in checks.items():
        r = mailctl(stack, "verify", str(path))
        assert r.returncode == 1, (path, r.stdout)
        assert "not a sound backup" in r.stderr and reason in r.stderr, r.stderr
        target = tmp_path / f"volume-{path.stem}"
        target.mkdir()
        r = mailctl(stack, "restore", str(path), data_dir=target)
        assert r.returncode == 1, r.stdout
        assert "nothing restored" in r.stderr, r.stderr
        assert sorted(p.name for p in target.iterdir()) == ["mailstore.lock"]

    # The good one restores, once: a second restore finds the volume in use.
    target = tmp_path / "volume-good"
    target.mkdir()
    assert mailctl(stack, "restore", str(good), data_dir=target).returncode == 0
    again = mailctl(stack, "restore", str(good), data_dir=target)
    assert again.returncode == 1
    assert "is not empty" in again.stderr, again.stderr
    local, domain = address.split("@")
    [restored] = (target / "mail" / domain / local / "new").iterdir()
    assert (
        hashlib.sha256(restored.read_bytes()).digest()
        == hashlib.sha256(b"Subject: x\n\n" + marker + b"\n").digest()
    )


def retrieved(stack: Any, address: str, password: str) -> list[bytes]:
    """Every message of the maildrop as POP3 RETR gives it (CRLF line ends), oldest first."""
    client = pop3(stack, address, password)
    try:
        count = client.stat()[0]
        return [b"\r\n".join(client.retr(n)[1]) + b"\r\n" for n in range(1, count + 1)]
    finally:
        client.quit()


def received(admin: httpx.Client, address: str) -> list[str]:
    r = admin.get(f"/users/{address}/messages", params={"limit": 500})
    assert r.status_code == 200, r.text
    return [m["received"] for m in r.json()["messages"]]


def iso(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).isoformat(timespec="seconds")


def crlf(data: bytes) -> bytes:
    return data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


#: Bodies that test the edges: a From line, dots, trailing blanks, 8-bit octets, a bare CR.
TRICKY = [
    b"Subject: one\r\nMessage-ID: <one@test>\r\n\r\nFrom the start of a line\r\n.\r\n..x\r\n",
    b"Subject: two\r\n\r\ntrailing blanks   \r\n\xc3\xa9t\xc3\xa9 \xff\r\nbare\rCR\r\n",
    b"Subject: three\r\nMessage-ID: <three@test>\r\n\r\n" + (b"x" * 70 + b"\r\n") * 4000,
]


def test_import_of_a_maildir_written_by_mpop(
    stack: Any, admin: httpx.Client, make_user: Callable[..., tuple[str, str]], tmp_path: Path
) -> None:
    source, source_pw = make_user(fresh_address("mpopsrc"))
    target, target_pw = make_user(fresh_address("mpopdst"))
    asyncio.run(deliver(stack, [(source, data) for data in TRICKY], {}))
    maildir = mpop.maildir(tmp_path)
    rc = mpop.write_rc(
        tmp_path,
        f"account default\nhost {HOST}\nport {stack.pop3_port}\ntls off\nauth user\n"
        f"user {source}\npassword {source_pw}\nuidls_file {tmp_path}/uidls\n"
        f"delivery maildir {maildir}\nkeep on\nreceived_header off\n",
    )
    mpop.run(rc, "-q")
    files = sorted((maildir / "new").iterdir(), key=lambda p: p.read_bytes())
    assert len(files) == len(TRICKY)
    dates = [1_500_000_000.0 + 86_400 * n for n in range(len(files))]  # an old mailbox
    for path, date in zip(files, dates, strict=True):
        os.utime(path, (date, date))

    first = mailctl(stack, "import", target, str(maildir))
    assert first.returncode == 0, first.stderr
    assert f"imported {len(TRICKY)} messages" in first.stdout, first.stdout
    again = mailctl(stack, "import", target, str(maildir))
    assert again.returncode == 0, again.stderr
    assert f"imported 0 messages into {target}, {len(TRICKY)} already there" in again.stdout

    # Oldest first by the files' dates; each RETR is the file's octets, with CRLF.
    by_date = sorted(zip(dates, files, strict=True))
    assert retrieved(stack, target, target_pw) == [crlf(p.read_bytes()) for _, p in by_date]
    assert received(admin, target) == [iso(d) for d, _ in by_date]
    # mpop stored what POP3 sent (no Received: of its own): byte-exact against the source, too.
    assert sorted(retrieved(stack, target, target_pw)) == sorted(
        retrieved(stack, source, source_pw)
    )


def test_import_of_an_mbox_written_by_python_and_export(
    stack: Any, admin: httpx.Client, make_user: Callable[..., tuple[str, str]], tmp_path: Path
) -> None:
    target, target_pw = make_user(fresh_address("mboxdst"))
    path = tmp_path / "old.mbox"
    box = mailbox.mbox(path)
    dates = [1_400_000_000 + 3600 * n for n in range(len(TRICKY))]
    for data, date in zip(TRICKY, dates, strict=True):
        # The octets as they are (a parsed mboxMessage would be regenerated: a bare CR becomes
        # a line end), after the From line that mailbox.mbox takes from a bytes message.
        from_line = b"From sender@remote.test " + time.asctime(time.gmtime(date)).encode()
        box.add(from_line + b"\n" + data.replace(b"\r\n", b"\n"))
    box.close()
    assert b"\n>From the start" in path.read_bytes()  # mailbox quoted it

    r = mailctl(stack, "import", target, str(path))
    assert r.returncode == 0, r.stderr
    assert retrieved(stack, target, target_pw) == [crlf(data) for data in TRICKY]
    assert received(admin, target) == [iso(d) for d in dates]
    assert "imported 0 messages" in mailctl(stack, "import", target, str(path)).stdout

    # Exported and imported into another account: the same octets, ">From" lines included.
    quoted = b"Subject: quoted\r\n\r\n>From quoted\r\n>>From twice\r\nFrom bare\r\n"
    asyncio.run(deliver(stack, [(target, quoted)], {}))
    export = tmp_path / "export.mbox"
    r = mailctl(stack, "export", target, "--output", str(export))
    assert r.returncode == 0, r.stderr
    copy, copy_pw = make_user(fresh_address("mboxcopy"))
    r = mailctl(stack, "import", copy, str(export))
    assert r.returncode == 0, r.stderr
    assert retrieved(stack, copy, copy_pw) == retrieved(stack, target, target_pw)
    assert received(admin, copy) == received(admin, target)


def test_import_goes_through_quotas(
    stack: Any, admin: httpx.Client, make_user: Callable[..., tuple[str, str]], tmp_path: Path
) -> None:
    target, _ = make_user(fresh_address("quota"))
    assert admin.patch(f"/users/{target}", json={"quota_messages": 1}).status_code == 200
    maildir = tmp_path / "Maildir"
    (maildir / "new").mkdir(parents=True)
    for n, data in enumerate(TRICKY[:2]):
        (maildir / "new" / f"m{n}").write_bytes(data)
    r = mailctl(stack, "import", target, str(maildir))
    assert r.returncode == 1
    assert "quota_exceeded" in r.stderr, r.stderr
    assert len(received(admin, target)) == 1
