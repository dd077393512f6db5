"""deploy/maildrop-stack.yml on Docker Swarm (a one-node swarm of this engine): HAProxy publishes
its ports in host mode (the routing mesh needs IPVS, which this machine lacks) and reaches two
smtp-in and two pop3 tasks over the overlay network. The client's address reaches the replicas,
and one smtp-in task killed under load loses only its own connections: every acknowledged
message is read back over POP3 through the balancer. Runs with STACK=compose (CI's second
phase, which has the engine); a swarm this test initialised is left again afterwards."""

from __future__ import annotations

import os
import poplib
import random
import secrets
import smtplib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from mailstack.haproxy import haproxy_image
from mailstack.ports import free_port, greets, wait_until
from mailstack.underload import under_load

pytestmark = [
    pytest.mark.slow,
    pytest.mark.swarm,  # last: see tests/conftest.py
    pytest.mark.timeout(1200),
    pytest.mark.skipif(os.environ.get("STACK") != "compose", reason="runs with STACK=compose"),
]

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
WORKERS = 4
ERRORS = (OSError, smtplib.SMTPException, poplib.error_proto)


def docker(*args: str, timeout: float = 300, **env: str) -> str:
    result = subprocess.run(
        ["docker", *args],
        cwd=REPO,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"docker {' '.join(args)}: {result.stderr[-3000:]}")
    return result.stdout


@dataclass
class Swarm:
    name: str
    env: dict[str, str]

    def containers(self, service: str) -> list[str]:
        return docker("ps", "-q", "--filter", f"name={self.name}_{service}.").split()

    def mailctl(self, *args: str, stdin: str = "") -> str:
        (container,) = self.containers("mailstore-api")
        return subprocess.run(
            ["docker", "exec", "-i", container, "mailctl", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        ).stdout


@pytest.fixture(scope="module")
def swarm() -> Iterator[Swarm]:
    state = docker("info", "--format", "{{.Swarm.LocalNodeState}}").strip()
    initialised = state == "inactive"
    if initialised:
        docker("swarm", "init", "--advertise-addr", HOST)
    name = f"mdswarm{secrets.token_hex(3)}"
    third = random.randint(200, 254)
    env = {
        "IMAGE_TAG": os.environ.get("IMAGE_TAG", "latest"),
        "HAPROXY_IMAGE": haproxy_image(REPO / "tests" / "fixtures" / "haproxy-standin"),
        "MAIL_DOMAINS": "pokey.onl",
        "MAIL_HOSTNAME": "mail.pokey.onl",
        "ADMIN_TOKEN": secrets.token_urlsafe(32),
        "SERVICE_TOKEN": secrets.token_urlsafe(32),
        "SMTP_PORT": str(free_port()),
        "POP3_PORT": str(free_port()),
        "POP3S_PORT": str(free_port()),
        "POP3_ALLOW_PLAINTEXT_AUTH": "true",
        "BALANCER_SUBNET": f"10.213.{third}.0/24",
    }
    try:
        (node,) = docker("node", "ls", "-q", "--filter", "role=manager").split()[:1]
        docker("node", "update", "--label-add", "maildrop.data=true", node)
        # The images, built from this checkout (a swarm builds nothing).
        docker(
            "compose", "-p", name, "build", "mailstore-api", "smtp-in", "pop3", timeout=900, **env
        )
        docker(
            "stack", "deploy", "-c", "deploy/maildrop-stack.yml", "--resolve-image", "never", name,
            **env,
        )  # fmt: skip
        deployed = Swarm(name, env)
        wait_until(
            lambda: greets(HOST, int(env["SMTP_PORT"])) and greets(HOST, int(env["POP3_PORT"])),
            240,
            "the swarm's HAProxy greeting for its replicas",
        )
        wait_until(lambda: len(deployed.containers("smtp-in")) == 2, 120, "two smtp-in tasks")
        yield deployed
    finally:
        subprocess.run(["docker", "stack", "rm", name], capture_output=True, check=False)
        wait_until(
            lambda: not docker("ps", "-aq", "--filter", f"name={name}_"), 120, "the stack removed"
        )
        volumes = docker("volume", "ls", "-q", "--filter", f"name={name}_").split()
        subprocess.run(["docker", "volume", "rm", *volumes], capture_output=True, check=False)
        if initialised:  # leave the engine as it was: no swarm, no bridge of its own
            docker("swarm", "leave", "--force")
            subprocess.run(
                ["docker", "network", "rm", "docker_gwbridge"], capture_output=True, check=False
            )


def test_a_killed_task_loses_only_its_connections_and_the_client_address_passes(
    swarm: Swarm,
) -> None:
    user, password = f"s{secrets.token_hex(4)}", secrets.token_urlsafe(12)
    swarm.mailctl("user", "add", user, "--password-stdin", stdin=password + "\n")
    smtp_port, pop3_port = int(swarm.env["SMTP_PORT"]), int(swarm.env["POP3_PORT"])

    def deliver(i: int) -> None:
        with smtplib.SMTP(HOST, smtp_port, timeout=60) as client:
            client.sendmail(
                "alice@sender.test", [f"{user}@pokey.onl"], f"Subject: m{i}\r\n\r\nhi\r\n".encode()
            )

    victim = swarm.containers("smtp-in")[0]
    done, failed = under_load(
        60,
        deliver,
        lambda: docker("kill", victim),
        kill_after=15,
        workers=WORKERS,
        errors=ERRORS,
    )
    assert len(failed) <= WORKERS, failed
    client = poplib.POP3(HOST, pop3_port, timeout=60)
    client.user(user)
    client.pass_(password)
    count = client.stat()[0]
    messages = [b"\n".join(client.retr(n)[1]) for n in range(1, count + 1)]
    client.quit()
    subjects = [
        line[9:].decode()
        for message in messages
        for line in message.split(b"\n")
        if line.startswith(b"Subject: ")
    ]
    assert len(subjects) == len(set(subjects))
    assert {f"m{i}" for i in done} <= set(subjects)
    # Host-mode ports: HAProxy's clients come from the bridge gateway (docker_gwbridge), and that,
    # not HAProxy's address on the overlay network, is what the replicas wrote.
    received = next(line for line in messages[0].split(b"\n") if line.startswith(b"Received: "))
    assert f"10.213.{swarm.env['BALANCER_SUBNET'].split('.')[2]}.".encode() not in received, (
        received
    )
