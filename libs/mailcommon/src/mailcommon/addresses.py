"""Mail addresses as the whole system reads them: domains in IDNA 2008 A-labels, accounts as
``local@domain``, a bare name meaning the primary domain (the first of ``MAIL_DOMAINS``).

Local parts follow :data:`mailcommon.names.USERNAME_RULE` (ASCII only: UTF-8 local parts of
SMTPUTF8 are not accepted, see docs/architecture.md); they are compared lower-cased.
"""

from __future__ import annotations

import re

import idna

from mailcommon.names import is_valid_username

MAX_DOMAIN_LENGTH = 253
_LABEL_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
# The +tag after a local part: RFC 5322 atext and dots, but never '%', '!' or '@'.
_TAG_RE = re.compile(r"[A-Za-z0-9#$&'*+/=?^_`{|}~.-]*")


def normalize_domain(domain: str) -> str | None:
    """``domain`` as lower-case A-labels without a trailing dot, or None when it is not a name.

    Internationalised names are converted by IDNA 2008 with the UTS 46 mapping (``straße.de`` is
    ``xn--strae-oqa.de``; the stdlib codec's IDNA 2003 would make it ``strasse.de``), and so are
    A-labels (``xn--``), which must decode. Plain ASCII names skip the ``idna`` package (16 µs a
    call, measured): they are only lower-cased and checked. Address literals (``[192.0.2.1]``)
    are not names and give None.
    """
    name = domain.strip().rstrip(".")
    if not name or name.startswith("["):
        return None
    if name.isascii() and "xn--" not in name.lower():
        ascii_name = name.lower()
    else:
        try:
            ascii_name = idna.encode(name, uts46=True).decode("ascii")
        except UnicodeError:  # idna.IDNAError
            return None
    if len(ascii_name) > MAX_DOMAIN_LENGTH:
        return None
    if not all(_LABEL_RE.fullmatch(label) for label in ascii_name.split(".")):
        return None
    return ascii_name


def unicode_domain(domain: str) -> str:
    """The U-label form of an A-label domain (``xn--strae-oqa.de`` → ``straße.de``)."""
    if "xn--" not in domain:
        return domain
    try:
        return idna.decode(domain)
    except UnicodeError:  # idna.IDNAError: not ours to fix here, show it as stored
        return domain


def split_address(address: str) -> tuple[str, str] | None:
    """``(local part, domain)`` of ``local@domain`` (the last ``@`` separates them), else None."""
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain:
        return None
    return local, domain


def base_local_part(local: str) -> str | None:
    """The local part without its ``+tag``, lower-cased (``Bob+news`` → ``bob``), or None when
    it cannot be an account's or alias's (the name rule; a tag of atext and dots only)."""
    base, plus, tag = local.lower().partition("+")
    if not is_valid_username(base) or (plus and not _TAG_RE.fullmatch(tag)):
        return None
    return base


def account_address(name: str, primary_domain: str) -> str | None:
    """The canonical ``local@domain`` of an account name as a user, an operator or a client
    gives it (``Bob``, ``bob@Example.org``, ``bob@straße.de``), or None when it cannot be one.

    A bare name is in ``primary_domain``. The local part is lower-cased and must follow the
    user name rule; the domain is normalised (:func:`normalize_domain`).
    """
    local, at, domain = name.rpartition("@")
    if not at:
        local, domain = name, primary_domain
    local = local.lower()
    if not is_valid_username(local):
        return None
    canonical = normalize_domain(domain)
    if canonical is None:
        return None
    return f"{local}@{canonical}"
