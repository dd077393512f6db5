"""mailctl against the running mailstore, as a user would run it (a child process)."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys

import httpx
import pytest

pytestmark = pytest.mark.timeout(60)


def mailctl(
    mailstore, *args: str, stdin: str = "", token_from_file: bool = False
) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "MAILSTORE_API_URL": mailstore.url,
        "SECRETS_DIR": str(mailstore.secrets_dir),
    }
    env.pop("ADMIN_TOKEN", None)
    if token_from_file:
        mailstore.secrets_dir.mkdir(parents=True, exist_ok=True)
        (mailstore.secrets_dir / "admin_token").write_text(mailstore.admin_token + "\n")
    else:
        env["ADMIN_TOKEN"] = mailstore.admin_token
    return run_mailctl(env, *args, stdin=stdin)


def run_mailctl(
    env: dict[str, str], *args: str, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mailstore_api.cli", *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        start_new_session=True,  # no controlling terminal: the prompts read stdin
    )


def test_user_add_list_passwd_del_and_mail_list(mailstore, internal):
    r = mailctl(mailstore, "user", "add", "cli-bob", "--password-stdin", stdin="s3cret pass\n")
    assert r.returncode == 0, r.stderr
    assert internal.post("/auth", json={"username": "cli-bob", "password": "s3cret pass"}).json()[
        "valid"
    ]

    # prompted twice when --password-stdin is not given
    r = mailctl(mailstore, "user", "add", "cli-ann", stdin="pw-one\npw-one\n")
    assert r.returncode == 0, r.stderr
    assert internal.post("/auth", json={"username": "cli-ann", "password": "pw-one"}).json()[
        "valid"
    ]

    internal.post(
        "/deliveries",
        params={"recipient": "cli-bob"},
        content=b"From: x@y\r\nSubject: for the cli\r\n\r\nhi\r\n",
    )
    r = mailctl(mailstore, "user", "list", token_from_file=True)
    assert r.returncode == 0, r.stderr
    line = next(
        x for x in r.stdout.splitlines() if x.startswith(mailstore.address("cli-bob") + " ")
    )
    assert line.split()[1:3] == ["1", str(len(b"From: x@y\nSubject: for the cli\n\nhi\n"))]

    r = mailctl(mailstore, "mail", "list", "cli-bob")
    assert r.returncode == 0, r.stderr
    assert "for the cli" in r.stdout
    assert "1 of 1 messages" in r.stdout

    r = mailctl(mailstore, "user", "passwd", "cli-bob", "--password-stdin", stdin="changed\n")
    assert r.returncode == 0, r.stderr
    assert internal.post("/auth", json={"username": "cli-bob", "password": "changed"}).json()[
        "valid"
    ]

    assert internal.get(f"/recipients/{mailstore.address('cli-bob')}").status_code == 200
    r = mailctl(mailstore, "user", "del", "cli-bob")
    assert r.returncode == 1
    assert "mailbox_not_empty" in r.stderr and "Traceback" not in r.stderr
    r = mailctl(mailstore, "user", "del", "cli-bob", "--purge")
    assert r.returncode == 0, r.stderr
    assert internal.get(f"/recipients/{mailstore.address('cli-bob')}").status_code == 404


def test_errors_are_one_line_and_non_zero(mailstore):
    cases = [
        (("user", "add", "Bad Name", "--password-stdin"), "pw\n", "invalid_username"),
        (("user", "add", "x-empty", "--password-stdin"), "\n", "must not be empty"),
        (("user", "add", "x-mismatch"), "one\ntwo\none\ntwo\none\ntwo\n", ""),
        (("user", "passwd", "nobody-c", "--password-stdin"), "pw\n", "unknown_user"),
        (("mail", "list", "nobody-c"), "", "unknown_user"),
    ]
    for args, stdin, says in cases:
        r = mailctl(mailstore, *args, stdin=stdin)
        assert r.returncode != 0, args
        assert says in r.stderr
        assert "Traceback" not in r.stderr


def test_unreachable_mailstore_and_missing_token(mailstore, tmp_path):
    env = {**os.environ, "MAILSTORE_API_URL": "http://127.0.0.1:9", "ADMIN_TOKEN": "x" * 40}
    r = run_mailctl(env, "user", "list")
    assert r.returncode == 1
    assert "cannot reach the mailstore" in r.stderr and "Traceback" not in r.stderr
    env = {**os.environ, "MAILSTORE_API_URL": mailstore.url, "SECRETS_DIR": str(tmp_path / "none")}
    env.pop("ADMIN_TOKEN", None)
    r = run_mailctl(env, "token", "show")
    assert r.returncode == 1
    assert "no admin token" in r.stderr


def test_token_show(mailstore):
    r = mailctl(mailstore, "token", "show", token_from_file=True)
    assert r.returncode == 0
    assert r.stdout.strip() == mailstore.admin_token


def ok(mailstore, *args: str, stdin: str = "") -> str:  # type: ignore[no-untyped-def]
    r = mailctl(mailstore, *args, stdin=stdin)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r.stdout


def test_domains_aliases_and_quotas_from_the_command_line(mailstore, internal) -> None:  # type: ignore[no-untyped-def]
    tag = secrets.token_hex(3)
    primary = mailstore.env()["MAIL_DOMAINS"].split(",")[0]
    domain = f"bücher-{tag}.test"
    out = ok(mailstore, "domain", "add", domain)
    assert out.startswith("added xn--") and f"({domain})" in out, out
    stored = out.split()[1]
    listed = json.loads(ok(mailstore, "domain", "list", "--json"))["domains"]
    mine = next(d for d in listed if d["name"] == stored)
    assert (mine["unicode"], mine["accounts"], mine["aliases"], mine["primary"]) == (
        domain,
        0,
        0,
        False,
    )
    assert any(d["name"] == primary and d["primary"] for d in listed)
    assert stored in ok(mailstore, "domain", "list")

    ok(mailstore, "user", "add", f"ann@{domain}", "--password-stdin", stdin="pw-ann\n")
    ok(mailstore, "user", "add", f"ann-{tag}", "--password-stdin", stdin="pw-ann2\n")
    users = json.loads(ok(mailstore, "user", "list", "--json", "--domain", stored))["users"]
    assert [u["username"] for u in users] == [f"ann@{stored}"]

    out = ok(mailstore, "alias", "add", f"team@{domain}", f"ann@{domain}", f"ann-{tag}")
    assert out == f"created team@{stored} -> ann@{stored}, ann-{tag}@{primary}\n"
    aliases = json.loads(ok(mailstore, "alias", "list", "--json", "--domain", domain))["aliases"]
    assert [(a["address"], a["accounts"]) for a in aliases] == [
        (f"team@{stored}", [f"ann@{stored}", f"ann-{tag}@{primary}"])
    ]
    assert f"team@{stored}" in ok(mailstore, "alias", "list")
    r = mailctl(mailstore, "alias", "add", f"loop@{domain}", f"loop@{domain}")
    assert r.returncode == 1 and "alias_loop" in r.stderr

    out = ok(mailstore, "user", "quota", f"ann@{domain}", "5000", "--messages", "3")
    assert out == f"quota of ann@{stored}: 5000 octets\n"
    user = next(
        u
        for u in json.loads(ok(mailstore, "user", "list", "--json"))["users"]
        if u["username"] == f"ann@{stored}"
    )
    assert (user["quota_bytes"], user["quota_messages"]) == (5000, 3)

    r = mailctl(mailstore, "domain", "del", domain)
    assert r.returncode == 1 and "domain_not_empty" in r.stderr
    ok(mailstore, "domain", "del", domain, "--force")
    assert stored not in ok(mailstore, "domain", "list")
    assert not internal.post(
        "/auth", json={"username": f"ann@{domain}", "password": "pw-ann"}
    ).json()["valid"]
    messages = json.loads(ok(mailstore, "mail", "list", f"ann-{tag}", "--json"))
    assert messages["total"] == 0


def test_admin_passwd_sets_the_console_password(make_mailstore):
    store = make_mailstore()
    store.start()
    r = mailctl(store, "admin", "passwd", "--password-stdin", stdin="console pass phrase\n")
    assert r.returncode == 0, r.stderr
    r = httpx.post(f"{store.url}/ui/signin", data={"password": "console pass phrase"})
    assert r.status_code == 303 and "maildrop_console=" in r.headers["set-cookie"]
