"""Certificates: ACME against a real Pebble (HTTP-01 validated for real on our responder), served
by all three TLS listeners, renewed, kept over a restart; an operator's files swapped under live
sessions. Local processes only (Pebble runs on this machine's loopback)."""

from __future__ import annotations

import datetime
import signal
import ssl
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from mailcommon.tls import ACME_FILE
from mailstack.certs import ScratchCA
from mailstack.pebble import Pebble
from mailstack.ports import free_port, wait_until
from mailstack.stack import Stack
from mailstack.tlsprobe import open_tls, served_certificate, still_talks

pytestmark = [pytest.mark.local_only, pytest.mark.slow]

HOSTNAME = "mail.pokey.onl"
LISTENERS = ("smtp", "stls", "pop3s")
# Pebble's certificates live 45 s here: renewed a third before the end, 30 s after issue.
VALIDITY = 45


def ports(stack: Stack) -> dict[str, int]:
    return {"smtp": stack.smtp_port, "stls": stack.pop3_port, "pop3s": stack.pop3s_port}


def leaf_der(pem: bytes) -> bytes:
    """The first certificate of a PEM file (the leaf of a chain), as DER."""
    end = "-----END CERTIFICATE-----"
    return ssl.PEM_cert_to_DER_cert(pem.decode().split(end)[0] + end + "\n")


@pytest.fixture(scope="module")
def pebble(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pebble]:
    with Pebble(tmp_path_factory.mktemp("pebble"), validity_seconds=VALIDITY) as running:
        yield running


@pytest.fixture(scope="module")
def acme_stack(pebble: Pebble, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {
        "ACME_EMAIL": "postmaster@pokey.onl",
        "ACME_DIRECTORY_URL": pebble.directory_url,
        "ACME_CA_BUNDLE": str(pebble.ca_file),
        "ACME_HTTP_PORT": str(pebble.http_port),
        "TLS_RELOAD_INTERVAL": "1",
    }
    with Stack(tmp_path_factory.mktemp("acme-stack"), env=env, hostname=HOSTNAME) as stack:
        yield stack


@pytest.fixture(scope="module")
def pebble_client(pebble: Pebble) -> ssl.SSLContext:
    """A client that trusts Pebble's root and nothing else, and checks the host name."""
    return ssl.create_default_context(cadata=pebble.root_pem())


def acme_leaf(stack: Stack) -> bytes:
    return leaf_der(stack.read_secret(str(ACME_FILE)))


def wait_until_served(stack: Stack, client: ssl.SSLContext) -> bytes:
    """The certificate in ``acme.pem`` once a new session on each of the three listeners is
    given it (and verifies it with ``client``)."""

    def served() -> bytes | None:
        leaf = acme_leaf(stack)
        for kind, port in ports(stack).items():
            try:
                if served_certificate(kind, port, client, HOSTNAME) != leaf:
                    return None
            except ssl.SSLCertVerificationError:  # still the generated pair
                return None
        return leaf

    return wait_until(served, 30, "the ACME certificate on every listener")


def test_an_acme_certificate_is_issued_and_verifies_on_every_listener(
    acme_stack: Stack, pebble_client: ssl.SSLContext
) -> None:
    acme_stack.wait_for_log("mailstore-api", {"event": "acme_certificate_issued"})
    wait_until_served(acme_stack, pebble_client)
    # Pebble fetched the token from our responder (HTTP-01 validated for real).
    acme_stack.wait_for_log("mailstore-api", {"event": "acme_challenge_request", "found": True})


def test_a_restart_with_a_valid_certificate_orders_nothing(acme_stack: Stack) -> None:
    before = acme_stack.read_secret(str(ACME_FILE))
    offset = len(acme_stack.logs("mailstore-api"))
    acme_stack.stop_service("mailstore-api")
    acme_stack.start_service("mailstore-api")
    acme_stack.wait_for_log("mailstore-api", {"event": "acme_certificate_valid"}, count=2)
    after_restart = acme_stack.logs("mailstore-api")[offset:]
    decision = after_restart.index('"acme_certificate_valid"')
    assert '"acme_order"' not in after_restart[:decision]
    assert acme_stack.read_secret(str(ACME_FILE)) == before


def test_the_certificate_is_renewed_and_served(
    acme_stack: Stack, pebble_client: ssl.SSLContext
) -> None:
    first = acme_leaf(acme_stack)
    # A renewal is due 30 s after an issue; allow for a loaded machine.
    wait_until(lambda: acme_leaf(acme_stack) != first, VALIDITY * 2, "a renewed certificate")
    assert wait_until_served(acme_stack, pebble_client) != first
    # Picked up by the front ends' checks, not by a restart.
    for front_end in ("smtp-in", "pop3"):
        acme_stack.wait_for_log(front_end, {"event": "tls_certificate_loaded", "reason": "poll"})


def test_until_acme_succeeds_the_generated_pair_serves_and_the_failure_is_logged(
    tmp_path: Path,
) -> None:
    env = {
        "ACME_EMAIL": "postmaster@pokey.onl",
        "ACME_DIRECTORY_URL": f"https://127.0.0.1:{free_port()}/dir",  # nothing listens
        "ACME_HTTP_PORT": str(free_port()),
    }
    with Stack(tmp_path, env=env, hostname=HOSTNAME) as stack:
        [failure] = stack.wait_for_log("mailstore-api", {"event": "acme_failed"})
        assert (failure["retry_in_s"], failure["failures"]) == (60, 1)
        assert "Connection" in failure["error"]
        generated = ssl.create_default_context(cadata=stack.read_secret("tls/cert.pem").decode())
        for kind, port in ports(stack).items():
            der = served_certificate(kind, port, generated, HOSTNAME)
            assert der == leaf_der(stack.read_secret("tls/cert.pem")), kind
        # The responder answers 404 for anything but a pending challenge.
        url = f"http://127.0.0.1:{env['ACME_HTTP_PORT']}/.well-known/acme-challenge/nothing"
        assert httpx.get(url).status_code == 404


# --- An operator's files (certbot, Traefik, Caddy) ---------------------------------------------


@pytest.fixture
def operator(tmp_path: Path) -> Iterator[tuple[Stack, ScratchCA, Path]]:
    """A stack serving files from ``tmp_path/tls``; it checks them on SIGHUP only (the interval is
    the longest allowed), so each step below is one reload."""
    ca = ScratchCA.create()
    cert, key = ca.write(tmp_path / "tls", HOSTNAME)
    env = {"TLS_CERT_FILE": str(cert), "TLS_KEY_FILE": str(key), "TLS_RELOAD_INTERVAL": "60"}
    with Stack(tmp_path / "stack", env=env, hostname=HOSTNAME) as stack:
        yield stack, ca, tmp_path / "tls"


def reload(stack: Stack, event: str, count: int) -> None:
    for front_end in ("smtp-in", "pop3"):
        stack.signal_service(front_end, signal.SIGHUP)
    for front_end in ("smtp-in", "pop3"):
        stack.wait_for_log(front_end, {"event": event}, count=count)


def test_operator_files_swapped_under_live_sessions(
    operator: tuple[Stack, ScratchCA, Path],
) -> None:
    stack, ca, tls_dir = operator
    client = ssl.create_default_context(cadata=ca.pem.decode())
    old = leaf_der((tls_dir / "cert.pem").read_bytes())
    sessions = {kind: open_tls(kind, port, client, HOSTNAME) for kind, port in ports(stack).items()}
    try:
        # A key that does not match (certbot wrote the certificate, not yet the key): refused.
        (tls_dir / "cert.pem").write_bytes(ca.issue(HOSTNAME)[0])
        reload(stack, "tls_certificate_refused", 1)
        # An expired pair: refused too.
        ca.write(
            tls_dir,
            HOSTNAME,
            valid_from=datetime.timedelta(days=-3),
            valid_for=datetime.timedelta(days=1),
        )
        reload(stack, "tls_certificate_refused", 2)
        for kind, port in ports(stack).items():
            assert served_certificate(kind, port, client, HOSTNAME) == old, kind
        # A good pair: new sessions get it; the sessions opened before go on with theirs.
        ca.write(tls_dir, HOSTNAME)
        new = leaf_der((tls_dir / "cert.pem").read_bytes())
        reload(stack, "tls_certificate_loaded", 1)
        for kind, port in ports(stack).items():
            assert served_certificate(kind, port, client, HOSTNAME) == new, kind
        for kind, tls in sessions.items():
            assert still_talks(kind, tls), kind
            assert tls.getpeercert(binary_form=True) == old, kind
    finally:
        for tls in sessions.values():
            tls.close()
    refusals = stack.wait_for_log("pop3", {"event": "tls_certificate_refused"}, count=2)
    assert [r["reason"] for r in refusals] == ["sighup", "sighup"]
    assert "key values mismatch" in refusals[0]["error"]
    assert refusals[1]["error"] == "certificate has expired"
