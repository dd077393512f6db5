"""The address directory in memory: domains, accounts, aliases, and how an address resolves.

The mailstore is the only writer of the accounts database, so it keeps what every RCPT and login
asks about here, loaded once at start-up and changed with the database (:mod:`domains`,
:mod:`accounts`, :mod:`aliases`): an RCPT is answered from dictionaries, with no query.

How ``local@domain`` (any case, with or without a ``+tag``) resolves, first match wins:

1. an alias of exactly that address: its targets, expanded (an alias may name aliases);
2. the account of that address;
3. ``postmaster`` and ``abuse`` (RFC 5321 4.5.1, RFC 2142): the postmaster account,
   ``POSTMASTER_ADDRESS`` or, when unset or gone, the first account created;
4. the domain's catch-all alias ``@domain``, expanded;
5. nobody.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from mailcommon.addresses import account_address, base_local_part, normalize_domain, split_address

from mailstore_api.db import AccountRow, AliasRow, Database

#: Local parts that always reach someone (RFC 5321 4.5.1, RFC 2142).
ROLE_ADDRESSES = ("postmaster", "abuse")


class UnknownDomain(Exception):
    """The address's domain is not one of ours."""


class UnknownAddress(Exception):
    """Nobody receives mail at the address."""


class NoPostmaster(Exception):
    """postmaster@ or abuse@ with no account at all to deliver to."""


@dataclass
class Account:
    """What the directory knows of an account (the password hash stays in the database)."""

    address: str
    domain: str
    created_at: str
    quota_bytes: int | None
    quota_messages: int | None

    @classmethod
    def of(cls, row: AccountRow) -> Account:
        return cls(row.address, row.domain, row.created_at, row.quota_bytes, row.quota_messages)


@dataclass
class Directory:
    """Domains, accounts (in the order created) and aliases, with :meth:`resolve`."""

    primary: str
    postmaster_setting: str | None = None  # POSTMASTER_ADDRESS, canonical
    domains: dict[str, str] = field(default_factory=dict)  # name -> created_at
    accounts: dict[str, Account] = field(default_factory=dict)
    aliases: dict[str, AliasRow] = field(default_factory=dict)

    def load(self, db: Database) -> None:
        self.domains = {row.name: row.created_at for row in db.domains()}
        self.accounts = {row.address: Account.of(row) for row in db.accounts()}
        self.aliases = {row.address: row for row in db.aliases()}

    def account_of(self, name: str) -> str | None:
        """The address of the existing account ``name`` (a bare name is in the primary domain)."""
        address = account_address(name, self.primary)
        return address if address is not None and address in self.accounts else None

    def postmaster(self) -> str | None:
        """Where postmaster@ and abuse@ go when no alias says otherwise."""
        if self.postmaster_setting in self.accounts:
            return self.postmaster_setting
        return next(iter(self.accounts), None)

    def resolve(self, address: str) -> tuple[str, list[str]]:
        """``address`` in canonical form (no ``+tag``, lower case, A-labels) and the accounts mail
        to it is stored for; raises :class:`UnknownDomain`, :class:`UnknownAddress` or
        :class:`NoPostmaster`."""
        parts = split_address(address)
        if parts is None:
            raise UnknownAddress(address)
        local, given_domain = parts
        domain = normalize_domain(given_domain)
        if domain is None or domain not in self.domains:
            raise UnknownDomain(given_domain)
        base = base_local_part(local)
        if base is None:
            raise UnknownAddress(address)
        exact = f"{base}@{domain}"
        if exact in self.aliases:
            accounts = self.expand(exact)
        elif exact in self.accounts:
            accounts = [exact]
        elif base in ROLE_ADDRESSES:
            postmaster = self.postmaster()
            if postmaster is None:
                raise NoPostmaster(address)
            accounts = [postmaster]
        else:
            accounts = self.expand("@" + domain)
        if not accounts:
            raise UnknownAddress(address)
        return exact, accounts

    def _walk(self, start: str) -> Iterator[str]:
        """``start`` and every name its aliases lead to, each once, depth first in the order of
        the targets (loops end where a name comes round again)."""
        seen: set[str] = set()
        pending = [start]
        while pending:
            name = pending.pop()
            if name in seen:
                continue
            seen.add(name)
            yield name
            row = self.aliases.get(name)
            if row is not None:
                pending.extend(reversed(row.targets))

    def expand(self, alias: str) -> list[str]:
        """The accounts an alias delivers to, each once, in the order of its targets; targets
        that no longer exist are skipped (an unknown name expands to nothing)."""
        return [name for name in self._walk(alias) if name in self.accounts]

    def reaches(self, start: str, goal: str) -> bool:
        """Whether ``start`` is ``goal`` or leads to it through aliases."""
        return any(name == goal for name in self._walk(start))

    def sender_addresses(self, account: str) -> list[str]:
        """The addresses ``account`` may send as: its own, then every alias (not a catch-all
        ``@domain``) that delivers to it, directly or through other aliases, sorted."""
        if account not in self.accounts:
            return []
        aliases = sorted(
            name
            for name in self.aliases
            if not name.startswith("@") and account in self.expand(name)
        )
        return [account, *aliases]

    def domain_counts(self) -> dict[str, tuple[int, int]]:
        """Per domain: (accounts, aliases)."""
        counts = {name: [0, 0] for name in self.domains}
        for account in self.accounts.values():
            counts.setdefault(account.domain, [0, 0])[0] += 1
        for alias in self.aliases.values():
            counts.setdefault(alias.domain, [0, 0])[1] += 1
        return {name: (a, b) for name, (a, b) in counts.items()}
