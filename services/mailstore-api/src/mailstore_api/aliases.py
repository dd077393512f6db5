"""Aliases: an address (or a catch-all ``@domain``) that delivers to local accounts or to other
aliases. A loop, or a target that is neither an account nor an alias, is refused at creation."""

from __future__ import annotations

from mailcommon.addresses import account_address, normalize_domain
from mailcommon.logging import get_logger

from mailstore_api import accounts
from mailstore_api.db import AliasRow
from mailstore_api.errors import ApiError
from mailstore_api.state import State, now_iso

log = get_logger(__name__)
MAX_TARGETS = 100


def parse_alias(state: State, name: str) -> str:
    """The canonical form of an alias address: ``local@domain`` or ``@domain`` (catch-all)."""
    if name.startswith("@"):
        domain = normalize_domain(name[1:])
        address = None if domain is None else "@" + domain
    else:
        address = account_address(name, state.directory.primary)
    if address is None:
        raise ApiError(
            422, "invalid_alias", "an alias is local@domain, a bare name, or @domain (catch-all)"
        )
    return address


def known_alias(state: State, name: str) -> str:
    address = parse_alias(state, name)
    if address not in state.directory.aliases:
        raise ApiError(404, "unknown_alias", "no such alias")
    return address


def _targets(state: State, alias: str, given: list[str]) -> tuple[str, ...]:
    directory = state.directory
    if not 0 < len(given) <= MAX_TARGETS:
        raise ApiError(422, "invalid_targets", f"an alias has 1 to {MAX_TARGETS} targets")
    targets: dict[str, None] = {}
    for name in given:
        target = account_address(name, directory.primary)
        if target is None:
            raise ApiError(
                422, "invalid_target", f"{name!r}: a target is an account or an alias address"
            )
        if target == alias:
            raise ApiError(422, "alias_loop", f"{alias} cannot deliver to itself", target=target)
        if target not in directory.accounts and target not in directory.aliases:
            raise ApiError(
                422, "unknown_target", f"{target} is neither an account nor an alias", target=target
            )
        if directory.reaches(target, alias):
            raise ApiError(
                422, "alias_loop", f"{target} leads back to {alias}: a loop", target=target
            )
        targets[target] = None
    return tuple(targets)


async def create_alias(state: State, name: str, targets: list[str]) -> AliasRow:
    address = parse_alias(state, name)
    domain = accounts.check_new_address(state, address, alias=True)
    row = AliasRow(address, domain, _targets(state, address, targets), now_iso())
    if not await state.run_io(state.db.create_alias, row):
        raise ApiError(409, "alias_exists", "the alias exists")
    state.directory.aliases[address] = row
    log.info("alias created", alias=address, targets=list(row.targets))
    return row


async def delete_alias(state: State, name: str) -> None:
    address = known_alias(state, name)
    await state.run_io(state.db.delete_alias, address)
    state.directory.aliases.pop(address, None)
    log.info("alias deleted", alias=address)
