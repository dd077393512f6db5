"""Abuse limits: failed-login throttles in Redis, connection limits, the session log line."""

from __future__ import annotations

import json
import random
import socket
import subprocess
import sys
import time
from collections.abc import Callable

from mailstack.logs import wait_for_records
from mailstack.ports import wait_until
from pop3d.auth import log_key, user_tag
from pop3kit import HOST, Mail, Pop3Proc, Raw, account


def from_ip(port: int, source: str) -> Raw:
    """A connection from another loopback address (each test gets its own client IP)."""
    sock = socket.create_connection((HOST, port), timeout=30, source_address=(source, 0))
    return Raw(port, sock=sock)


def random_ip() -> str:
    return f"127.{random.randint(1, 250)}.{random.randint(1, 250)}.{random.randint(2, 250)}"


def try_login(r: Raw, user: str, pw: str) -> bytes:
    assert r.cmd(f"USER {user}") == b"+OK send PASS"
    return r.cmd(f"PASS {pw}")


def test_per_user_throttle_does_not_reveal_existence(
    mail: Mail, pop3_factory: Callable[[dict[str, str]], Pop3Proc]
) -> None:
    proc = pop3_factory({"POP3_AUTH_FAIL_MAX_PER_USER": "3", "POP3_AUTH_FAIL_DELAY": "0.2"})
    user, pw = mail.user()
    ghost = f"ghost{random.randint(0, 10**9)}"
    answers: dict[str, list[bytes]] = {}
    for name in (user, ghost):
        r = from_ip(proc.port, random_ip())
        r.line()
        started = time.monotonic()
        first = try_login(r, name, "wrong")
        assert time.monotonic() - started >= 0.2  # the failed-login delay
        answers[name] = [first] + [try_login(r, name, "wrong") for _ in range(2)]
        answers[name].append(try_login(r, name, pw))  # even the right password is refused now
        r.close()
    assert answers[user] == answers[ghost]
    assert answers[user][0].startswith(b"-ERR [AUTH]")
    assert answers[user][3].startswith(b"-ERR [LOGIN-DELAY]")
    # Another user from the same address is not affected.
    other, other_pw = mail.user()
    r = from_ip(proc.port, random_ip())
    r.line()
    assert try_login(r, other, other_pw).startswith(b"+OK")
    r.close()


def test_per_ip_throttle(mail: Mail, pop3_factory: Callable[[dict[str, str]], Pop3Proc]) -> None:
    proc = pop3_factory({"POP3_AUTH_FAIL_MAX_PER_IP": "4", "POP3_AUTH_FAIL_DELAY": "0"})
    user, pw = mail.user()
    ip = random_ip()
    r = from_ip(proc.port, ip)
    r.line()
    for i in range(4):
        assert try_login(r, f"nobody{i}", "x").startswith(b"-ERR [AUTH]")
    assert try_login(r, user, pw).startswith(b"-ERR [LOGIN-DELAY]")
    r.close()
    r = from_ip(proc.port, random_ip())
    r.line()
    assert try_login(r, user, pw).startswith(b"+OK")
    r.close()


def test_connection_limits(pop3_factory: Callable[[dict[str, str]], Pop3Proc]) -> None:
    proc = pop3_factory({"MAX_CONNECTIONS": "3", "MAX_CONNECTIONS_PER_IP": "2"})
    a, b = random_ip(), random_ip()
    a1, a2 = from_ip(proc.port, a), from_ip(proc.port, a)
    assert a1.line().startswith(b"+OK") and a2.line().startswith(b"+OK")
    a3 = from_ip(proc.port, a)
    assert a3.line().startswith(b"-ERR [SYS/TEMP] too many connections from your address")
    assert a3.closed()
    b1 = from_ip(proc.port, b)
    assert b1.line().startswith(b"+OK")
    b2 = from_ip(proc.port, b)
    assert b2.line().startswith(b"-ERR [SYS/TEMP] too many connections")
    a1.cmd("QUIT")
    a1.close()

    def admitted() -> Raw | None:  # once pop3 has seen a1 go
        r = from_ip(proc.port, b)
        if r.line().startswith(b"+OK"):
            return r
        r.close()
        return None

    b3 = wait_until(admitted, 30, "a connection in a1's freed slot")
    for r in (a2, a3, b1, b2, b3):
        r.close()
    wait_for_records(proc.logs, {"event": "refusal", "reason": "connection_limit"})


def test_session_log_line(mail: Mail, pop3_factory: Callable[[dict[str, str]], Pop3Proc]) -> None:
    proc = pop3_factory({})
    user, pw = mail.user(password="s3cret-never-logged")
    mail.deliver(user, b"Subject: a\n\nbody a\n")
    mail.deliver(user, b"Subject: b\n\nbody b\n")
    r = Raw(proc.port)
    r.line()
    assert try_login(r, user, "s3cret-never-logged-wrong").startswith(b"-ERR")
    assert try_login(r, user, pw).startswith(b"+OK")
    r.send(b"RETR 1\r\n")
    assert r.line().startswith(b"+OK")
    r.multi()
    assert r.cmd("DELE 2").startswith(b"+OK")
    assert r.cmd("QUIT").startswith(b"+OK")
    r.close()
    wait_for_records(
        proc.logs, {"event": "session", "user": account(user)}
    )  # the session's last line
    logs = proc.logs()
    assert "s3cret-never-logged" not in logs
    events = [json.loads(line) for line in logs.splitlines() if line.startswith("{")]
    sessions = [e for e in events if e.get("event") == "session" and e.get("user") == account(user)]
    assert len(sessions) == 1
    s = sessions[0]
    assert s["retrieved"] == 1 and s["deleted"] == 1 and s["result"] == "quit"
    assert s["octets"] > 0 and s["peer"].startswith("127.0.0.1:") and s["sid"]
    # a name that did not log in is logged as a keyed hash, never as typed (it may be a password)
    tag = user_tag(log_key(mail.stack.service_token), account(user))
    refusals = [e for e in events if e.get("event") == "refusal" and e.get("user_hash") == tag]
    assert [e["reason"] for e in refusals] == ["bad_credentials"]
    assert not [
        e for e in events if e.get("event") == "refusal" and e.get("user") in (user, account(user))
    ]


def run_main(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {
        "PATH": "/usr/bin:/bin",
        "SERVICE_TOKEN": "x" * 40,
        "REDIS_URL": "redis://127.0.0.1:1/0",
        "MAIL_DOMAINS": "pokey.onl",
    }
    return subprocess.run(
        [sys.executable, "-m", "pop3d"],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_bad_settings_exit_2_without_traceback(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cases = {
        "POP3_BIND_PORT": ({"POP3_BIND_PORT": "notaport"}, "POP3_BIND_PORT"),
        "idle": ({"POP3_IDLE_TIMEOUT": "60"}, "POP3_IDLE_TIMEOUT"),
        "token": ({"SERVICE_TOKEN": "short"}, "SERVICE_TOKEN"),
        "example": (
            {"SERVICE_TOKEN": "replace-me-with-a-long-random-string-of-32-chars-or-more"},
            "example",
        ),
        "tls": ({"TLS_CERT_FILE": str(tmp_path / "cert.pem")}, "TLS"),
        "plaintext": ({"POP3_ALLOW_PLAINTEXT_AUTH": "maybe"}, "POP3_ALLOW_PLAINTEXT_AUTH"),
        "domains": ({"MAIL_DOMAINS": ""}, "MAIL_DOMAINS"),
    }
    for name, (env, needle) in cases.items():
        result = run_main({"SECRETS_DIR": str(tmp_path / name), **env})
        assert result.returncode == 2, (name, result.stderr)
        assert needle in result.stderr, (name, result.stderr)
        assert "Traceback" not in result.stderr + result.stdout, name
