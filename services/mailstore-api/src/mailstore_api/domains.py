"""Domains: add, list, remove. Stored as A-labels (IDNA 2008), shown in both forms."""

from __future__ import annotations

from mailcommon.addresses import normalize_domain
from mailcommon.logging import get_logger

from mailstore_api import accounts, dnsrecords
from mailstore_api.errors import ApiError
from mailstore_api.state import State, now_iso

log = get_logger(__name__)


def parse_domain(name: str) -> str:
    """The A-label form of ``name``; 422 ``invalid_domain`` when it is not a domain name."""
    domain = normalize_domain(name)
    if domain is None:
        raise ApiError(422, "invalid_domain", f"{name!r} is not a domain name")
    return domain


def known_domain(state: State, name: str) -> str:
    domain = normalize_domain(name)
    if domain is None or domain not in state.directory.domains:
        raise ApiError(404, "unknown_domain", "no such domain")
    return domain


async def dns_records(state: State, domain: str) -> list[dnsrecords.Record]:
    """The records to publish for ``domain`` (a known one), its DKIM keys generated now if it
    has none yet (in a worker thread: an RSA key takes 50 ms)."""
    keys = await state.run_io(state.dkim.keys, domain)
    return dnsrecords.expected(domain, state.settings.mail_hostname, keys)


async def add_domain(state: State, name: str) -> str:
    domain = parse_domain(name)
    if domain in state.directory.domains:
        raise ApiError(409, "domain_exists", "the domain exists")
    created = now_iso()
    if not await state.run_io(state.db.add_domain, domain, created):
        raise ApiError(409, "domain_exists", "the domain exists")
    state.directory.domains[domain] = created
    log.info("domain added", domain=domain)
    return domain


async def delete_domain(state: State, name: str, force: bool) -> None:
    """Remove the domain; 409 while it has accounts or aliases unless ``force`` (which removes
    them, their mail included; 423 while a POP3 session holds one of its maildrops)."""
    domain = known_domain(state, name)
    directory = state.directory
    if domain == directory.primary:
        raise ApiError(
            409, "primary_domain", "the primary domain (the first of MAIL_DOMAINS) stays"
        )
    members = [a for a, account in directory.accounts.items() if account.domain == domain]
    aliases = [a for a, alias in directory.aliases.items() if alias.domain == domain]
    if (members or aliases) and not force:
        raise ApiError(
            409,
            "domain_not_empty",
            f"the domain has {len(members)} accounts and {len(aliases)} aliases;"
            " delete them or use ?force=true",
            accounts=len(members),
            aliases=len(aliases),
        )
    for address in members:
        await accounts.refuse_while_locked(state, address)
    for address in members:
        await accounts.remove_account(state, address)
    await state.run_io(state.db.delete_domain, domain)
    for address in aliases:
        directory.aliases.pop(address, None)
    directory.domains.pop(domain, None)
    await state.run_io(state.store.remove_domain, domain)
    log.info("domain deleted", domain=domain, accounts=len(members), aliases=len(aliases))
