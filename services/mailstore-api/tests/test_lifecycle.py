"""Start-up, crashes and shutdown: token refusal, kill -9 mid-delivery, tmp/ clean-up, SIGTERM drain,
generated tokens, APOP when enabled."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
from mailstack.ports import wait_until

pytestmark = pytest.mark.timeout(60)


def start_upload(port: int, token: str, user: str, length: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(
        (
            f"POST /internal/v1/deliveries?recipient={user} HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {token}\r\nContent-Length: {length}\r\n\r\n"
        ).encode()
    )
    return s


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"ADMIN_TOKEN": "too-short"}, "ADMIN_TOKEN is 9 characters"),
        ({"SERVICE_TOKEN": "change-me"}, "SERVICE_TOKEN is the example value"),
        (
            {"SERVICE_TOKEN": "replace-me-with-a-long-random-string-of-32-chars-or-more"},
            "example value",
        ),
        ({"ADMIN_TOKEN": "s" * 40, "SERVICE_TOKEN": "s" * 40}, "must differ"),
        ({"API_BIND_PORT": "not-a-port"}, "API_BIND_PORT"),
        ({"MAIL_DOMAINS": ""}, "MAIL_DOMAINS is empty"),
        ({"MAIL_DOMAINS": "test.example,bad_name.test"}, "'bad_name.test' is not a domain name"),
        ({"POSTMASTER_ADDRESS": "boss man"}, "'boss man' is not an account address"),
        ({"DKIM_SELECTOR_RSA": "../keys"}, "DKIM selector '../keys' is not a lower-case DNS label"),
        ({"DKIM_SELECTOR_ED25519": "md-rsa1"}, "the RSA and Ed25519 DKIM selectors must differ"),
    ],
)
def test_refuses_to_start_with_a_clear_message(tmp_path, env, says):
    base = {
        **os.environ,
        "DATA_DIR": str(tmp_path / "data"),
        "SECRETS_DIR": str(tmp_path / "secrets"),
        "ADMIN_TOKEN": "a" * 40,
        "SERVICE_TOKEN": "b" * 40,
        "API_BIND_PORT": "1",
        "MAIL_DOMAINS": "test.example",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "mailstore_api"],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert says in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "data").exists()


def test_tokens_are_generated_once_when_unset(make_mailstore):
    store = make_mailstore()
    store.admin_token = store.service_token = ""
    store.start()
    admin_token = (store.secrets_dir / "admin_token").read_text().strip()
    service_token = (store.secrets_dir / "service_token").read_text().strip()
    assert len(admin_token) >= 32 and admin_token != service_token
    assert (
        httpx.get(
            f"{store.url}/api/v1/users", headers={"Authorization": f"Bearer {admin_token}"}
        ).status_code
        == 200
    )
    store.stop()
    store.start()  # the same tokens after a restart
    assert (store.secrets_dir / "admin_token").read_text().strip() == admin_token
    assert (
        httpx.get(
            f"{store.url}/api/v1/users", headers={"Authorization": f"Bearer {admin_token}"}
        ).status_code
        == 200
    )


def test_kill_9_mid_delivery_leaves_nothing_partial_and_start_up_cleans_tmp(make_mailstore):
    store = make_mailstore()
    store.start()
    with store.admin() as admin:
        assert admin.post("/users", json={"username": "kim", "password": "pw"}).status_code == 201
    upload = start_upload(store.port, store.service_token, "kim", 4_000_000)
    upload.sendall(
        b"Subject: partial\r\n\r\n" + (b"x" * 99 + b"\r\n") * 3000
    )  # past the spill size
    wait_until(lambda: len(store.files("kim", "tmp")) == 1, 30, "kim's file in tmp/")
    assert store.stop(signal.SIGKILL) == -signal.SIGKILL
    upload.close()
    assert len(store.files("kim", "tmp")) == 1  # the partial message, in tmp/ only
    assert store.files("kim", "new") == [] and store.files("kim", "cur") == []

    # the crash left it (and maybe older ones); the restarted mailstore holds the volume lock, so
    # nothing else can be writing in tmp/: start-up removes them all (the 36-hour rule included)
    old = time.time() - 37 * 3600
    older = store.maildir("kim") / "tmp" / "1.000000aaaaaaaaaa.other"
    older.write_bytes(b"left by an older crash")
    os.utime(older, (old, old))
    store.start()
    assert store.files("kim", "tmp") == []
    assert store.files("kim", "new") == [] and store.files("kim", "cur") == []
    with store.internal() as internal:
        r = internal.post(
            "/deliveries", params={"recipient": "kim"}, content=b"Subject: after\r\n\r\nok\r\n"
        )
        assert r.status_code == 201
    assert [p.name for p in store.files("kim", "new")] == [r.json()["id"]]


def test_one_mailstore_per_data_dir(make_mailstore):
    first = make_mailstore()
    first.start()
    second = make_mailstore(root=first.root)
    proc = subprocess.run(
        [sys.executable, "-m", "mailstore_api"],
        env=second.env(),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert "another mailstore-api is using" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert httpx.get(first.url + "/healthz").status_code == 200


def test_sigterm_finishes_the_delivery_in_flight(make_mailstore):
    store = make_mailstore()
    store.start()
    with store.admin() as admin:
        assert admin.post("/users", json={"username": "tom", "password": "pw"}).status_code == 201
    body = b"Subject: drained\r\n\r\n" + b"y" * 1000 + b"\r\n"
    upload = start_upload(store.port, store.service_token, "tom", len(body))
    upload.sendall(body[:500])
    time.sleep(0.2)  # no event shows that the server has read the headers: a margin for that
    assert store.proc is not None
    store.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)  # the behaviour: a window in which it must not exit while a delivery runs
    assert store.proc.poll() is None  # still draining
    upload.sendall(body[500:])
    answer = upload.recv(65536)
    upload.close()
    assert answer.startswith(b"HTTP/1.1 201")
    # Drained, then a normal exit (the buffered log lines are flushed on the way out).
    assert store.proc.wait(15) == 0
    store.proc = None
    (path,) = store.files("tom", "new")
    assert path.read_bytes() == body.replace(b"\r\n", b"\n")


def test_apop_when_enabled(make_mailstore):
    store = make_mailstore(APOP_ENABLED="true")
    store.start()
    stamp = "<1896.697170952@dbc.mtview.ca.us>"
    good = hashlib.md5((stamp + "tanstaaf").encode()).hexdigest()
    with store.admin() as admin, store.internal() as internal:
        assert admin.post("/users", json={"username": "mrose", "password": "pw"}).status_code == 201

        def apop(user: str, digest: str) -> dict:
            return internal.post(
                "/auth/apop", json={"username": user, "timestamp": stamp, "digest": digest}
            ).json()

        assert apop("mrose", good) == {"valid": False, "username": None}  # no secret yet
        assert admin.put("/users/mrose/apop-secret", json={"secret": "tanstaaf"}).status_code == 204
        assert good == "c4c9334bac560ecc979e58001b3e22fb"  # RFC 1939's example
        account = store.address("mrose")
        assert apop("mrose", good) == {"valid": True, "username": account}
        assert apop("mrose", good.upper()) == {"valid": True, "username": account}
        assert apop(account.upper(), good) == {"valid": True, "username": account}
        assert apop("mrose", "0" * 32) == {"valid": False, "username": None}
        assert apop("nobody-a", good) == {"valid": False, "username": None}
    # the key comes from SERVICE_TOKEN: with another token the stored secret is unreadable
    store.stop()
    store.service_token = "another-service-token-that-is-long-enough"
    store.start()
    with store.internal() as internal:
        r = internal.post(
            "/auth/apop", json={"username": "mrose", "timestamp": stamp, "digest": good}
        )
        assert r.json() == {"valid": False, "username": None}


def test_one_json_log_line_per_request_with_its_request_id(make_mailstore):
    store = make_mailstore(LOG_LEVEL="INFO")
    store.start()
    with store.admin() as admin, store.internal() as internal:
        assert admin.post("/users", json={"username": "lou", "password": "pw"}).status_code == 201
        r = internal.post(
            "/deliveries",
            params={"recipient": "lou"},
            content=b"Subject: logged\r\n\r\nx\r\n",
            headers={"X-Request-ID": "req-delivery-1"},
        )
        assert r.status_code == 201
        assert r.headers["x-request-id"] == "req-delivery-1"
        delivered = r.json()["id"]
        r = admin.get("/users/lou", headers={"X-Request-ID": "req-admin-1"})
        assert r.headers["x-request-id"] == "req-admin-1"
        r = internal.post("/auth", json={"username": "lou", "password": "secret-password"})
        generated = r.headers["x-request-id"]
        assert generated
    assert store.stop() in (0, -signal.SIGTERM)
    lines = [
        json.loads(line) for line in store.log_file.read_text().splitlines() if line.startswith("{")
    ]
    requests = [x for x in lines if x["event"] == "request"]
    by_id = {x["request_id"]: x for x in requests}
    delivery = by_id["req-delivery-1"]
    assert delivery["path"] == "/internal/v1/deliveries" and delivery["status"] == 201
    assert delivery["message_id"] == delivered
    assert delivery["service"] == "mailstore-api" and delivery["level"] == "info"
    assert by_id["req-admin-1"]["path"] == "/api/v1/users/lou"
    assert by_id[generated]["status"] == 200
    assert sum(1 for x in requests if x["request_id"] == "req-delivery-1") == 1
    assert "secret-password" not in store.log_file.read_text()
    assert "Traceback" not in store.log_file.read_text()
