"""Authentication-Results: what we write, that it reads back, that it cannot be subverted, and
the removal of forged fields."""

from __future__ import annotations

import email.parser
import email.policy
import re

import authres
import authres.dmarc
import pytest
from mailauth.dmarc import DmarcResult
from mailauth.results import authentication_results, parse_our_results, remove_our_results
from mailauth.verdicts import ArcResult, DkimResult, SpfResult

ID = "mx.example.net"
SPF = SpfResult("pass", "mailfrom", "b.example", "a@b.example", "")
SIGNATURE = DkimResult("pass", "b.example", "sel", "rsa-sha256", "AbCdEfGhIjKl", "")
ARC = ArcResult("pass", 1, "")
DMARC = DmarcResult("pass", "b.example", "reject", "none", "spf,dkim", "aligned by spf,dkim")
BODY = b"Subject: hello\r\n\r\nbody\r\nAuthentication-Results: mx.example.net; spf=pass\r\n"


def header(
    spf: SpfResult | None = SPF,
    dkim: tuple[DkimResult, ...] = (SIGNATURE,),
    arc: ArcResult | None = ARC,
    dmarc: DmarcResult | None = DMARC,
) -> bytes:
    return authentication_results(ID, spf=spf, dkim=list(dkim), arc=arc, dmarc=dmarc)


def assert_well_formed(field: bytes, limit: int = 78) -> None:
    """CRLF lines within ``limit``, continuations indented, ASCII, one field when parsed."""
    assert field.endswith(b"\r\n")
    lines = field[:-2].split(b"\r\n")
    assert all(b"\r" not in line and b"\n" not in line for line in lines)
    assert all(line[:1] in (b" ", b"\t") and line.strip() for line in lines[1:])
    assert all(len(line) <= limit for line in lines), [len(line) for line in lines]
    assert field.isascii()
    message = email.parser.BytesParser(policy=email.policy.default).parsebytes(field + BODY)
    assert message.keys() == ["Authentication-Results", "Subject"]
    assert message.get_payload() == "body\r\nAuthentication-Results: mx.example.net; spf=pass\r\n"


def test_the_field_as_written() -> None:
    assert header() == (
        b"Authentication-Results: mx.example.net;\r\n"
        b"\tspf=pass smtp.mailfrom=a@b.example;\r\n"
        b"\tdkim=pass header.d=b.example header.s=sel header.a=rsa-sha256\r\n"
        b" header.b=AbCdEfGhIjKl;\r\n"
        b"\tarc=pass;\r\n"
        b"\tdmarc=pass (p=reject dis=none) header.from=b.example policy.dmarc=reject\r\n"
    )
    assert_well_formed(header())


def test_unsigned_is_dkim_none_and_absent_checks_are_left_out() -> None:
    field = header(spf=None, dkim=(), arc=None, dmarc=None)
    assert field == b"Authentication-Results: mx.example.net;\r\n\tdkim=none\r\n"


def test_failures_carry_their_reasons() -> None:
    failed = DkimResult("fail", "b.example", "sel", "ed25519-sha256", "x", "body hash mismatch")
    dmarc = DmarcResult("fail", "b.example", "reject", "quarantine", "", "not aligned; pct=50")
    field = header(dkim=(failed,), dmarc=dmarc)
    unfolded = field.replace(b"\r\n", b"")
    assert b'dkim=fail reason="body hash mismatch" header.d=b.example' in unfolded
    assert b'dmarc=fail (p=reject dis=quarantine) reason="not aligned; pct=50"' in unfolded
    assert_well_formed(field)


@pytest.mark.parametrize(
    ("spf", "dkim", "arc", "dmarc", "expected"),
    [
        (
            SPF,
            (SIGNATURE, DkimResult("fail", "list.example", "s2", "rsa-sha256", "zz", "bad")),
            ARC,
            DmarcResult("fail", "b.example", "quarantine", "none", "", "pct"),
            {
                "spf": "pass",
                "dkim": [
                    {"result": "pass", "domain": "b.example", "selector": "sel"},
                    {"result": "fail", "domain": "list.example", "selector": "s2"},
                ],
                "arc": "pass",
                "dmarc": "fail",
                "dmarc_policy": "quarantine",
            },
        ),
        (
            SpfResult("temperror", "helo", "mx.b.example", "mx.b.example", ""),
            (),
            None,
            DmarcResult("permerror", "", "", "none", "", "no single RFC5322.From domain"),
            {
                "spf": "temperror",
                "dkim": [],
                "arc": None,
                "dmarc": "permerror",
                "dmarc_policy": None,
            },
        ),
        (
            None,
            (DkimResult("pass", "b.example", "sel with space", "rsa-sha256", "a/b=c", ""),),
            ArcResult("fail", 2, "i=2 seal broken"),
            None,
            {
                "spf": None,
                "dkim": [{"result": "pass", "domain": "b.example", "selector": "sel with space"}],
                "arc": "fail",
                "dmarc": None,
                "dmarc_policy": None,
            },
        ),
    ],
)
def test_round_trip(
    spf: SpfResult | None,
    dkim: tuple[DkimResult, ...],
    arc: ArcResult | None,
    dmarc: DmarcResult | None,
    expected: dict[str, object],
) -> None:
    field = header(spf, dkim, arc, dmarc)
    assert_well_formed(field)
    assert parse_our_results(field + BODY, ID) == expected
    assert parse_our_results(field, ID.upper()) == expected  # a header block alone


def properties(field: bytes) -> list[dict[str, str]]:
    parsed = authres.FeatureContext(authres.dmarc).parse(
        field.replace(b"\r\n", b"").decode("ascii")
    )
    return [{f"{p.type}.{p.name}": p.value for p in r.properties} for r in parsed.results]


def test_identities_read_back_exactly() -> None:
    spf = SpfResult("pass", "mailfrom", "b.example", '"john;doe"@B.Example', "")
    field = header(spf=spf, arc=None)
    assert b'smtp.mailfrom="john;doe"@b.example' in field
    assert properties(field)[0] == {"smtp.mailfrom": '"john;doe"@b.example'}
    helo = SpfResult("pass", "helo", "mx.b.example", "[192.0.2.1]", "")
    assert properties(header(spf=helo))[0] == {"smtp.helo": "[192.0.2.1]"}


HOSTILE = [
    'quote"d',
    "semi;colon",
    "evil\r\nX-Injected: 1",
    "evil\nX-Injected: 1\n\nbody",
    "back\\slash)",
    "(comment",
    "j\u00f6rg\u00e9",  # SMTPUTF8
    "nul\x00tab\tdel\x7f",
    "a" * 2000,
    "spaces " * 40,
]


@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_values_cannot_break_the_field(hostile: str) -> None:
    field = authentication_results(
        ID,
        spf=SpfResult("fail", "mailfrom", hostile, f"{hostile}@{hostile}", hostile),
        dkim=[DkimResult("fail", hostile, hostile, hostile, hostile, hostile)],
        arc=ArcResult("fail", 1, hostile),
        dmarc=DmarcResult("fail", "b.example", "reject", "reject", "", hostile),
    )
    assert_well_formed(field, limit=998)  # a hostile value with no spaces stays on one line
    assert b"\r\nX-Injected" not in field
    verdicts = parse_our_results(field + BODY, ID)
    assert (verdicts["spf"], verdicts["arc"], verdicts["dmarc"]) == ("fail", "fail", "fail")
    assert [s["result"] for s in verdicts["dkim"]] == ["fail"]
    helo = SpfResult("pass", "helo", hostile, hostile, "")
    assert parse_our_results(header(spf=helo), ID)["spf"] == "pass"


def test_an_smtputf8_local_part_is_reported_by_its_domain() -> None:
    spf = SpfResult("pass", "mailfrom", "b\u00fccher.example", "j\u00f6rg@b\u00fccher.example", "")
    field = header(spf=spf)
    assert b"smtp.mailfrom=xn--bcher-kva.example;" in field


def test_long_values_fold_under_78() -> None:
    label = "x" * 25
    signature = DkimResult(
        "temperror",
        f"{label}.{label}.example",
        f"s{label}",
        "rsa-sha256",
        "AbCdEfGhIjKl",
        "key query timed out " * 6,
    )
    dmarc = DmarcResult("temperror", f"{label}.{label}.example", "", "none", "", "slow " * 30)
    field = header(dkim=(signature, signature), dmarc=dmarc)
    assert_well_formed(field)
    assert len(field.split(b"\r\n")) > 10
    assert properties(field)[1]["header.d"] == f"{label}.{label}.example"
    assert properties(field)[-1]["header.from"] == f"{label}.{label}.example"
    parsed = authres.FeatureContext(authres.dmarc).parse(field.replace(b"\r\n", b"").decode())
    assert parsed.results[1].reason == "key query timed out " * 6  # spaces kept by unfolding


def test_the_authserv_id_must_be_a_dot_atom() -> None:
    with pytest.raises(ValueError, match="dot-atom"):
        authentication_results("mx example", spf=None, dkim=[], arc=None, dmarc=None)


FORGED = [
    b"Authentication-Results: mx.example.net; spf=pass smtp.mailfrom=x@y.example\r\n",
    b"authentication-results: MX.Example.NET; dkim=pass header.d=y.example\r\n",
    b"Authentication-Results: (hi) MX.example.net ; dmarc=pass\r\n",
    b"Authentication-Results:\r\n\t(nested (comment \\) here)) mx.example.net;\r\n\tdmarc=pass\r\n",
    b'Authentication-Results: "mx.example.net"; spf=pass\r\n',
    b"Authentication-Results : mx.example.net; spf=pass\r\n",
    b"Authentication-Results: mx.example.net;spf=pass\r\n",
    b"Authentication-Results: mx.example.net 1; spf=pass\r\n",
    b"Authentication-Results: mx.example.net; ((( not parsable\r\n",
]
OTHERS = [
    b"Authentication-Results: other.example; spf=fail smtp.mailfrom=x@y.example\r\n",
    b"Authentication-Results: mx.example.net.evil; spf=pass\r\n",
    b"Authentication-Results: (mx.example.net) other.example;\r\n dkim=pass\r\n",
    b"ARC-Authentication-Results: i=1; mx.example.net; spf=pass\r\n",
    b"X-Authentication-Results: mx.example.net; spf=pass\r\n",
    b"Received: from a by mx.example.net; Tue, 1 Dec 2026 10:00:00 +0000\r\n",
]


@pytest.mark.parametrize("line_end", [b"\r\n", b"\n"])
def test_forged_fields_with_our_id_are_removed_and_nothing_else(line_end: bytes) -> None:
    fields = [field for pair in zip(OTHERS, FORGED, strict=False) for field in pair]
    fields += FORGED[len(OTHERS) :]
    message = b"".join(fields) + b"From: a@b.example\r\n" + BODY
    expected = b"".join(OTHERS) + b"From: a@b.example\r\n" + BODY
    message, expected = (m.replace(b"\r\n", line_end) for m in (message, expected))
    assert remove_our_results(message, ID) == expected
    assert remove_our_results(expected, ID) == expected


def test_fields_only_we_write_are_removed_by_name() -> None:
    message = (
        b"X-Spam: No\r\nx-spam-score :  -100\r\n  folded\r\nX-Spam-Flag: NO\r\nSubject: x\r\n"
        + BODY
    )
    owned = {b"x-spam", b"x-spam-score"}
    assert remove_our_results(message, ID, owned) == b"X-Spam-Flag: NO\r\nSubject: x\r\n" + BODY


def test_removal_is_bounded_to_the_header_block() -> None:
    body = b"\r\n" + FORGED[0] * 3 + b"\xff\xfe binary\r\n"
    assert remove_our_results(b"Subject: x\r\n" + FORGED[0] + body, ID) == b"Subject: x\r\n" + body


def test_parse_reads_our_topmost_field_only() -> None:
    ours = header(dmarc=DmarcResult("fail", "b.example", "reject", "reject", "", "x"))
    older = header()  # ours too, but further down: an earlier hop's or an unremoved forgery
    theirs = b"Authentication-Results: other.example; dmarc=pass header.from=b.example\r\n"
    verdicts = parse_our_results(theirs + ours + older + BODY, ID)
    assert (verdicts["dmarc"], verdicts["dmarc_policy"]) == ("fail", "reject")


def test_parse_without_our_field_knows_nothing() -> None:
    nothing: dict[str, object] = {
        "spf": None,
        "dkim": [],
        "arc": None,
        "dmarc": None,
        "dmarc_policy": None,
    }
    assert parse_our_results(b"Authentication-Results: other.example; spf=pass\r\n", ID) == nothing
    assert parse_our_results(FORGED[-1] + BODY, ID) == nothing  # ours, but not parsable
    assert parse_our_results(b"Subject: x\r\n\r\n" + header(), ID) == nothing  # in the body


def test_remove_then_write_then_read() -> None:
    forged = b"Authentication-Results: mx.example.net; dmarc=pass policy.dmarc=none\r\n"
    message = remove_our_results(forged + b"From: a@b.example\r\n" + BODY, ID)
    dmarc = DmarcResult("fail", "b.example", "reject", "reject", "", "not aligned")
    stamped = header(dmarc=dmarc) + message
    assert parse_our_results(stamped, ID)["dmarc"] == "fail"
    assert len(re.findall(rb"(?m)^Authentication-Results:", stamped.split(b"\r\n\r\n")[0])) == 1
