"""The console's DNS page against a real authoritative server (Knot DNS on loopback): each
record to create, beside what DNS answers now."""

from __future__ import annotations

import html
import re
import secrets
from pathlib import Path

import pytest
from consolekit import ConsoleClient
from mailauth.signing import DkimSigner
from mailstack.dnsserver import AuthoritativeDns, txt

pytestmark = pytest.mark.timeout(90)


def rows(page: str) -> dict[str, str]:
    """Record type and name -> the page's status word for it."""
    found = {}
    for row in re.findall(r"<tr>(.*?)</tr>", page, re.S):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        if len(cells) == 5:
            status = re.search(r'<span class="tag [a-z]+">([^<]+)</span>', cells[3])
            assert status is not None
            found[f"{cells[1]} {cells[0]}"] = status.group(1)
    return found


def test_the_dns_page_marks_each_record_matching_or_not(make_mailstore, tmp_path: Path):
    zone = f"d{secrets.token_hex(4)}.test"
    with AuthoritativeDns(tmp_path / "knot") as dns:
        dns.serve(
            zone,
            [
                "@ MX 10 mx.test.example.",
                f"@ TXT {txt('v=spf1 ip4:192.0.2.1 -all')}",  # an SPF, not the one proposed
                f"_dmarc TXT {txt(f'v=DMARC1; p=none; rua=mailto:postmaster@{zone}')}",
                f"md-ed1._domainkey TXT {txt('v=DKIM1; k=ed25519; p=notthekey')}",
            ],
        )
        store = make_mailstore(DNS_NAMESERVERS=dns.nameserver, DNS_TIMEOUT="2")
        store.start()
        with store.admin() as api:
            assert api.post("/domains", json={"name": zone}).status_code == 201
        with ConsoleClient(store.url) as ui:
            ui.sign_in(store.admin_token)
            page = ui.get(f"/ui/domains/{zone}/dns")
            assert page.status_code == 200
            assert rows(page.text) == {
                f"MX {zone}": "matches",
                f"TXT {zone}": "differs",
                f"TXT md-rsa1._domainkey.{zone}": "missing",
                f"TXT md-ed1._domainkey.{zone}": "differs",
                f"TXT _dmarc.{zone}": "matches",
                f"TXT _smtp._tls.{zone}": "missing",
            }
            assert "v=spf1 ip4:192.0.2.1 -all" in page.text  # what DNS answers is shown
            assert "v=DKIM1; k=ed25519; p=notthekey" in page.text
            copy = re.findall(r'data-copy="([^"]+)"', page.text)
            assert html.unescape(copy[0]) == f"{zone}. 3600 IN MX 10 mx.test.example."
            assert html.unescape(copy[1]) == f'{zone}. 3600 IN TXT "v=spf1 a:mx.test.example ~all"'
            # The DKIM keys the page shows are the ones it generated on the secrets volume.
            assert (store.secrets_dir / "dkim" / zone / "md-rsa1.pem").exists()
            for key in DkimSigner(store.secrets_dir).keys(zone):
                assert key.record in html.unescape(page.text)
            assert ui.get("/ui/domains/nowhere.test/dns").status_code == 404
        store.stop()
