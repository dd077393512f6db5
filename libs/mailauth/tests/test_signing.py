"""DKIM signing (mailauth.signing): messages signed with both keys, the keys published on a real
DNS server (Knot), the signatures verified through it by dkimpy (mailauth.dkim) and, one
algorithm at a time, by OpenDKIM (opendkim-testmsg); the keys' files and their race-free
generation."""

from __future__ import annotations

import asyncio
import re
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import dkim
import pytest
from authreference import ReferenceTools
from mailauth.dkim import DkimResult, verify_dkim
from mailauth.dns import Resolver
from mailauth.signing import (
    DkimSettings,
    DkimSigner,
    KeyFileError,
    Selectors,
    SigningKey,
    sign_message,
)
from mailstack.dnsserver import AuthoritativeDns, txt
from pydantic import ValidationError


def verify(resolver: Resolver, raw: bytes) -> list[DkimResult]:
    return asyncio.run(verify_dkim(resolver, raw, min_rsa_bits=2048))


def publish(dns_server: AuthoritativeDns, zone: str, keys: tuple[SigningKey, ...]) -> None:
    """Each key's record, as an operator publishes it (``mailctl domain dns`` prints the same)."""
    dns_server.serve(zone, [f"{key.record_name}. TXT {txt(key.record)}" for key in keys])


# Every message has a Date (RFC 5322 3.6 requires it; smtp-submit adds one, RFC 6409 8):
# libopendkim calls a message without one a "Syntax error" whatever its signature.
DATE = "Date: Wed, 02 Dec 2026 06:00:00 +0000\r\n"


def plain(zone: str) -> bytes:
    return (
        f"From: Alice <alice@{zone}>\r\n"
        "To: bob@example.net\r\n"
        "Subject: Plain\r\n"
        "Date: Wed, 02 Dec 2026 06:00:00 +0000\r\n"
        f"Message-ID: <plain@{zone}>\r\n"
        "\r\n"
        "Hello there.\r\n"
    ).encode()


def multipart(zone: str) -> bytes:
    return (
        f"From: alice@{zone}\r\n"
        "To: bob@example.net, carol@example.org\r\n"
        "Cc: dave@example.com\r\n"
        "Reply-To: list@example.com\r\n"
        "Subject: With an attachment\r\n"
        "Date: Wed, 02 Dec 2026 06:00:00 +0000\r\n"
        f"Message-ID: <multi@{zone}>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/mixed; boundary="b1"\r\n'
        "\r\n"
        "--b1\r\n"
        "Content-Type: text/plain; charset=us-ascii\r\n"
        "\r\n"
        "See attached.   \r\n"
        "--b1\r\n"
        "Content-Type: application/octet-stream\r\n"
        "Content-Transfer-Encoding: base64\r\n"
        "\r\n"
        "AAECAwQFBgcICQ==\r\n"
        "--b1--\r\n"
    ).encode()


def eight_bit(zone: str) -> bytes:
    return (
        f"From: alice@{zone}\r\n"
        "To: bob@example.net\r\n"
        f"{DATE}"
        "Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n"
        "\r\n"
        "Grüße aus Köln, 東京からも。\r\n"
    ).encode()


def long_lines(zone: str) -> bytes:
    folded = " ".join(f"word{i}" for i in range(60))
    return (
        f"From: alice@{zone}\r\n"
        "To: bob@example.net\r\n"
        f"{DATE}"
        f"Subject: {folded[:70]}\r\n {folded[70:]}\r\n"
        "\r\n" + "x" * 997 + "\r\n" + ("y" * 76 + "\r\n") * 200 + "\r\n\r\n"  # trailing blanks
    ).encode()


def encoded_from(zone: str) -> bytes:
    return (
        f"From: =?utf-8?b?SsO2cmcgTcO8bGxlcg==?= <joerg@{zone}>\r\n"
        "To: bob@example.net\r\n"
        f"{DATE}"
        "Subject: Encoded From\r\n"
        "\r\n"
        "Hi.\r\n"
    ).encode()


def stored_with_lf(zone: str) -> bytes:
    """The Maildir form (LF line ends): signed as it will be sent, with CRLF."""
    return plain(zone).replace(b"\r\n", b"\n")


MESSAGES = [plain, multipart, eight_bit, long_lines, encoded_from, stored_with_lf]


@pytest.fixture
def signer(tmp_path: Path) -> DkimSigner:
    return DkimSigner(tmp_path / "secrets")


@pytest.mark.parametrize("make", MESSAGES, ids=[m.__name__ for m in MESSAGES])
def test_both_signatures_verify_through_dns(  # fixtures by keyword
    *,
    dns_server: AuthoritativeDns,
    resolver: Resolver,
    reference: ReferenceTools,
    signer: DkimSigner,
    zone: str,
    make: Callable[[str], bytes],
) -> None:
    raw = make(zone)
    keys = signer.keys(zone)
    publish(dns_server, zone, keys)
    linesep = b"\r\n" if b"\r\n" in raw else b"\n"
    signed = signer.sign(raw, zone, linesep=linesep) + raw
    wire = signed.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    results = verify(resolver, wire)
    assert [(r.result, r.domain, r.selector, r.algorithm) for r in results] == [
        ("pass", zone, "md-rsa1", "rsa-sha256"),
        ("pass", zone, "md-ed1", "ed25519-sha256"),
    ], [r.reason for r in results]
    for key in keys:  # OpenDKIM accepts a message on one good signature: each on its own
        alone = sign_message(raw, [key], linesep=linesep) + raw
        assert reference.opendkim(alone) == "OK", key.kind


@pytest.mark.parametrize(
    ("change", "opendkim"),
    [
        ((b"Subject: Plain\r\n", b"Subject: Plain!\r\n"), "Bad signature"),
        ((b"Hello there.", b"Hello there!"), "Bad signature"),
        # A second From: libopendkim refuses the message itself (RFC 5322 allows one).
        ((b"From: Alice", b"From: mallory@evil.example\r\nFrom: Alice"), "Syntax error"),
        (
            (b"To: bob@example.net\r\n", b"To: bob@example.net\r\nCc: eve@example.net\r\n"),
            "Bad signature",
        ),
    ],
    ids=["subject", "body", "second-from", "added-cc"],
)
def test_a_change_after_signing_fails_both(  # fixtures by keyword
    *,
    dns_server: AuthoritativeDns,
    resolver: Resolver,
    reference: ReferenceTools,
    signer: DkimSigner,
    zone: str,
    change: tuple[bytes, bytes],
    opendkim: str,
) -> None:
    raw = plain(zone)
    publish(dns_server, zone, signer.keys(zone))
    signed = signer.sign(raw, zone) + raw
    altered = signed.replace(*change)
    assert altered != signed
    assert [r.result for r in verify(resolver, altered)] == ["fail", "fail"]
    assert reference.opendkim(altered) == opendkim


def test_refolding_and_trailing_spaces_still_verify(
    dns_server: AuthoritativeDns, resolver: Resolver, signer: DkimSigner, zone: str
) -> None:
    """relaxed/relaxed: what relays do to whitespace does not break the signatures."""
    raw = plain(zone)
    publish(dns_server, zone, signer.keys(zone))
    relayed = (
        (signer.sign(raw, zone) + raw)
        .replace(b"Subject: Plain\r\n", b"Subject:   Plain \r\n")
        .replace(b"Hello there.\r\n", b"Hello  there.  \r\n\r\n")
    )
    assert [r.result for r in verify(resolver, relayed)] == ["pass", "pass"]


def test_the_signed_fields_are_the_documented_ones_and_oversigned(
    signer: DkimSigner, zone: str
) -> None:
    fields = signer.sign(multipart(zone), zone).decode()
    h_tags = [
        "".join(part.split("h=", 1)[1].split(";")[0].split())
        for part in fields.split("DKIM-Signature:")[1:]
    ]
    present_twice = ["from", "reply-to", "to", "cc", "subject", "date", "message-id"]
    for h in h_tags:
        names = h.split(":")
        for name in present_twice:
            assert names.count(name) == 2, name  # present once, signed once more
        assert names.count("sender") == 1  # absent: still signed, so it cannot be added
        assert names.count("content-type") == 2
        assert "received" not in names and "return-path" not in names


def test_keys_are_private_files_and_reused(tmp_path: Path, zone: str) -> None:
    secrets_dir = tmp_path / "secrets"
    first = DkimSigner(secrets_dir).keys(zone.upper() + ".")  # any spelling: one domain
    directory = secrets_dir / "dkim" / zone
    assert sorted(p.name for p in directory.iterdir()) == ["md-ed1.pem", "md-rsa1.pem"]
    for path in directory.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert path.read_bytes().startswith(b"-----BEGIN ")
    for path in (secrets_dir / "dkim", directory):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
    again = DkimSigner(secrets_dir).keys(zone)  # another process's signer, later
    assert again == first
    rsa_record, ed_record = (key.record for key in first)
    assert rsa_record.startswith("v=DKIM1; k=rsa; p=MIIBIjAN")  # SubjectPublicKeyInfo, 2048
    assert ed_record.startswith("v=DKIM1; k=ed25519; p=") and len(ed_record) == 22 + 44


RACER = """
import sys
from collections.abc import Callable
from pathlib import Path
from mailauth.signing import DkimSigner
print("ready", flush=True)
sys.stdin.readline()
print(" ".join(key.record for key in DkimSigner(Path(sys.argv[1])).keys(sys.argv[2])))
"""


def test_processes_generating_at_once_all_get_the_one_key(tmp_path: Path, zone: str) -> None:
    secrets_dir = tmp_path / "secrets"
    racers = [
        subprocess.Popen(
            [sys.executable, "-c", RACER, str(secrets_dir), zone],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for racer in racers:  # every one started and waiting: then all are let go at once
        assert racer.stdout is not None and racer.stdout.readline() == "ready\n"
    for racer in racers:
        assert racer.stdin is not None
        racer.stdin.write("go\n")
        racer.stdin.flush()
    outputs = {racer.communicate(timeout=60)[0] for racer in racers}
    assert all(racer.returncode == 0 for racer in racers)
    assert len(outputs) == 1
    [published] = outputs
    assert published.strip() == " ".join(k.record for k in DkimSigner(secrets_dir).keys(zone))
    leftovers = [p.name for p in (secrets_dir / "dkim" / zone).iterdir()]
    assert sorted(leftovers) == ["md-ed1.pem", "md-rsa1.pem"]  # no temporary file left behind


def test_selectors_from_the_settings(
    dns_server: AuthoritativeDns,
    resolver: Resolver,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    zone: str,
) -> None:
    monkeypatch.setenv("DKIM_SELECTOR_RSA", "2026a")
    monkeypatch.setenv("DKIM_SELECTOR_ED25519", "2026b")
    signer = DkimSettings().dkim_signer(tmp_path)
    keys = signer.keys(zone)
    assert [k.record_name for k in keys] == [f"2026a._domainkey.{zone}", f"2026b._domainkey.{zone}"]
    assert (tmp_path / "dkim" / zone / "2026a.pem").exists()
    publish(dns_server, zone, keys)
    raw = plain(zone)
    results = verify(resolver, signer.sign(raw, zone) + raw)
    assert [(r.result, r.selector) for r in results] == [("pass", "2026a"), ("pass", "2026b")]


@pytest.mark.parametrize(
    "env",
    [
        {"DKIM_SELECTOR_RSA": "Not_A_Label"},
        {"DKIM_SELECTOR_RSA": "../x"},
        {"DKIM_SELECTOR_RSA": "same", "DKIM_SELECTOR_ED25519": "same"},
    ],
)
def test_bad_selectors_are_refused_at_start(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str]
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match="selector"):
        DkimSettings()


def test_bad_input_is_a_clear_error(signer: DkimSigner, tmp_path: Path, zone: str) -> None:
    with pytest.raises(ValueError, match="not a domain name"):
        signer.keys("../../etc")
    with pytest.raises(ValueError, match="no From field"):
        signer.sign(b"To: bob@example.net\r\nSubject: x\r\n\r\nbody\r\n", zone)
    with pytest.raises(ValueError, match="lower-case DNS label"):
        Selectors(rsa="a/b")


def test_a_damaged_key_file_is_reported_not_replaced(tmp_path: Path, zone: str) -> None:
    secrets_dir = tmp_path / "secrets"
    DkimSigner(secrets_dir).keys(zone)
    rsa_file = secrets_dir / "dkim" / zone / "md-rsa1.pem"
    ed_file = secrets_dir / "dkim" / zone / "md-ed1.pem"
    rsa_file.write_bytes(ed_file.read_bytes())  # an Ed25519 key where the RSA one belongs
    with pytest.raises(KeyFileError, match="not an rsa key"):
        DkimSigner(secrets_dir).keys(zone)
    rsa_file.write_bytes(b"garbage")
    with pytest.raises(KeyFileError, match="not a PEM private key"):
        DkimSigner(secrets_dir).keys(zone)
    assert rsa_file.read_bytes() == b"garbage"  # left for the operator to look at


def test_the_openssl_rsa_signature_is_dkimpys_own(signer: DkimSigner, zone: str) -> None:
    """RSASSA-PKCS1-v1_5 is deterministic: the field made with OpenSSL's RSA operation is,
    octet for octet, the one dkimpy makes with its own (given the same h= and t=)."""
    rsa_key = signer.keys(zone)[0]
    raw = long_lines(zone)
    for _ in range(3):  # both made within one second: the same t=
        ours = sign_message(raw, [rsa_key])
        h_tag = re.search(rb"h=([^;]+);", ours)
        assert h_tag is not None
        theirs = dkim.sign(
            raw,
            rsa_key.selector.encode(),
            zone.encode(),
            rsa_key.private,
            canonicalize=(b"relaxed", b"relaxed"),
            include_headers=[name.strip() for name in h_tag.group(1).split(b":")],
        )
        if re.findall(rb"t=(\d+)", ours) == re.findall(rb"t=(\d+)", theirs):
            break
    assert ours == theirs
