"""ARC (RFC 8617) chain validation with dkimpy: the chain's cv, no trust decisions.

dkimpy validates every ARC set (each ARC-Message-Signature and ARC-Seal) from the newest down and
reports ``None`` for a chain an earlier sealer already marked failed; that is ``fail`` here too.
Keys are looked up through :func:`mailauth.dkim.key_lookup` (the shared resolver); a temporary
DNS failure cannot be told apart in RFC 8617's cv, so it is ``fail`` with ``temporary`` set.
A chain longer than RFC 8617's 50 instances fails without any verification.
"""

from __future__ import annotations

import dkim

from mailauth.dkim import key_lookup
from mailauth.dns import Resolver, TemporaryError, run_in_thread
from mailauth.headers import has_field
from mailauth.verdicts import ArcResult

__all__ = ["ArcResult", "verify_arc"]

MAX_INSTANCES = 50  # RFC 8617 4.2.1
ARC_FIELDS = frozenset({b"arc-seal", b"arc-message-signature", b"arc-authentication-results"})


def _verify(message: bytes, min_rsa_bits: int) -> ArcResult:
    try:
        verifier = dkim.ARC(message, minkey=min_rsa_bits)
        instances = int(verifier.sorted_arc_headers()[0])
    except Exception as exc:  # headers dkimpy cannot parse
        if b"arc-seal" not in message.lower():
            return ArcResult("none", 0, "message not parseable, no ARC-Seal")
        return ArcResult("fail", 0, f"message not parseable: {exc}")
    if instances == 0:
        return ArcResult("none", 0, "no ARC sets")
    if instances > MAX_INSTANCES:
        return ArcResult("fail", instances, f"i={instances} is over {MAX_INSTANCES}")
    try:
        cv, _sets, reason = verifier.verify(dnsfunc=key_lookup)
    except TemporaryError as exc:
        return ArcResult("fail", instances, f"key lookup: {exc}", temporary=True)
    except Exception as exc:  # dkimpy on hostile input
        return ArcResult("fail", instances, f"{type(exc).__name__}: {exc}")
    result = {dkim.CV_Pass: "pass", dkim.CV_None: "none"}.get(cv, "fail")
    return ArcResult(result, instances, str(reason))


async def verify_arc(resolver: Resolver, message: bytes, *, min_rsa_bits: int = 1024) -> ArcResult:
    """The ARC chain's validation status (cv) of ``message``; never raises for its content. A
    message with no ARC field at all is ``none`` without a trip to a worker thread."""
    if not has_field(message, ARC_FIELDS):
        return ArcResult("none", 0, "no ARC sets")
    return await run_in_thread(resolver, lambda: _verify(message, min_rsa_bits))
