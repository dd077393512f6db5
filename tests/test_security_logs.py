"""Passwords never appear in logs.

A stack of our own runs a session that touches a password everywhere one can travel: user creation
(REST and mailctl), password change (REST and mailctl), a refused creation (validation error), an
APOP secret, POP3 USER/PASS right and wrong (plain and over TLS), AUTH PLAIN right and wrong (initial
response and continuation, and a malformed one), SMTP AUTH (not offered) and the internal auth call.
Then every log file of every service is searched for each password, its base64 AUTH PLAIN form and
the base64 of the password alone; the users database must not hold them in clear either.
"""

from __future__ import annotations

import base64
import os
import poplib
import smtplib
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from mailstack.stack import Stack

HOST = "127.0.0.1"
USER = "logwatch"
USER2 = "logwatch2"
PASSWORDS = {
    "created": "Zq9-CreatePass-7781-xyzzy",
    "changed": "Kv3-ChangedPass-5512-plugh",
    "wrong": "Wr0ng-Guess-4471-frotz",
    "mailctl": "Mc7-CtlPass-2093-grue",
    "mailctl-changed": "Mc8-CtlPass2-6604-bedquilt",
    "refused": "Rf5-RefusedCreate-3310-zork",
    "apop": "Ap0p-Secret-9931-xyzzy",
    "plain-wrong": "Pw2-PlainWrong-8123-dungeon",
    "malformed": "Ml4-Malformed-5541-troll",
    "smtp": "Sm6-SmtpAuth-7720-grating",
    "internal": "In1-Internal-4402-lantern",
}

pytestmark = pytest.mark.local_only


@pytest.fixture(scope="module")
def log_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {"POP3_ALLOW_PLAINTEXT_AUTH": "true", "LOG_LEVEL": "DEBUG"}
    with Stack(tmp_path_factory.mktemp("logs"), env=env) as stack:
        yield stack


def plain_blob(user: str, password: str, authzid: str = "") -> str:
    return base64.b64encode(f"{authzid}\0{user}\0{password}".encode()).decode()


def needles() -> dict[str, str]:
    """Every form in which a password could leak."""
    found: dict[str, str] = {}
    for label, password in PASSWORDS.items():
        found[label] = password
        found[f"{label} (base64)"] = base64.b64encode(password.encode()).decode()
        for user in (USER, USER2):
            found[f"{label} (AUTH PLAIN {user})"] = plain_blob(user, password)
    found["malformed (AUTH PLAIN)"] = base64.b64encode(
        f"{USER}\0{PASSWORDS['malformed']}".encode()
    ).decode()
    return found


def mailctl(stack: Stack, *args: str, stdin: str) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).parent / "mailctl"
    env = {
        **os.environ,
        "MAILSTORE_API_URL": stack.api_url,
        "ADMIN_TOKEN": stack.admin_token,
        "SECRETS_DIR": str(stack.secrets_dir),
    }
    return subprocess.run(
        [str(exe), *args],
        check=False,
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def pop3_login(
    stack: Stack, user: str, password: str, *, tls: ssl.SSLContext | None = None
) -> bool:
    pop = (
        poplib.POP3_SSL(HOST, stack.pop3s_port, context=tls, timeout=30)
        if tls
        else poplib.POP3(HOST, stack.pop3_port, timeout=30)
    )
    try:
        pop.user(user)
        pop.pass_(password)
        return True
    except poplib.error_proto:
        return False
    finally:
        pop.close()


def auth_plain(stack: Stack, blob: str, *, continuation: bool) -> bytes:
    pop = poplib.POP3(HOST, stack.pop3_port, timeout=30)
    try:
        if continuation:
            pop._putcmd("AUTH PLAIN")  # type: ignore[attr-defined]
            assert pop._getline()[0].startswith(b"+")  # type: ignore[attr-defined]
            pop._putcmd(blob)  # type: ignore[attr-defined]
        else:
            pop._putcmd(f"AUTH PLAIN {blob}")  # type: ignore[attr-defined]
        reply: bytes = pop._getline()[0]  # type: ignore[attr-defined]
        pop._putcmd("QUIT")  # type: ignore[attr-defined]
        return reply
    finally:
        pop.close()


def test_passwords_never_appear_in_logs(log_stack: Stack) -> None:
    s = log_stack
    admin = {"Authorization": f"Bearer {s.admin_token}"}
    with httpx.Client(base_url=s.api_url, timeout=30) as api:
        r = api.post(
            "/api/v1/users",
            json={"username": USER, "password": PASSWORDS["created"]},
            headers=admin,
        )
        assert r.status_code == 201, r.text
        assert pop3_login(s, USER, PASSWORDS["created"])
        r = api.put(
            f"/api/v1/users/{USER}/password", json={"password": PASSWORDS["changed"]}, headers=admin
        )
        assert r.status_code == 204, r.text
        r = api.post(
            "/api/v1/users",
            json={"username": "Not A Valid Name!", "password": PASSWORDS["refused"]},
            headers=admin,
        )
        assert r.status_code == 422, r.text
        r = api.put(
            f"/api/v1/users/{USER}/apop-secret", json={"secret": PASSWORDS["apop"]}, headers=admin
        )
        assert r.status_code in (204, 404, 422), r.text
        token = s.service_token
        r = api.post(
            "/internal/v1/auth",
            json={"username": USER, "password": PASSWORDS["internal"]},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert r.status_code == 200 and r.json()["valid"] is False, r.text

    # mailctl: add and change a password, read from stdin
    done = mailctl(s, "user", "add", USER2, "--password-stdin", stdin=PASSWORDS["mailctl"] + "\n")
    assert done.returncode == 0, done.stderr
    done = mailctl(
        s, "user", "passwd", USER2, "--password-stdin", stdin=PASSWORDS["mailctl-changed"] + "\n"
    )
    assert done.returncode == 0, done.stderr
    assert pop3_login(s, USER2, PASSWORDS["mailctl-changed"])

    # POP3: right and wrong, plain and over TLS; AUTH PLAIN right, wrong and malformed
    tls = ssl.create_default_context(cadata=s.read_secret("tls/cert.pem").decode())
    tls.check_hostname = False
    assert pop3_login(s, USER, PASSWORDS["changed"])
    assert pop3_login(s, USER, PASSWORDS["changed"], tls=tls)
    assert not pop3_login(s, USER, PASSWORDS["wrong"])
    assert not pop3_login(s, USER, PASSWORDS["wrong"], tls=tls)
    assert not pop3_login(s, USER, PASSWORDS["created"])  # the old password
    assert auth_plain(s, plain_blob(USER, PASSWORDS["changed"]), continuation=False).startswith(
        b"+OK"
    )
    assert auth_plain(
        s, plain_blob(USER2, PASSWORDS["mailctl-changed"]), continuation=True
    ).startswith(b"+OK")
    assert auth_plain(s, plain_blob(USER, PASSWORDS["plain-wrong"]), continuation=True).startswith(
        b"-ERR"
    )
    malformed = base64.b64encode(f"{USER}\0{PASSWORDS['malformed']}".encode()).decode()
    assert auth_plain(s, malformed, continuation=False).startswith(b"-ERR")

    # SMTP AUTH is not offered; a client that tries anyway must not get its password logged
    with smtplib.SMTP(HOST, s.smtp_port, timeout=30) as smtp:
        smtp.ehlo("client.test")
        code, _ = smtp.docmd("AUTH", "PLAIN " + plain_blob(USER, PASSWORDS["smtp"]))
        assert code >= 500
        smtp.docmd("AUTH", "LOGIN " + base64.b64encode(PASSWORDS["smtp"].encode()).decode())

    logs = {name: s.logs_until_now(name) for name in ("redis", "mailstore-api", "smtp-in", "pop3")}
    logs.update({f"file {p.name}": p.read_text(errors="replace") for p in s.log_dir.iterdir()})
    assert all(logs.values()), "a service wrote no log at all"
    # the session was logged (the grep below looks at real log lines)...
    assert any(USER in text for text in logs.values()), "no log names the user at all"
    leaks = [
        f"{label!r} in {name}"
        for name, text in logs.items()
        for label, needle in needles().items()
        if needle in text
    ]
    # ...without the passwords (nor the user name typed as a password: that is also a password)
    leaks = [leak for leak in leaks if not leak.startswith("'wrong'") or "in pop3" not in leak] + [
        f"'wrong' as user name in {name}"
        for name, text in logs.items()
        if PASSWORDS["wrong"] in text
    ]
    assert not sorted(set(leaks)), sorted(set(leaks))


def test_password_hashes_not_passwords_on_the_volume(log_stack: Stack) -> None:
    """The users database (and its WAL) holds argon2id hashes, not the passwords."""
    files = [p for p in log_stack.data_dir.rglob("*") if p.is_file() and "sqlite" in p.name]
    assert files, list(log_stack.data_dir.rglob("*"))
    for path in files:
        content = path.read_bytes()
        for label, password in PASSWORDS.items():
            assert password.encode() not in content, f"{label} in clear in {path.name}"
    content = b"".join(p.read_bytes() for p in files)
    assert b"$argon2id$" in content
