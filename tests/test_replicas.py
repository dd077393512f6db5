"""Two replicas of smtp-in and two of pop3 behind the real HAProxy running deploy/haproxy.cfg
(TCP mode, PROXY protocol v2, health checks that read the greeting), with one mailstore and one
Redis, all as local processes. One replica of each is killed under load: only the connections it
held fail, the balancer takes it out, and nothing acknowledged is lost."""

from __future__ import annotations

import itertools
import poplib
import smtplib
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from mailstack.haproxy import Balancer
from mailstack.logs import wait_for_records
from mailstack.ports import wait_until
from mailstack.stack import Stack
from mailstack.underload import add_account, under_load

pytestmark = [pytest.mark.local_only, pytest.mark.slow, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
BEHIND_BALANCER = {
    "PROXY_PROTOCOL": "true",
    "PROXY_TRUSTED_NETWORKS": "127.0.0.1/32",
    "POP3_ALLOW_PLAINTEXT_AUTH": "true",
    # A killed replica's maildrop locks expire after this (it cannot release them).
    "POP3_LOCK_TTL": "3",
}
WORKERS = 6


@dataclass
class Deployment:
    stack: Stack
    balancer: Balancer
    replicas: dict[str, list[str]]  # "smtp-in"/"pop3": the stack's process names


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    workdir = tmp_path_factory.mktemp("replicas")
    with Stack(workdir, services=("redis", "mailstore-api")) as stack:
        ports: dict[str, list[int]] = {"smtp-in": [], "pop3": [], "pop3s": []}
        names: dict[str, list[str]] = {"smtp-in": [], "pop3": []}
        for base in ("smtp-in", "smtp-in", "pop3", "pop3"):
            before = set(stack.processes)
            started = stack.start_replica(base, BEHIND_BALANCER)
            (name,) = set(stack.processes) - before
            names[base].append(name)
            if base == "smtp-in":
                ports["smtp-in"].append(started["smtp"])
            else:
                ports["pop3"].append(started["pop3"])
                ports["pop3s"].append(started["pop3s"])
        balancer = Balancer(workdir, REPO / "deploy" / "haproxy.cfg", ports)
        try:
            for backend, n in (("smtp-in", 2), ("pop3", 2), ("pop3s", 2)):
                for i in range(1, n + 1):
                    balancer.wait_for(f"{backend}/{backend}{i}", "UP")
            yield Deployment(stack, balancer, names)
        finally:
            balancer.stop()


def add_user(stack: Stack) -> tuple[str, str]:
    return add_account(stack.api_url, stack.admin_token)


def stored_subjects(stack: Stack, user: str) -> list[str]:
    maildir = stack.maildir(user)
    subjects = []
    for sub in ("new", "cur"):
        for path in (maildir / sub).iterdir() if (maildir / sub).exists() else ():
            for line in path.read_bytes().split(b"\n"):
                if line.startswith(b"Subject: "):
                    subjects.append(line[9:].decode())
                    break
    return subjects


ERRORS = (OSError, smtplib.SMTPException, poplib.error_proto)


def test_a_killed_smtp_replica_loses_only_its_connections(deployment: Deployment) -> None:
    stack, balancer = deployment.stack, deployment.balancer
    user, _ = add_user(stack)
    sources = itertools.cycle(f"127.0.{i}.{j}" for i in (7, 8) for j in range(2, 6))

    def deliver(i: int) -> None:
        with smtplib.SMTP(
            HOST, balancer.ports["smtp"], timeout=30, source_address=(next(sources), 0)
        ) as client:
            client.sendmail(
                "alice@sender.test",
                [f"{user}@pokey.onl"],
                f"Subject: m{i}\r\n\r\n{'x' * 70}\r\n{'y' * 70}\r\n".encode(),
            )

    victim = deployment.replicas["smtp-in"][0]
    done, failed = under_load(
        120,
        deliver,
        lambda: stack.kill_service(victim),
        kill_after=30,
        workers=WORKERS,
        errors=ERRORS,
    )
    # At most what the dead replica held at the moment (one connection per worker) failed.
    assert len(failed) <= WORKERS, failed
    assert len(done) >= 120 - WORKERS
    # Every message acknowledged with 250 is stored, once; an unacknowledged one may be
    # stored (the replica died after the mailstore had it, before its 250): the sender retries.
    subjects = stored_subjects(stack, user)
    assert len(subjects) == len(set(subjects))
    assert {f"m{i}" for i in done} <= set(subjects)
    balancer.wait_for("smtp-in/smtp-in1", "DOWN")
    # The client's own address, not the balancer's, is in the trace and the replica's log.
    maildir = stack.maildir(user)
    some = next((maildir / "new").iterdir()).read_bytes()
    assert b"([127.0.7." in some or b"([127.0.8." in some, some[:400]
    survivor = deployment.replicas["smtp-in"][1]
    wait_for_records(
        lambda: stack.logs(survivor),
        lambda e: e.get("event") == "message" and str(e.get("client", "")).startswith("127.0."),
    )


def test_a_killed_pop3_replica_loses_only_its_sessions(deployment: Deployment) -> None:
    stack, balancer = deployment.stack, deployment.balancer
    # Five accounts per worker: a lock a killed session left behind blocks one of them only.
    accounts = [add_user(stack) for _ in range(WORKERS * 5)]
    for user, _ in accounts:
        httpx.post(
            f"{stack.api_url}/internal/v1/deliveries",
            params={"recipient": user},
            content=b"Subject: kept\r\n\r\nhello\r\n",
            headers={
                "Authorization": f"Bearer {stack.service_token}",
                "Content-Type": "message/rfc822",
            },
            timeout=30,
        ).raise_for_status()

    # Each worker thread has accounts of its own, so two sessions of one account never overlap
    # (workers drift apart: one whose connection HAProxy retries waits a second meanwhile); an
    # account is held by something else only when a killed replica's lock outlives its session.
    slots: dict[int, int] = {}
    turns: dict[int, int] = {}
    used: dict[int, int] = {}  # job -> index of the account it used
    lock = threading.Lock()

    def session(i: int) -> None:
        with lock:
            slot = slots.setdefault(threading.get_ident(), len(slots))
            turn = turns.get(slot, 0)
            turns[slot] = turn + 1
            used[i] = slot + WORKERS * (turn % (len(accounts) // WORKERS))
        user, password = accounts[used[i]]
        client = poplib.POP3(HOST, balancer.ports["pop3"], timeout=30)
        try:
            client.user(user)
            client.pass_(password)
            assert client.stat()[0] == 1
            client.retr(1)
        finally:
            client.quit()

    victim = deployment.replicas["pop3"][0]
    done, failed = under_load(
        150,
        session,
        lambda: stack.kill_service(victim),
        kill_after=40,
        workers=WORKERS,
        errors=ERRORS,
    )
    # The sessions the dead replica held failed; their locks outlive them until POP3_LOCK_TTL,
    # so a new session for one of those accounts is told [IN-USE] meanwhile, and for no other.
    cut = [i for i, error in failed if "[IN-USE]" not in error]
    orphaned = {used[i] for i in cut}
    in_use = {used[i] for i, error in failed if "[IN-USE]" in error}
    assert len(cut) <= WORKERS, failed
    assert in_use <= orphaned, failed
    assert len(done) >= 150 - len(failed)
    balancer.wait_for("pop3/pop31", "DOWN")
    balancer.wait_for("pop3s/pop3s1", "DOWN")
    # Nothing was deleted, whatever died; every account logs in again once the locks expire,
    # through 995 too (TLS passes through the balancer to the survivor).
    context = ssl.create_default_context(cadata=stack.read_secret("tls/cert.pem").decode())
    context.check_hostname = False
    for user, password in accounts:
        assert stored_subjects(stack, user) == ["kept"]

        def logs_in(user: str = user, password: str = password) -> bool:
            tls = poplib.POP3_SSL(HOST, balancer.ports["pop3s"], context=context, timeout=30)
            try:
                tls.user(user)
                tls.pass_(password)
            except poplib.error_proto as exc:
                assert b"[IN-USE]" in exc.args[0], exc
                return False
            finally:
                tls.quit()
            return True

        wait_until(logs_in, 15, f"{user} logs in again")
