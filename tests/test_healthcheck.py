"""The containers' health probe (``python -m mailcommon.healthcheck``) reads the greeting.

A listener whose event loop is hung still completes TCP handshakes from the kernel's backlog, so
the probe must see ``220`` / ``+OK`` within its timeout, not just a connection.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from mailcommon.healthcheck import TIMEOUT
from mailstack.ports import free_port

HOST = "127.0.0.1"


def healthcheck(target: str) -> tuple[int, str, float]:
    """Run the probe as the image does; its exit code, output and how long it took."""
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "mailcommon.healthcheck", target],
        capture_output=True,
        text=True,
        timeout=TIMEOUT + 30,
        check=False,
    )
    return result.returncode, result.stdout, time.monotonic() - started


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A port whose listener never accepts: the kernel completes the handshake, nobody greets."""
    with socket.socket() as sock:
        port = free_port()
        sock.bind((HOST, port))
        sock.listen(8)
        yield port


@pytest.fixture
def wrong_greeter() -> Iterator[int]:
    """A port that answers every connection with a refusal and closes it."""
    server = socket.create_server((HOST, free_port()))
    port = server.getsockname()[1]

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn:
                conn.sendall(b"421 4.3.2 busy\r\n-ERR busy\r\n")

    threading.Thread(target=serve, daemon=True).start()
    yield port
    server.close()


def test_real_smtp_in_and_pop3_are_healthy(stack: Any) -> None:
    for target in (f"smtp://{HOST}:{stack.smtp_port}", f"pop3://{HOST}:{stack.pop3_port}"):
        code, out, _ = healthcheck(target)
        assert (code, out.strip()) == (0, "healthy"), target


@pytest.mark.parametrize("scheme", ["smtp", "pop3"])
def test_a_listener_that_never_greets_is_unhealthy(scheme: str, silent_listener: int) -> None:
    code, out, took = healthcheck(f"{scheme}://{HOST}:{silent_listener}")
    assert code == 1 and out.startswith("unhealthy:"), out
    assert took < TIMEOUT + 10  # the probe's own timeout ends it, well inside Docker's 5 s + slack


@pytest.mark.parametrize("scheme", ["smtp", "pop3"])
def test_a_refusing_greeting_is_unhealthy(scheme: str, wrong_greeter: int) -> None:
    code, out, _ = healthcheck(f"{scheme}://{HOST}:{wrong_greeter}")
    assert code == 1 and "greeting" in out, out


def test_the_other_protocols_greeting_is_unhealthy(stack: Any) -> None:
    """smtp:// wants 220 and pop3:// wants +OK: a probe aimed at the wrong port says so."""
    assert healthcheck(f"pop3://{HOST}:{stack.smtp_port}")[0] == 1
    assert healthcheck(f"smtp://{HOST}:{stack.pop3_port}")[0] == 1


@pytest.mark.local_only
@pytest.mark.parametrize(("service", "scheme"), [("smtp-in", "smtp"), ("pop3", "pop3")])
def test_a_hung_service_is_unhealthy_until_it_runs_again(
    stack: Any, service: str, scheme: str
) -> None:
    """SIGSTOP freezes the real server: connects still succeed, the greeting never comes."""
    port = stack.smtp_port if service == "smtp-in" else stack.pop3_port
    target = f"{scheme}://{HOST}:{port}"
    stack.signal_service(service, signal.SIGSTOP)
    try:
        with socket.create_connection((HOST, port), timeout=2):
            pass  # the backlog answers for the frozen process
        code, out, _ = healthcheck(target)
        assert code == 1 and out.startswith("unhealthy:"), out
    finally:
        stack.signal_service(service, signal.SIGCONT)
    assert healthcheck(target)[0] == 0
