"""Real mail clients nobody here wrote submit with AUTH over 587 (STARTTLS) and 465 (implicit
TLS), verifying the server's certificate against the test CA: msmtp and swaks."""

from __future__ import annotations

import email
import shutil
import subprocess

import pytest
from mailstack.certs import ScratchCA
from submitkit import HOST, message

pytestmark = pytest.mark.skipif(
    not (shutil.which("msmtp") and shutil.which("swaks")),
    reason="needs msmtp and swaks (apt-get install -y msmtp swaks)",
)


@pytest.mark.parametrize("port", ["587", "465"])
def test_msmtp(submit, make_user, messages, tmp_path, port):
    user, pw = make_user()
    rcpt, _ = make_user()
    config = tmp_path / "msmtprc"
    config.write_text(
        "account default\n"
        f"host {HOST}\n"
        f"port {submit.port if port == '587' else submit.tls_port}\n"
        f"from {user}\n"
        "auth plain\n"
        f"user {user}\n"
        f"password {pw}\n"
        "tls on\n"
        f"tls_starttls {'on' if port == '587' else 'off'}\n"
        f"tls_trust_file {submit.ca_file}\n"
    )
    config.chmod(0o600)
    body = message(user, rcpt, f"msmtp {port}")
    done = subprocess.run(
        ["msmtp", "-C", str(config), rcpt], input=body, check=False, capture_output=True, timeout=60
    )
    assert done.returncode == 0, done.stderr.decode()
    (got,) = messages(rcpt)
    assert email.message_from_bytes(got)["Subject"] == f"msmtp {port}"


def test_msmtp_refuses_a_server_it_cannot_verify(submit, make_user, tmp_path):
    """The certificate check is real: msmtp with another CA's trust file does not send."""
    user, pw = make_user()
    stranger = tmp_path / "other-ca.pem"
    stranger.write_bytes(ScratchCA.create("another CA").pem)
    config = tmp_path / "msmtprc"
    config.write_text(
        f"account default\nhost {HOST}\nport {submit.tls_port}\nfrom {user}\nauth plain\n"
        f"user {user}\npassword {pw}\ntls on\ntls_starttls off\ntls_trust_file {stranger}\n"
    )
    config.chmod(0o600)
    done = subprocess.run(
        ["msmtp", "-C", str(config), user],
        input=message(user, user),
        check=False,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode != 0


@pytest.mark.parametrize("way", ["587 PLAIN", "587 LOGIN", "465 PLAIN", "465 LOGIN"])
def test_swaks(submit, make_user, messages, tmp_path, way):
    port, mechanism = way.split()
    user, pw = make_user()
    rcpt, _ = make_user()
    data = tmp_path / "message.eml"
    data.write_bytes(message(user, rcpt, f"swaks {port} {mechanism}"))
    tls = ["--tls"] if port == "587" else ["--tls-on-connect"]
    done = subprocess.run(
        [
            "swaks",
            "--server",
            HOST,
            "--port",
            str(submit.port if port == "587" else submit.tls_port),
            *tls,
            "--tls-verify",
            "--tls-ca-path",
            str(submit.ca_file),
            "--auth",
            mechanism,
            "--auth-user",
            user,
            "--auth-password",
            pw,
            "--from",
            user,
            "--to",
            rcpt,
            "--data",
            str(data),
            "--ehlo",
            "client.test",
        ],
        check=False,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    assert b"235 2.7.0 Authentication successful" in done.stdout, done.stdout.decode()
    (got,) = messages(rcpt)
    assert email.message_from_bytes(got)["Subject"] == f"swaks {port} {mechanism}"


def test_swaks_without_auth_is_refused(submit, make_user, tmp_path):
    user, _ = make_user()
    done = subprocess.run(
        [
            "swaks",
            "--server",
            HOST,
            "--port",
            str(submit.port),
            "--tls",
            "--tls-verify",
            "--tls-ca-path",
            str(submit.ca_file),
            "--from",
            user,
            "--to",
            user,
            "--ehlo",
            "client.test",
        ],
        check=False,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert b"530 5.7.0 Authentication required" in done.stdout


def test_swaks_refuses_a_server_it_cannot_verify(submit, make_user, tmp_path):
    user, pw = make_user()
    stranger = tmp_path / "other-ca.pem"
    stranger.write_bytes(ScratchCA.create("another CA").pem)
    done = subprocess.run(
        [
            "swaks",
            "--server",
            HOST,
            "--port",
            str(submit.tls_port),
            "--tls-on-connect",
            "--tls-verify",
            "--tls-ca-path",
            str(stranger),
            "--auth",
            "PLAIN",
            "--auth-user",
            user,
            "--auth-password",
            pw,
            "--from",
            user,
            "--to",
            user,
            "--ehlo",
            "client.test",
        ],
        check=False,
        capture_output=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert b"235 " not in done.stdout
