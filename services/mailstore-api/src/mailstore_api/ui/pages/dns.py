"""A domain's DNS page: the records to create, each beside what DNS answers now."""

from __future__ import annotations

from fastapi import APIRouter, Request
from mailcommon.addresses import unicode_domain
from starlette.responses import Response

from mailstore_api import dnsrecords, domains
from mailstore_api.ui.console import ConsoleDep, SessionDep, StateDep

router = APIRouter()


@router.get("/domains/{name}/dns")
async def dns_page(
    name: str, request: Request, console: ConsoleDep, session: SessionDep, state: StateDep
) -> Response:
    domain = domains.known_domain(state, name)
    hostname = state.settings.mail_hostname
    records = await domains.dns_records(state, domain)
    checked = await dnsrecords.check(console.resolver(), records)
    return console.page(
        request,
        "dns.html",
        session,
        domain=domain,
        unicode=unicode_domain(domain),
        hostname=hostname,
        checked=checked,
    )
