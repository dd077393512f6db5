"""Admin REST API under ``/api/v1`` (admin token): domains and aliases."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from fastapi.security import HTTPBearer
from mailcommon.addresses import normalize_domain, unicode_domain
from pydantic import BaseModel, Field

from mailstore_api import aliases, domains
from mailstore_api.db import AliasRow
from mailstore_api.errors import documented
from mailstore_api.state import State, get_state

_bearer = HTTPBearer(auto_error=False, scheme_name="admin token")
router = APIRouter(prefix="/api/v1", tags=["admin"], dependencies=[Depends(_bearer)])
StateDep = Annotated[State, Depends(get_state)]


class NewDomain(BaseModel):
    name: str = Field(max_length=253, description="a domain name, in U-labels or A-labels")


class Domain(BaseModel):
    name: str = Field(description="A-labels (IDNA 2008), as stored")
    unicode: str = Field(description="the same name in U-labels")
    primary: bool = Field(description="the first of MAIL_DOMAINS: bare names are in it")
    created_at: str
    accounts: int
    aliases: int


class DomainList(BaseModel):
    domains: list[Domain]


class DnsRecord(BaseModel):
    name: str = Field(description="the owner name, no final dot")
    type: str = Field(description="MX or TXT")
    value: str = Field(description="the record's data (a TXT record's strings joined)")
    why: str
    zone_line: str = Field(description="the record as a zone-file line (long TXT data split)")


class DomainDns(BaseModel):
    domain: str
    records: list[DnsRecord]


class NewAlias(BaseModel):
    address: str = Field(
        max_length=320, description="local@domain, a bare name, or @domain (catch-all)"
    )
    targets: list[str] = Field(
        min_length=1,
        max_length=aliases.MAX_TARGETS,
        description="account or alias addresses (bare names: the primary domain)",
    )


class Alias(BaseModel):
    address: str
    domain: str
    targets: list[str]
    accounts: list[str] = Field(description="the accounts it delivers to, expanded")
    created_at: str


class AliasList(BaseModel):
    aliases: list[Alias]


def _domain(state: State, name: str) -> Domain:
    count_accounts, count_aliases = state.directory.domain_counts().get(name, (0, 0))
    return Domain(
        name=name,
        unicode=unicode_domain(name),
        primary=name == state.directory.primary,
        created_at=state.directory.domains[name],
        accounts=count_accounts,
        aliases=count_aliases,
    )


def _alias(state: State, row: AliasRow) -> Alias:
    return Alias(
        address=row.address,
        domain=row.domain,
        targets=list(row.targets),
        accounts=state.directory.expand(row.address),
        created_at=row.created_at,
    )


@router.post("/domains", status_code=201, responses=documented(409, e409="domain_exists"))
async def add_domain(body: NewDomain, state: StateDep) -> Domain:
    """Add a domain to receive mail for (422 ``invalid_domain`` when it is not a name)."""
    return _domain(state, await domains.add_domain(state, body.name))


@router.get("/domains")
async def list_domains(state: StateDep) -> DomainList:
    """Every domain, with its account and alias counts."""
    return DomainList(domains=[_domain(state, name) for name in state.directory.domains])


@router.get("/domains/{name}/dns", responses=documented(404))
async def domain_dns(name: str, state: StateDep) -> DomainDns:
    """The DNS records to publish for the domain: MX, SPF, a DKIM key per selector (generated
    now when the domain has none yet), DMARC, TLS-RPT."""
    domain = domains.known_domain(state, name)
    records = await domains.dns_records(state, domain)
    return DomainDns(
        domain=domain,
        records=[
            DnsRecord(name=r.name, type=r.type, value=r.value, why=r.why, zone_line=r.zone_line)
            for r in records
        ],
    )


@router.delete(
    "/domains/{name}",
    status_code=204,
    responses=documented(404, 409, 423, e409="domain_not_empty (without force) / primary_domain"),
)
async def delete_domain(
    name: str, state: StateDep, force: Annotated[bool, Query()] = False
) -> Response:
    """Remove a domain; 409 while it has accounts or aliases unless ``force=true``, which
    deletes them and their mail (423 while POP3 holds one of them). A domain of MAIL_DOMAINS
    comes back at the next start."""
    await domains.delete_domain(state, name, force)
    return Response(status_code=204)


@router.post(
    "/aliases",
    status_code=201,
    responses=documented(409, e409="alias_exists / address_is_account"),
)
async def create_alias(body: NewAlias, state: StateDep) -> Alias:
    """Create an alias; 422 ``unknown_target``, ``alias_loop``, ``unknown_domain``."""
    return _alias(state, await aliases.create_alias(state, body.address, body.targets))


@router.get("/aliases")
async def list_aliases(
    state: StateDep, domain: Annotated[str | None, Query(max_length=253)] = None
) -> AliasList:
    """Every alias (or a domain's)."""
    rows = list(state.directory.aliases.values())
    if domain is not None:
        wanted = normalize_domain(domain)
        rows = [row for row in rows if row.domain == wanted]
    return AliasList(aliases=[_alias(state, row) for row in rows])


@router.delete("/aliases/{address}", status_code=204, responses=documented(404))
async def delete_alias(address: str, state: StateDep) -> Response:
    """Delete an alias."""
    await aliases.delete_alias(state, address)
    return Response(status_code=204)
