"""deploy/docker-compose.replicas.yml as it runs: two smtp-in and two pop3 containers behind the
HAProxy container (deploy/haproxy.cfg), one mailstore, one Redis. The client's address reaches
the replicas through the PROXY header, and one replica of each killed under load loses only its
own connections. Runs with STACK=compose (CI's second phase), which has the Docker engine."""

from __future__ import annotations

import os
import poplib
import random
import secrets
import smtplib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from mailstack.compose import ComposeStack
from mailstack.haproxy import haproxy_image
from mailstack.underload import add_account, under_load

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1200),
    pytest.mark.skipif(os.environ.get("STACK") != "compose", reason="runs with STACK=compose"),
]

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
WORKERS = 4


@pytest.fixture(scope="module")
def replicas() -> Iterator[ComposeStack]:
    third = random.randint(200, 254)  # a subnet of its own: runs side by side do not collide
    deployment = ComposeStack(
        REPO,
        env={
            "HAPROXY_IMAGE": haproxy_image(REPO / "tests" / "fixtures" / "haproxy-standin"),
            "BALANCER_SUBNET": f"10.213.{third}.0/24",
            "BALANCER_REPLICA_RANGE": f"10.213.{third}.128/25",
            "BALANCER_ADDRESS": f"10.213.{third}.2",
            "SERVICE_TOKEN": secrets.token_urlsafe(32),
        },
        compose_file="deploy/docker-compose.replicas.yml",
    )
    with deployment:
        yield deployment


def containers(stack: ComposeStack, service: str) -> list[str]:
    listed = stack.compose("ps", "-q", service).split()
    assert len(listed) == 2, listed
    return listed


def add_user(stack: ComposeStack) -> tuple[str, str]:
    return add_account(stack.api_url, stack.admin_token)


def subjects(stack: ComposeStack, user: str) -> list[str]:
    response = httpx.get(
        f"{stack.api_url}/api/v1/users/{user}/messages",
        params={"limit": 500},
        headers={"Authorization": f"Bearer {stack.admin_token}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    return [m["subject"] for m in response.json()["messages"]]


ERRORS = (OSError, smtplib.SMTPException, poplib.error_proto)


def docker_kill(container: str) -> None:
    subprocess.run(["docker", "kill", container], capture_output=True, check=True)


def test_the_client_address_passes_and_a_killed_replica_loses_only_its_own(
    replicas: ComposeStack,
) -> None:
    stack = replicas
    user, _ = add_user(stack)

    def deliver(i: int) -> None:
        with smtplib.SMTP(HOST, stack.smtp_port, timeout=60) as client:
            client.sendmail(
                "alice@sender.test", [f"{user}@pokey.onl"], f"Subject: m{i}\r\n\r\nhi\r\n".encode()
            )

    victim = containers(stack, "smtp-in")[0]
    done, failed = under_load(
        60, deliver, lambda: docker_kill(victim), kill_after=15, workers=WORKERS, errors=ERRORS
    )
    assert len(failed) <= WORKERS, failed
    stored = subjects(stack, user)
    assert len(stored) == len(set(stored))
    assert {f"m{i}" for i in done} <= set(stored)
    # The replicas saw the address docker-proxy connected to HAProxy from (the balancer
    # network's gateway), not HAProxy's own: the PROXY header carried it.
    raw = httpx.get(
        f"{stack.api_url}/api/v1/users/{user}/messages",
        headers={"Authorization": f"Bearer {stack.admin_token}"},
        timeout=30,
    ).json()["messages"][0]["id"]
    message = httpx.get(
        f"{stack.api_url}/api/v1/users/{user}/messages/{raw}/raw",
        headers={"Authorization": f"Bearer {stack.admin_token}"},
        timeout=30,
    ).content
    (haproxy,) = stack.compose("ps", "-q", "haproxy").split()
    gateway = subprocess.run(
        [
            "docker",
            "inspect",
            "-f",
            "{{range .NetworkSettings.Networks}}{{.Gateway}}{{end}}",
            haproxy,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert gateway and gateway != stack.variables["BALANCER_ADDRESS"]
    received = next(line for line in message.split(b"\n") if line.startswith(b"Received: "))
    assert f"([{gateway}])".encode() in received, received

    pop_user, pop_password = add_user(stack)
    victim = containers(stack, "pop3")[0]

    def session(i: int) -> None:
        client = poplib.POP3(HOST, stack.pop3_port, timeout=60)
        try:
            assert client.getwelcome().startswith(b"+OK")
            client.capa()
        finally:
            client.quit()

    done, failed = under_load(
        40, session, lambda: docker_kill(victim), kill_after=10, workers=WORKERS, errors=ERRORS
    )
    assert len(failed) <= WORKERS, failed
    # And a login through the balancer works on the surviving replica.
    client = poplib.POP3(HOST, stack.pop3_port, timeout=60)
    client.user(pop_user)
    client.pass_(pop_password)
    assert client.stat()[0] == 0
    client.quit()
