"""Sender checks benchmark: smtp-in with SPF, DKIM, ARC and DMARC on, against checks off and Postfix.

    uv run python bench/auth_bench.py [--seconds 9] [--rounds 3] [--concurrency 10,50] [--no-postfix]

One stack (redis, mailstore-api) and two smtp-in processes on it: one with the checks on, its DNS a
local Knot server (``knotd``) publishing the sender's SPF record, DKIM key (RSA 2048) and DMARC
policy, the other with ``AUTH_CHECKS=false``. Every message is a 4 KiB message signed once with
dkimpy (rsa-sha256, relaxed/relaxed) from ``bench@sender.bench``, so each delivery verifies a real
signature, checks SPF and DMARC (warm cache after the warm-up). Postfix (``peers.sh start``) gets
the same messages, unchecked. Rounds are interleaved. Then DKIM verifications per second on one
core, for rsa-sha256 2048 and ed25519-sha256, the key already fetched.
"""

from __future__ import annotations

import argparse
import base64
import sys
import tempfile
import time
from pathlib import Path

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

sys.path.insert(0, str(Path(__file__).resolve().parent))

from mailstack.dnsserver import AuthoritativeDns, txt
from mailstack.stack import Stack
from smtp_bench import Result, add_measure_options, create_users, make_body, measure_points

SENDER_DOMAIN = "sender.bench"
SENDER = f"bench@{SENDER_DOMAIN}"
SELECTOR = b"bench"


def rsa_key() -> tuple[bytes, str]:
    """(private key PEM, the p= of its DKIM record)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, base64.b64encode(public).decode()


def signed_message(private: bytes) -> bytes:
    body = make_body(4096, "signed").replace(
        b"From: bench@bench.client", f"From: Bench <{SENDER}>".encode()
    )
    signature = dkim.sign(
        body,
        SELECTOR,
        SENDER_DOMAIN.encode(),
        private,
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=[b"from", b"to", b"subject"],
    )
    return signature + body


def verifications_per_second(message: bytes, record: bytes, seconds: float = 3.0) -> float:
    """dkimpy verifications of ``message`` per second on this core, the key record at hand."""

    def dnsfunc(name: bytes, timeout: int = 5) -> bytes:
        return record

    count, deadline = 0, time.perf_counter() + seconds
    started = time.perf_counter()
    while time.perf_counter() < deadline:
        assert dkim.verify(message, dnsfunc=dnsfunc)
        count += 1
    return count / (time.perf_counter() - started)


def ed25519_figures() -> float:
    key = ed25519.Ed25519PrivateKey.generate()
    seed = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    body = make_body(4096, "ed").replace(b"From: bench@bench.client", f"From: {SENDER}".encode())
    message = (
        dkim.sign(
            body,
            SELECTOR,
            SENDER_DOMAIN.encode(),
            base64.b64encode(seed),
            signature_algorithm=b"ed25519-sha256",
            include_headers=[b"from", b"subject"],
        )
        + body
    )
    record = b"v=DKIM1; k=ed25519; p=" + base64.b64encode(public)
    return verifications_per_second(message, record)


def run(args: argparse.Namespace) -> None:
    private, public = rsa_key()
    message = signed_message(private)
    with tempfile.TemporaryDirectory(prefix="auth-bench-") as tmp:
        work = Path(tmp)
        with AuthoritativeDns(work / "dns") as dns:
            dns.serve(
                SENDER_DOMAIN,
                [
                    f"@ TXT {txt('v=spf1 ip4:127.0.0.1 -all')}",
                    f"{SELECTOR.decode()}._domainkey TXT {txt('v=DKIM1; k=rsa; p=' + public)}",
                    f"_dmarc TXT {txt('v=DMARC1; p=reject')}",
                ],
                ttl=3600,
            )
            env = {"DNS_NAMESERVERS": dns.nameserver}
            services = ("redis", "mailstore-api", "smtp-in")
            with Stack(work / "stack", services=services, domains="bench.test", env=env) as stack:
                users = [f"u{i}" for i in range(50)]
                create_users(stack.api_url, stack.admin_token, users)
                off_port = stack.start_replica("smtp-in", {"AUTH_CHECKS": "false"})["smtp"]
                targets = [("checks-on", stack.smtp_port), ("checks-off", off_port)]
                results = measure_points(
                    args, targets, users, sender=SENDER, message=lambda: message
                )
                report(results)
    rsa_rate = verifications_per_second(message, f"v=DKIM1; k=rsa; p={public}".encode())
    print(f"\nDKIM verifications per second, one core: rsa-sha256 2048 {rsa_rate:.0f}, ", end="")
    print(f"ed25519-sha256 {ed25519_figures():.0f} (4 KiB messages, dkimpy, key at hand)")


def report(results: list[Result]) -> None:
    by = {(r.name, r.concurrency): r for r in results}
    print()
    for c in sorted({r.concurrency for r in results}):
        on, off = by[("checks-on", c)], by[("checks-off", c)]
        line = f"concurrency {c:>2}: checks-on/checks-off {on.e2e_rate / off.e2e_rate:.2f}"
        if ("postfix", c) in by:
            line += f"  checks-on/postfix {on.e2e_rate / by[('postfix', c)].e2e_rate:.2f}"
        print(f"{line}  checks-on p99 {on.pct(0.99):.1f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_measure_options(parser)
    run(parser.parse_args())


if __name__ == "__main__":
    main()
