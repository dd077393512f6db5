"""``mailstack``, the documented one-command local stack: it prints where each service listens, the
services answer there, and SIGTERM stops all of them."""

from __future__ import annotations

import re
import signal
import smtplib
import ssl
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
from mailstack.ports import greets

pytestmark = pytest.mark.local_only


def test_mailstack_runs_and_stops_the_stack(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "mailstack", "--dir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    lines = []
    deadline = time.monotonic() + 60
    while not lines or not lines[-1].startswith("Ctrl-C"):
        assert time.monotonic() < deadline, lines
        line = proc.stdout.readline()
        assert line, f"mailstack exited early: {lines}"
        lines.append(line.strip())
    text = "\n".join(lines)
    launched = psutil.Process(proc.pid).children()
    assert len(launched) == 6  # redis-server and the five services
    # ... and what they started (smtp-in's signature verifiers): all must be gone after Ctrl-C.
    children = psutil.Process(proc.pid).children(recursive=True)
    api = re.search(r"mailstore-api\s+(http://\S+)", text)
    smtp = re.search(r"smtp-in\s+smtp://127\.0\.0\.1:(\d+)", text)
    pop3 = re.search(r"pop3\s+pop3://127\.0\.0\.1:(\d+)", text)
    submission = re.search(r"submission\s+smtp://127\.0\.0\.1:(\d+)", text)
    submissions = re.search(r"submissions\s+127\.0\.0\.1:(\d+)\s+\(implicit TLS", text)
    token = re.search(r"admin token\s+(\S+)", text)
    assert api and smtp and pop3 and submission and submissions and token, text
    assert greets("127.0.0.1", int(smtp.group(1)))
    assert greets("127.0.0.1", int(pop3.group(1)))
    assert greets("127.0.0.1", int(submission.group(1)))
    tls = ssl.create_default_context()
    tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE  # the generated self-signed pair
    with smtplib.SMTP_SSL("127.0.0.1", int(submissions.group(1)), context=tls, timeout=30) as c:
        assert c.ehlo()[0] == 250 and c.has_extn("auth")
    users = httpx.get(
        f"{api.group(1)}/api/v1/users", headers={"Authorization": f"Bearer {token.group(1)}"}
    )
    assert users.status_code == 200
    # Each service's metrics address (the mailstore's with the admin token).
    for name in ("mailstore-api", "smtp-in", "pop3", "smtp-submit", "smtp-out"):
        metrics = re.search(rf"^{name}\s+(http://127\.0\.0\.1:\d+/metrics)$", text, re.MULTILINE)
        assert metrics, (name, text)
        answer = httpx.get(metrics.group(1), headers={"Authorization": f"Bearer {token.group(1)}"})
        assert answer.status_code == 200 and "maildrop_" in answer.text, name

    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0
    _, alive = psutil.wait_procs(children, timeout=10)
    assert alive == []
