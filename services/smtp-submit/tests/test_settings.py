"""smtp-submit's settings: defaults, and what it refuses to start with (a real process)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from smtp_submit.settings import SubmitSettings

BASE = {"MAIL_DOMAINS": "pokey.onl", "MAIL_HOSTNAME": "mail.pokey.onl"}


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in BASE.items():
        monkeypatch.setenv(key, value)
    settings = SubmitSettings()
    assert (settings.submit_bind_port, settings.submits_bind_port) == (1587, 1465)
    assert settings.submit_max_recipients == 100
    assert settings.submit_max_messages_per_hour == 500


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        ({"PROXY_PROTOCOL": "true", "PROXY_TRUSTED_NETWORKS": "10.0.0.0/8"}, "PROXY_PROTOCOL"),
        ({"SUBMIT_MAX_RECIPIENTS": "0"}, "SUBMIT_MAX_RECIPIENTS"),
        ({"SERVICE_TOKEN": "changeme"}, "SERVICE_TOKEN"),
    ],
)
def test_refuses_to_start(tmp_path, extra, says) -> None:
    env = {**os.environ, **BASE, "SECRETS_DIR": str(tmp_path), **extra}
    done = subprocess.run(
        [sys.executable, "-m", "smtp_submit"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert done.stderr.startswith("smtp-submit: refusing to start:")
    assert says in done.stderr
