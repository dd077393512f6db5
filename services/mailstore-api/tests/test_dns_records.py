"""The records to publish for a domain, from the admin API (real HTTP) and ``mailctl domain dns``:
published as printed on a real DNS server (Knot), the console's DNS page finds every one, and mail
signed with the domain's keys (as smtp-out signs it, from the same secrets volume) verifies through
that DNS."""

from __future__ import annotations

import asyncio
import secrets
import stat
from pathlib import Path

import pytest
from consolekit import ConsoleClient
from mailauth.dkim import verify_dkim
from mailauth.dns import Nameserver, Resolver
from mailauth.signing import DkimSigner
from mailstack.dnsserver import AuthoritativeDns
from test_cli import mailctl
from test_console_dns import rows

pytestmark = pytest.mark.timeout(90)


def test_publish_what_mailctl_prints_and_everything_matches(make_mailstore, tmp_path: Path):
    zone = f"d{secrets.token_hex(4)}.test"
    with AuthoritativeDns(tmp_path / "knot") as dns:
        store = make_mailstore(DNS_NAMESERVERS=dns.nameserver, DNS_TIMEOUT="2")
        store.start()
        with store.admin() as api:
            assert api.post("/domains", json={"name": zone}).status_code == 201
            r = api.get(f"/domains/{zone.upper()}/dns")
            assert r.status_code == 200, r.text
            body = r.json()
            assert api.get(f"/domains/{zone}/dns").json() == body  # the keys are kept
            missing = api.get("/domains/nowhere.test/dns")
            assert missing.status_code == 404
            assert missing.json()["error"]["code"] == "unknown_domain"
        assert body["domain"] == zone
        records = {(x["type"], x["name"]): x["value"] for x in body["records"]}
        signer = DkimSigner(store.secrets_dir)  # smtp-out's view of the same volume
        rsa, ed = signer.keys(zone)
        assert records == {
            ("MX", zone): "10 mx.test.example.",
            ("TXT", zone): "v=spf1 a:mx.test.example ~all",
            ("TXT", f"md-rsa1._domainkey.{zone}"): rsa.record,
            ("TXT", f"md-ed1._domainkey.{zone}"): ed.record,
            ("TXT", f"_dmarc.{zone}"): f"v=DMARC1; p=none; rua=mailto:postmaster@{zone}",
            ("TXT", f"_smtp._tls.{zone}"): f"v=TLSRPTv1; rua=mailto:postmaster@{zone}",
        }
        assert rsa.record.startswith("v=DKIM1; k=rsa; p=") and len(rsa.record) > 255
        for path in (store.secrets_dir / "dkim" / zone).iterdir():
            assert stat.S_IMODE(path.stat().st_mode) == 0o600

        printed = mailctl(store, "domain", "dns", zone)
        assert printed.returncode == 0, printed.stderr
        lines = printed.stdout.splitlines()
        zone_lines = [line for line in lines if not line.startswith(";")]
        assert zone_lines == [x["zone_line"] for x in body["records"]]
        assert len(lines) == 2 * len(zone_lines)  # each after a comment saying what it is for
        rsa_line = zone_lines[2]
        assert rsa_line.startswith(f'md-rsa1._domainkey.{zone}. 3600 IN TXT "v=DKIM1; k=rsa; p=')
        assert rsa_line.count('" "') == 1  # two strings: none over 255 octets
        as_json = mailctl(store, "domain", "dns", zone, "--json")
        assert as_json.returncode == 0 and '"zone_line"' in as_json.stdout
        unknown = mailctl(store, "domain", "dns", "nowhere.test")
        assert unknown.returncode == 1
        assert "no such domain (unknown_domain, HTTP 404)" in unknown.stderr

        dns.serve(zone, printed.stdout.splitlines())  # the operator's zone file, as printed
        with ConsoleClient(store.url) as ui:
            ui.sign_in(store.admin_token)
            page = ui.get(f"/ui/domains/{zone}/dns")
            assert page.status_code == 200
            assert set(rows(page.text).values()) == {"matches"}
            assert len(rows(page.text)) == len(zone_lines)

        message = (
            f"From: Alice <alice@{zone}>\r\nTo: bob@example.net\r\nSubject: Hi\r\n"
            "Date: Wed, 02 Dec 2026 06:00:00 +0000\r\n\r\nSigned as it leaves.\r\n"
        ).encode()
        signed = signer.sign(message, zone) + message
        resolver = Resolver([Nameserver("127.0.0.1", dns.port)], timeout=2.0)
        results = asyncio.run(verify_dkim(resolver, signed))
        assert [(x.result, x.selector) for x in results] == [
            ("pass", "md-rsa1"),
            ("pass", "md-ed1"),
        ]
        store.stop()


def test_the_selectors_setting_names_the_records(make_mailstore):
    store = make_mailstore(DKIM_SELECTOR_RSA="rsa2027", DKIM_SELECTOR_ED25519="ed2027")
    store.start()
    with store.admin() as api:
        names = [x["name"] for x in api.get("/domains/test.example/dns").json()["records"]]
    assert "rsa2027._domainkey.test.example" in names
    assert "ed2027._domainkey.test.example" in names
    assert not any("md-rsa1" in name for name in names)
    assert (store.secrets_dir / "dkim" / "test.example" / "rsa2027.pem").exists()
    store.stop()
