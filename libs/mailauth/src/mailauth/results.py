"""The Authentication-Results header field (RFC 8601): writing ours, removing forged ones, and
reading our verdicts back.

Reading uses ``authres``. Its parser (1.2.0) reads a quoted-string ``pvalue`` only when it ends
its resinfo (a quoted ``header.d="a b"`` followed by ``header.s=x`` is dropped), so the
properties that need quoting are written last, the most important of them at the end; and it
reads ASCII only, so what we write is ASCII. Removal does not use it: a forged field must go
whatever follows its authserv-id, and ``authres`` rejects the whole field for any error after it.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterator
from typing import Any

import authres
import authres.arc
import authres.dmarc

from mailauth.dmarc import DmarcResult
from mailauth.domains import ascii_domain
from mailauth.headers import field_name, header_fields, split_header_block
from mailauth.verdicts import ArcResult, DkimResult, SpfResult

FIELD_NAME = "Authentication-Results"
LINE_LIMIT = 78  # RFC 5322 2.1.1, CRLF excluded
# A longer value is hostile (an SMTP path is at most 256 octets, RFC 5321 4.5.3.1.3): cut, so
# that no line nears RFC 5322's hard limit of 998.
_MAX_VALUE = 320
_TOKEN = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`{|}~-]+")  # RFC 2045 token: no tspecials
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_DOT_ATOM = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*")  # RFC 5322 3.2.3
_PRINTABLE_QUOTED_STRING = re.compile(r'"(?:[ !#-\[\]-~]|\\[ -~])*"')
_FEATURES = authres.FeatureContext(authres.dmarc, authres.arc)


def _quoted(text: str) -> str:
    """An RFC 2045 quoted-string of ``text``: what is not printable ASCII (CR, LF, controls,
    UTF-8 that authres cannot read) becomes ``?``; ``"`` and ``\\`` are quoted-pairs."""
    printable = "".join(c if " " <= c <= "~" else "?" for c in text[:_MAX_VALUE])
    return '"' + re.sub(r'(["\\])', r"\\\1", printable) + '"'


def _value(text: str) -> str:
    """An RFC 2045 ``value``: the token as it is, anything else quoted."""
    return text if _TOKEN.fullmatch(text) and len(text) <= _MAX_VALUE else _quoted(text)


def _address(address: str) -> str:
    """An RFC 8601 ``pvalue`` for an address: ``local-part@domain`` with the domain as A-labels
    (RFC 8616); a local-part that is not ASCII (SMTPUTF8) is left out, the domain alone being
    a ``pvalue`` too and what DMARC evaluates."""
    local, at, domain = address.rpartition("@")
    normal = ascii_domain(domain) if at else None
    if normal is None or not _TOKEN.fullmatch(normal) or len(address) > _MAX_VALUE:
        return _value(address)
    if not local.isascii():
        return normal
    if _DOT_ATOM.fullmatch(local) or _PRINTABLE_QUOTED_STRING.fullmatch(local):
        return f"{local}@{normal}"  # as SMTP gave it (RFC 5321 4.1.2: dot-string / quoted-string)
    return f"{_quoted(local)}@{normal}"


def _clause(
    method: str,
    result: str,
    properties: list[tuple[str, str]],
    *,
    reason: str = "",
    comment: str = "",
) -> list[str]:
    """One resinfo as its words; ``properties`` most important first, the quoted ones written
    last (see above)."""
    words = [f"{method}={_value(result)}"]
    if comment:
        words.append(comment)
    if reason:
        words.append(f"reason={_quoted(reason)}")
    plain = [f"{name}={value}" for name, value in properties if not value.startswith('"')]
    quoted = [f"{name}={value}" for name, value in properties if value.startswith('"')]
    return words + plain + quoted[::-1]  # authres keeps the last quoted one: the first listed


def _spf_clause(spf: SpfResult) -> list[str]:
    if spf.scope == "helo":
        return _clause("spf", spf.result, [("smtp.helo", _value(spf.identity))])
    return _clause("spf", spf.result, [("smtp.mailfrom", _address(spf.identity or spf.domain))])


def _dkim_clause(signature: DkimResult) -> list[str]:
    properties = [
        ("header.d", _value(ascii_domain(signature.domain) or signature.domain)),
        ("header.s", _value(signature.selector)),
        ("header.a", _value(signature.algorithm)),
        ("header.b", _value(signature.header_b)),
    ]
    reason = signature.reason if signature.result != "pass" else ""
    return _clause("dkim", signature.result, properties, reason=reason)


def _arc_clause(arc: ArcResult) -> list[str]:
    return _clause("arc", arc.result, [], reason=arc.reason if arc.result != "pass" else "")


def _dmarc_clause(dmarc: DmarcResult) -> list[str]:
    comment = f"(p={dmarc.policy} dis={dmarc.disposition})" if dmarc.policy else ""
    properties = [("header.from", _value(dmarc.from_domain))] if dmarc.from_domain else []
    if dmarc.policy:
        properties.append(("policy.dmarc", dmarc.policy))  # authres' and authheaders' property
    reason = dmarc.reason if dmarc.result != "pass" else ""
    return _clause("dmarc", dmarc.result, properties, reason=reason, comment=comment)


def _fold(first: str, clauses: list[list[str]]) -> Iterator[str]:
    """The lines of the field: each resinfo begins a line (after a tab) and wraps at its spaces.
    A wrap puts CRLF before a space, so unfolding gives back the very text, quoted-strings and
    comments included (RFC 5322 2.2.3); no line is whitespace only (3.2.2)."""
    line = first
    for index, words in enumerate(clauses):
        yield line
        separator = ";" if index < len(clauses) - 1 else ""
        pieces = (" ".join(words) + separator).split(" ")
        line = "\t" + pieces[0]
        for piece in pieces[1:]:
            if len(line) + 1 + len(piece) > LINE_LIMIT and line.strip():
                yield line
                line = ""
            line += " " + piece
    yield line


def authentication_results(
    authserv_id: str,
    *,
    spf: SpfResult | None,
    dkim: list[DkimResult],
    arc: ArcResult | None,
    dmarc: DmarcResult | None,
) -> bytes:
    """The whole field, folded, CRLF line ends and a final CRLF; ``dkim=none`` when unsigned."""
    if not _DOT_ATOM.fullmatch(authserv_id):  # authres reads an authserv-id as a dot-atom
        raise ValueError(f"authserv-id {authserv_id!r} is not a dot-atom")
    clauses = [_spf_clause(spf)] if spf is not None else []
    clauses += [_dkim_clause(s) for s in dkim] or [["dkim=none"]]
    if arc is not None:
        clauses.append(_arc_clause(arc))
    if dmarc is not None:
        clauses.append(_dmarc_clause(dmarc))
    lines = _fold(f"{FIELD_NAME}: {authserv_id};", clauses)
    return "".join(line + "\r\n" for line in lines).encode("ascii")


# The authserv-id after CFWS (RFC 8601 2.2): comments may nest and hold quoted-pairs.
_SPACE = re.compile(r"[ \t\r\n]*")
_COMMENT_PART = re.compile(r"[^()\\]+|\\.|[()]", re.DOTALL)
_QUOTED_STRING = re.compile(r'"((?:[^"\\]|\\.)*)"', re.DOTALL)
_ID_TOKEN = re.compile(r"[^\x00-\x20()<>@,;:\\\"/\[\]?=\x7f]+")  # RFC 2045 token, and UTF-8


def _skip_cfws(text: str, at: int) -> int:
    depth = 0
    while True:
        at = _SPACE.match(text, at).end()  # type: ignore[union-attr]  # it matches anything
        if depth == 0 and not text.startswith("(", at):
            return at
        part = _COMMENT_PART.match(text, at)
        if part is None:  # an unclosed comment: nothing follows
            return len(text)
        depth += {"(": 1, ")": -1}.get(part.group(), 0)
        at = part.end()


def _authserv_id(field: bytes) -> str:
    """The lower-cased authserv-id of an Authentication-Results field (``""`` if none)."""
    text = field.partition(b":")[2].decode("utf-8", errors="replace")
    at = _skip_cfws(text, 0)
    quoted = _QUOTED_STRING.match(text, at)
    if quoted:
        return re.sub(r"\\(.)", r"\1", quoted.group(1)).lower()
    token = _ID_TOKEN.match(text, at)
    return token.group().lower() if token else ""


def _ours(field: bytes, authserv_id: str) -> bool:
    return field_name(field) == b"authentication-results" and (
        _authserv_id(field) == authserv_id.lower()
    )


def remove_our_results(
    message: bytes, authserv_id: str, owned_fields: Collection[bytes] = ()
) -> bytes:
    """``message`` without the Authentication-Results fields that carry ``authserv_id`` (RFC 8601
    5: forged ones) and without any field named in ``owned_fields`` (lower-case names of fields
    only we write, such as ``x-spam``); every other field (ARC-Authentication-Results too) and the
    body byte-exact."""
    block, rest = split_header_block(message)
    kept = [
        field
        for field in header_fields(block)
        if not _ours(field, authserv_id) and field_name(field) not in owned_fields
    ]
    return b"".join(kept) + rest


def _verdicts(header: Any) -> dict[str, Any]:
    """The verdicts of a parsed ``authres`` header."""
    verdicts = _no_verdicts()
    for result in header.results:
        properties = {f"{p.type}.{p.name}": p.value for p in result.properties}
        if result.method == "dkim" and result.result != "none":
            signature = {"result": result.result, "domain": properties.get("header.d", "")}
            verdicts["dkim"].append(signature | {"selector": properties.get("header.s", "")})
        elif result.method in ("spf", "arc", "dmarc") and verdicts[result.method] is None:
            verdicts[result.method] = result.result
            if result.method == "dmarc":
                verdicts["dmarc_policy"] = properties.get("policy.dmarc")
    return verdicts


def _no_verdicts() -> dict[str, Any]:
    return {"spf": None, "dkim": [], "arc": None, "dmarc": None, "dmarc_policy": None}


def our_results_field(message_or_header_block: bytes, authserv_id: str) -> str | None:
    """Our topmost Authentication-Results field, unfolded (``None`` without one)."""
    block, _ = split_header_block(message_or_header_block)
    for field in header_fields(block):
        if _ours(field, authserv_id):
            return re.sub(rb"\r?\n", b"", field).decode("utf-8", errors="replace")
    return None


def verdicts_of_field(unfolded: str | None) -> dict[str, Any]:
    """The verdicts of an unfolded Authentication-Results field (what :func:`parse_our_results`
    returns); ``authres`` takes about 250 µs for a short one, so a caller that may never show
    them keeps the field and parses it when asked."""
    if unfolded is None:
        return _no_verdicts()
    try:
        return _verdicts(_FEATURES.parse(unfolded))
    except authres.core.AuthResError:
        return _no_verdicts()


def parse_our_results(message_or_header_block: bytes, authserv_id: str) -> dict[str, Any]:
    """The verdicts of our topmost Authentication-Results field: ``spf``, ``arc``, ``dmarc`` (a
    result or ``None``), ``dmarc_policy``, and ``dkim``, a ``{"result", "domain", "selector"}``
    per signature (``[]`` when unsigned). Nothing is known (``None``s) without such a field or
    when ``authres`` cannot parse it."""
    return verdicts_of_field(our_results_field(message_or_header_block, authserv_id))
