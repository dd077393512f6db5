"""smtp-out's settings: defaults, and what it refuses to start with (a real process)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from smtp_out.settings import OutSettings

BASE = {"MAIL_DOMAINS": "pokey.onl", "MAIL_HOSTNAME": "mail.pokey.onl"}


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in BASE.items():
        monkeypatch.setenv(key, value)
    settings = OutSettings()
    assert settings.smtp_out_remote_port == 25
    assert settings.smtp_out_concurrency == 10
    assert settings.smtp_out_poll_interval == 5.0
    assert settings.dkim_selectors().rsa == "md-rsa1"


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ({"MAIL_HOSTNAME": "not a host"}, "MAIL_HOSTNAME"),
        ({"DNS_NAMESERVERS": "dns.example"}, "DNS_NAMESERVERS"),
        ({"SMTP_OUT_REMOTE_PORT": "0"}, "SMTP_OUT_REMOTE_PORT"),
        ({"SMTP_OUT_CONCURRENCY": "0"}, "SMTP_OUT_CONCURRENCY"),
        ({"DKIM_SELECTOR_RSA": "Bad_Selector"}, "DKIM selector"),
        ({"SERVICE_TOKEN": "changeme"}, "SERVICE_TOKEN"),
    ],
)
def test_refuses_to_start(tmp_path, extra, says) -> None:
    env = {**os.environ, **BASE, "SECRETS_DIR": str(tmp_path), **extra}
    done = subprocess.run(
        [sys.executable, "-m", "smtp_out"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith("smtp-out: refusing to start:")
    assert says in done.stderr
