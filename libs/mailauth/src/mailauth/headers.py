"""The header block of a message: where it ends, its fields, and the RFC5322.From domain."""

from __future__ import annotations

import email.errors
import email.parser
import email.policy
import re
from collections.abc import Iterator

from mailauth.domains import ascii_domain

# The empty line that ends the header block (RFC 5322 2.1), CRLF or bare LF.
_EMPTY_LINE = re.compile(rb"^\r?$", re.MULTILINE)
_LINE = re.compile(rb"[^\n]*\n|[^\n]+")


def split_header_block(message: bytes) -> tuple[bytes, bytes]:
    """``(header block, rest)``: ``rest`` starts with the empty line; a message without one is
    all header block."""
    end = _EMPTY_LINE.search(message)
    if end is None or end.start() == len(message):
        return message, b""
    return message[: end.start()], message[end.start() :]


def header_fields(block: bytes) -> Iterator[bytes]:
    """Each field of ``block`` as it stands, its continuation lines and line ends included."""
    field = b""
    for line in _LINE.findall(block):
        if field and line[:1] not in (b" ", b"\t"):
            yield field
            field = b""
        field += line
    if field:
        yield field


def field_name(field: bytes) -> bytes:
    """The field's name, lower-cased (``b""`` for a line that is no field)."""
    name, colon, _ = field.partition(b":")
    return name.rstrip(b" \t").lower() if colon else b""


def has_field(message: bytes, names: frozenset[bytes]) -> bool:
    """Whether the header block has a field of one of ``names`` (lower-case)."""
    block, _ = split_header_block(message)
    return any(field_name(field) in names for field in header_fields(block))


# The From field as most senders write it, on one line in ASCII: ``Name <local@domain>``,
# ``"Name" <local@domain>``, ``<local@domain>`` or ``local@domain``, with dot-atoms only (no
# comments, groups, quoted local parts or obsolete forms). Read by this pattern it costs about
# 1 µs; through the email package's parser 270 µs (measured: bench/RESULTS.md, "Sender
# checks"), a fifth of smtp-in's own CPU for the checks. Anything else goes to that parser, and
# tests/test_headers.py checks the two agree on every field the pattern takes.
_ATEXT = rb"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_DOT_ATOM = _ATEXT + rb"+(?:\." + _ATEXT + rb"+)*"
_ADDRESS = _DOT_ATOM + rb"@(" + _DOT_ATOM + rb")"
_PHRASE = rb"(?:" + _ATEXT + rb"+(?:[ \t]+" + _ATEXT + rb"+)*|\"[ !#-\[\]-~]*\")"
_NAME_ADDR = rb"(?:" + _PHRASE + rb"[ \t]*)?<" + _ADDRESS + rb">"
SIMPLE_FROM = re.compile(rb"[ \t]*(?:" + _NAME_ADDR + rb"|" + _ADDRESS + rb")[ \t]*(?:\r?\n)?")


def header_from_domain(message: bytes) -> str | None:
    """The RFC5322.From domain, as an A-label; ``None`` unless the header block has exactly one
    From field with exactly one well-formed address whose domain is a domain name.

    Only the header block is parsed; it is decoded as UTF-8 (RFC 6532), so SMTPUTF8 domains
    become A-labels, and bytes that are not UTF-8 make the address unusable.
    """
    block, _ = split_header_block(message)
    from_fields = [field for field in header_fields(block) if field_name(field) == b"from"]
    if len(from_fields) != 1:
        return None
    value = from_fields[0].partition(b":")[2]
    # "=?" may start an RFC 2047 encoded word, which the parser decodes even inside an address
    # (as some mail readers show it): such a field is the parser's to read.
    simple = SIMPLE_FROM.fullmatch(value) if b"=?" not in value else None
    if simple is not None:
        return ascii_domain((simple[1] or simple[2]).decode("ascii"))
    return parsed_from_domain(from_fields[0])


def parsed_from_domain(field: bytes) -> str | None:
    """:func:`header_from_domain` of one From field, read by the email package's parser."""
    text = field.decode("utf-8", errors="replace")
    parsed = email.parser.HeaderParser(policy=email.policy.default).parsestr(text + "\n")
    header = parsed["From"]
    if header is None or len(header.addresses) != 1:
        return None
    if any(not isinstance(d, email.errors.ObsoleteHeaderDefect) for d in header.defects):
        return None
    domain = header.addresses[0].domain
    if "\ufffd" in domain or domain.startswith("["):  # not UTF-8; an address literal
        return None
    return ascii_domain(domain)


def header_from_addresses(message: bytes) -> list[str] | None:
    """Every address of the message's From field (``local@domain`` as written, RFC 6532 UTF-8
    decoded); ``None`` unless the header block has exactly one From field, every mailbox in it
    parses without a defect beyond the obsolete syntax, and it names at least one."""
    block, _ = split_header_block(message)
    from_fields = [field for field in header_fields(block) if field_name(field) == b"from"]
    if len(from_fields) != 1:
        return None
    text = from_fields[0].decode("utf-8", errors="replace")
    parsed = email.parser.HeaderParser(policy=email.policy.default).parsestr(text + "\n")
    header = parsed["From"]
    if header is None or not header.addresses:
        return None
    if any(not isinstance(d, email.errors.ObsoleteHeaderDefect) for d in header.defects):
        return None
    addresses = [address.addr_spec for address in header.addresses]
    if any("\ufffd" in a or not a.partition("@")[2] for a in addresses):
        return None
    return addresses
