"""Faults (issue 6): each test kills or starves a piece of a stack of its own and counts the outcome.

These need local processes (SIGKILL, SIGSTOP, a small file system), so they always use
``mailstack.stack.Stack`` and are marked ``local_only``.
"""

from __future__ import annotations

import contextlib
import poplib
import re
import shutil
import signal
import smtplib
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from mailstack.ports import wait_until
from mailstack.stack import Stack

pytestmark = [pytest.mark.local_only, pytest.mark.slow]
HOST = "127.0.0.1"


@pytest.fixture
def fault_stack(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Stack]:
    env = {"POP3_ALLOW_PLAINTEXT_AUTH": "true", "POP3_LOCK_TTL": "3", "POP3_AUTH_FAIL_DELAY": "0"}
    env.update(getattr(request, "param", {}))
    with Stack(tmp_path / "stack", env=env) as stack:
        yield stack


def admin_client(stack: Stack) -> httpx.Client:
    return httpx.Client(
        base_url=f"{stack.api_url}/api/v1",
        headers={"Authorization": f"Bearer {stack.admin_token}"},
        timeout=30,
    )


def add_user(stack: Stack, name: str, password: str = "secret-password") -> None:
    with admin_client(stack) as admin:
        response = admin.post("/users", json={"username": name, "password": password})
        assert response.status_code == 201, response.text


def deliver(stack: Stack, user: str, message: bytes) -> str:
    response = httpx.post(
        f"{stack.api_url}/internal/v1/deliveries",
        params={"recipient": user},
        content=message,
        headers={"Authorization": f"Bearer {stack.service_token}"},
        timeout=30,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def stored_files(stack: Stack, user: str) -> list[Path]:
    box = stack.maildir(user)
    return sorted([*(box / "new").iterdir(), *(box / "cur").iterdir()])


def tmp_files(stack: Stack, user: str) -> list[Path]:
    return list((stack.maildir(user) / "tmp").iterdir())


def pop_login(port: int, user: str, password: str = "secret-password") -> poplib.POP3:
    pop = poplib.POP3(HOST, port, timeout=30)
    pop.user(user)
    pop.pass_(password)
    return pop


def pop_login_when_free(port: int, user: str, within: float = 30.0) -> poplib.POP3:
    """Log in, waiting out a lock left by a session that died (it expires after its TTL)."""

    def attempt() -> poplib.POP3 | None:
        try:
            return pop_login(port, user)
        except poplib.error_proto as exc:
            assert b"[IN-USE]" in exc.args[0], exc
            return None

    return wait_until(attempt, within, f"{user}'s lock to expire")


@contextlib.contextmanager
def pop_session(port: int, user: str) -> Iterator[poplib.POP3]:
    """A logged-in session that QUITs at the end."""
    pop = pop_login(port, user)
    try:
        yield pop
    finally:
        pop.quit()


# --- the mailstore killed during SMTP deliveries -------------------------------------------------


def body_for(seq: int) -> bytes:
    line = f"message {seq:04d} ".encode() + b"x" * 60 + b"\r\n"
    return f"Subject: seq {seq:04d}\r\nX-Seq: {seq:04d}\r\n\r\n".encode() + line * 60


def test_mailstore_killed_during_500_smtp_deliveries(fault_stack: Stack) -> None:
    stack = fault_stack
    add_user(stack, "carol")
    outcomes: dict[int, str] = {}
    lock = threading.Lock()
    sent_ok = threading.Event()

    def sender(first: int, count: int) -> None:
        for seq in range(first, first + count):
            try:
                with smtplib.SMTP(HOST, stack.smtp_port, timeout=60) as smtp:
                    smtp.sendmail("alice@example.org", ["carol@pokey.onl"], body_for(seq))
                result = "250"
            except smtplib.SMTPResponseException as exc:
                result = "4xx" if 400 <= exc.smtp_code < 500 else f"{exc.smtp_code}"
            except smtplib.SMTPRecipientsRefused as exc:
                [(code, _)] = exc.recipients.values()
                result = "4xx" if 400 <= code < 500 else f"{code}"
            except (TimeoutError, smtplib.SMTPServerDisconnected, ConnectionError):
                result = "broken"
            with lock:
                outcomes[seq] = result
                if sum(r == "250" for r in outcomes.values()) >= 60:
                    sent_ok.set()

    threads = [threading.Thread(target=sender, args=(n * 20, 20)) for n in range(25)]
    for thread in threads:
        thread.start()
    assert sent_ok.wait(120), "no deliveries got through before the kill"
    with lock:
        failed_before = sum(r != "250" for r in outcomes.values())

    def failed_since() -> bool:
        with lock:
            return sum(r != "250" for r in outcomes.values()) > failed_before

    stack.kill_service("mailstore-api")
    wait_until(failed_since, 60, "a delivery failing while the mailstore is down")
    stack.start_service("mailstore-api")
    for thread in threads:
        thread.join(300)
    counts = Counter(outcomes.values())
    print(f"\n500 SMTP deliveries, mailstore SIGKILLed mid-run: {dict(counts)}")
    assert len(outcomes) == 500
    assert set(counts) <= {"250", "4xx", "broken"}, counts
    assert counts["4xx"] + counts["broken"] > 0, "the kill hit no delivery in flight"

    stored = Counter()
    for path in stored_files(stack, "carol"):
        data = path.read_bytes()
        match = re.search(rb"^X-Seq: (\d{4})$", data, re.MULTILINE)
        assert match, f"{path.name} has no X-Seq header: partial or foreign"
        seq = int(match.group(1))
        # Nothing partial: the stored body is the whole body sent, with LF line ends.
        assert data.endswith(body_for(seq).split(b"\r\n\r\n", 1)[1].replace(b"\r\n", b"\n"))
        stored[seq] += 1
    for seq, result in outcomes.items():
        if result == "250":
            assert stored[seq] == 1, f"message {seq} got 250 but is stored {stored[seq]} times"
        else:
            assert stored[seq] <= 1
    assert tmp_files(stack, "carol") == [], "tmp/ was not cleaned at start-up"
    with pop_session(stack.pop3_port, "carol") as pop:
        assert pop.stat()[0] == sum(stored.values())


# --- Redis stopped during POP3 sessions -----------------------------------------------------------


def test_redis_stopped_during_pop3_sessions(fault_stack: Stack) -> None:
    stack = fault_stack
    add_user(stack, "dave")
    add_user(stack, "erin")
    for n in range(2):
        deliver(stack, "dave", f"Subject: {n}\n\nbody {n}\n".encode())
    live = pop_login(stack.pop3_port, "dave")
    assert live.stat()[0] == 2

    stack.stop_service("redis")
    # A new login is refused, temporarily.
    pop = poplib.POP3(HOST, stack.pop3_port, timeout=30)
    pop.user("erin")
    with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\]"):
        pop.pass_("secret-password")
    pop.close()
    # The live session cannot expunge without a lock it can prove.
    live.dele(1)
    with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\]"):
        live.quit()
    live.close()
    assert len(stored_files(stack, "dave")) == 2

    stack.start_service("redis")
    # Redis kept dave's lock (append-only file) until its 3 s TTL runs out; then logins work again.
    again = pop_login_when_free(stack.pop3_port, "dave")
    assert again.stat()[0] == 2
    again.dele(1)
    again.quit()
    assert len(stored_files(stack, "dave")) == 1
    with pop_session(stack.pop3_port, "erin") as pop:
        assert pop.stat() == (0, 0)


# --- pop3 killed during UPDATE ----------------------------------------------------------------------


def test_pop3_killed_during_update(fault_stack: Stack) -> None:
    stack = fault_stack
    add_user(stack, "frank")
    originals: dict[str, bytes] = {}
    for n in range(300):
        message = f"Subject: {n}\n\n".encode() + f"line {n}\n".encode() * 40
        originals[deliver(stack, "frank", message)] = message
    pop = pop_login(stack.pop3_port, "frank")
    _, listing, _ = pop.uidl()
    uidl_of = {int(num): uid.decode() for num, uid in (line.split() for line in listing)}
    marked = {uidl_of[n] for n in range(1, 301, 2)}
    for n in range(1, 301, 2):
        pop.dele(n)
    pop.sock.sendall(b"QUIT\r\n")
    stack.kill_service("pop3")
    pop.close()
    stack.start_service("pop3")

    remaining = {}
    for path in stored_files(stack, "frank"):
        remaining[path.name.split(":2,")[0]] = path.read_bytes()
    unmarked = set(originals) - marked
    assert unmarked <= set(remaining), "a message that was not marked is gone"
    for message_id, data in remaining.items():
        assert data == originals[message_id], f"{message_id} is corrupt"
    deleted = len(marked - set(remaining))
    print(f"\npop3 SIGKILLed during UPDATE: {deleted} of {len(marked)} marked messages deleted")
    # Whatever happened, the mailbox is consistent for the next session (once the dead session's
    # lock has expired: POP3_LOCK_TTL is 3 s here).
    again = pop_login_when_free(stack.pop3_port, "frank")
    assert again.stat()[0] == len(remaining)
    again.quit()
    assert tmp_files(stack, "frank") == []


# --- a full volume -------------------------------------------------------------------------------


@pytest.fixture
def small_volume_stack(tmp_path: Path) -> Iterator[Stack]:
    data = tmp_path / "stack" / "data"
    data.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(data)], check=True)
    try:
        with Stack(tmp_path / "stack", env={"POP3_ALLOW_PLAINTEXT_AUTH": "true"}) as stack:
            yield stack
    finally:
        subprocess.run(["umount", "-l", str(data)], check=False)


def test_volume_full(small_volume_stack: Stack) -> None:
    stack = small_volume_stack
    add_user(stack, "gina")
    chunk = b"Subject: big\r\n\r\n" + (b"y" * 998 + b"\r\n") * 200  # about 200 KB
    accepted = 0
    refusal: smtplib.SMTPResponseException | None = None
    for _ in range(40):
        try:
            with smtplib.SMTP(HOST, stack.smtp_port, timeout=30) as smtp:
                smtp.sendmail("alice@example.org", ["gina@pokey.onl"], chunk)
            accepted += 1
        except smtplib.SMTPResponseException as exc:
            refusal = exc
            break
    print(f"\nvolume of 3 MiB: {accepted} messages of 200 KB accepted before the refusal")
    assert refusal is not None, "the volume never filled"
    assert refusal.smtp_code == 452
    assert refusal.smtp_error.startswith(b"4.3.1")
    files = stored_files(stack, "gina")
    assert len(files) == accepted
    expected = chunk.replace(b"\r\n", b"\n").split(b"\n\n", 1)[1]
    for path in files:
        assert path.read_bytes().endswith(expected), f"{path.name} is corrupt"
    assert tmp_files(stack, "gina") == []
    # Space returns: delete two messages over the admin API, delivery resumes.
    with admin_client(stack) as admin:
        for path in files[:2]:
            assert admin.delete(f"/users/gina/messages/{path.name}").status_code == 204
    with smtplib.SMTP(HOST, stack.smtp_port, timeout=30) as smtp:
        smtp.sendmail("alice@example.org", ["gina@pokey.onl"], chunk)
    assert len(stored_files(stack, "gina")) == accepted - 1


# --- lock expiry and fencing -------------------------------------------------------------------------


def test_expired_lock_cannot_expunge_after_takeover(fault_stack: Stack) -> None:
    """Session A's pop3 pauses longer than the lock TTL; B takes the maildrop; A wakes and QUITs."""
    stack = fault_stack
    add_user(stack, "hank")
    for n in range(3):
        deliver(stack, "hank", f"Subject: {n}\n\nbody {n}\n".encode())
    replica = stack.start_replica("pop3")
    session_a = pop_login(stack.pop3_port, "hank")
    session_a.dele(1)
    pop3_process = stack.processes["pop3"].popen
    assert pop3_process is not None
    pop3_process.send_signal(signal.SIGSTOP)
    try:
        # B gets in once A's lease has expired unrenewed (POP3_LOCK_TTL=3)
        session_b = pop_login_when_free(replica["pop3"], "hank")
        assert session_b.stat()[0] == 3
    finally:
        pop3_process.send_signal(signal.SIGCONT)
    with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\]"):
        session_a.quit()
    session_a.close()
    assert len(stored_files(stack, "hank")) == 3, "a fenced-off session deleted mail"
    session_b.dele(2)
    session_b.quit()
    assert len(stored_files(stack, "hank")) == 2


def test_redis_losing_its_data_does_not_let_an_old_session_expunge(fault_stack: Stack) -> None:
    """Redis restarts empty (fencing counter back to 0); the old session is still fenced off."""
    stack = fault_stack
    add_user(stack, "ivan")
    for n in range(2):
        deliver(stack, "ivan", f"Subject: {n}\n\nbody {n}\n".encode())
    for _ in range(2):  # earlier sessions: A's fencing number is 3, above a reset counter's 1
        pop_login(stack.pop3_port, "ivan").quit()
    session_a = pop_login(stack.pop3_port, "ivan")
    session_a.dele(1)
    stack.kill_service("redis")
    shutil.rmtree(stack.redis_dir)
    stack.redis_dir.mkdir()
    stack.start_service("redis")
    # B logs in: Redis's counter restarted below what the mailstore has seen; pop3 must recover.
    session_b = pop_login(stack.pop3_port, "ivan")
    assert session_b.stat()[0] == 2
    with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\]"):
        session_a.quit()
    with contextlib.suppress(OSError):
        session_a.close()
    assert len(stored_files(stack, "ivan")) == 2
    session_b.dele(2)
    session_b.quit()
    assert len(stored_files(stack, "ivan")) == 1
