"""Settings: parsing, and refusing to start (exit 2, one clear line, no traceback) when wrong."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from smtp_in.settings import SmtpSettings

TOKEN = "t" * 40


def test_domains_list_and_aliases(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAIL_DOMAINS", "Pokey.onl, example.test,bücher.test,pokey.onl")
    monkeypatch.setenv("SMTP_MAX_CONNECTIONS", "7")
    monkeypatch.setenv("MAX_CONNECTIONS", "9")
    monkeypatch.setenv("MAX_CONNECTIONS_PER_IP", "4")
    settings = SmtpSettings()
    assert settings.mail_domains == ["pokey.onl", "example.test", "xn--bcher-kva.test"]
    assert settings.max_connections == 7  # SMTP_MAX_CONNECTIONS wins
    assert settings.max_connections_per_ip == 4  # the shared name works too
    assert settings.max_message_size == 26214400
    assert settings.smtp_max_recipients == 100
    assert (settings.smtp_bind_host, settings.smtp_bind_port) == ("0.0.0.0", 2525)


def test_domains_are_idna_2008(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAIL_DOMAINS", "straße.de,xn--strae-oqa.de,strasse.de")
    assert SmtpSettings().mail_domains == ["xn--strae-oqa.de", "strasse.de"]


def run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k in {"PATH", "HOME", "VIRTUAL_ENV"}}
    base.update(
        {
            "SECRETS_DIR": str(tmp_path / "secrets"),
            "MAIL_DOMAINS": "pokey.onl",
            "SERVICE_TOKEN": TOKEN,
            "SMTP_BIND_HOST": "127.0.0.1",
            "SMTP_BIND_PORT": "1",  # never reached: every case fails before listening
        }
    )
    base.update(env)
    return subprocess.run(
        [sys.executable, "-m", "smtp_in"],
        check=False,
        env=base,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"SERVICE_TOKEN": "short"}, "at least 32"),
        ({"SERVICE_TOKEN": "change-me"}, "example value"),
        ({"MAIL_DOMAINS": ""}, "MAIL_DOMAINS"),
        ({"MAIL_DOMAINS": "ok.test,bad_domain"}, "bad_domain"),
        ({"MAIL_DOMAINS": "ok.test,xn--zz.de"}, "xn--zz.de"),
        ({"SMTP_BIND_PORT": "smtp"}, "SMTP_BIND_PORT"),
        ({"MAX_MESSAGE_SIZE": "100"}, "MAX_MESSAGE_SIZE"),
        ({"TLS_CERT_FILE": "/nonexistent/cert.pem"}, "TLS_CERT_FILE"),
        ({"TLS_CERT_FILE": "/nonexistent/c.pem", "TLS_KEY_FILE": "/nonexistent/k.pem"}, "TLS"),
        ({"PROXY_PROTOCOL": "true"}, "PROXY_TRUSTED_NETWORKS"),
        ({"PROXY_PROTOCOL": "true", "PROXY_TRUSTED_NETWORKS": "10.0.0.1/8"}, "10.0.0.1/8"),
    ],
    ids=[
        "short-token",
        "example-token",
        "no-domains",
        "bad-domain",
        "bad-a-label",
        "bad-port",
        "tiny-size",
        "half-tls",
        "missing-tls",
        "proxy-trusting-no-one",
        "proxy-bad-network",
    ],
)
def test_refuses_to_start(tmp_path: Path, env: dict[str, str], says: str) -> None:
    result = run(tmp_path, **env)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.startswith("smtp-in: refusing to start: ")
    assert says in result.stderr
