"""ARC (RFC 8617) chain validation with dkimpy: the chain's cv, no trust decisions.

dkimpy validates every ARC set (each ARC-Message-Signature and ARC-Seal) from the newest down and
reports ``None`` for a chain an earlier sealer already marked failed; that is ``fail`` here too.
Keys are looked up first on the event loop through the shared resolver (:mod:`mailauth.keys`)
and the chain verified in the caller's executor, as DKIM is; a temporary DNS failure cannot be
told apart in RFC 8617's cv, so it is ``fail`` with ``temporary`` set.
A chain longer than RFC 8617's 50 instances fails without any verification.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import Executor

import dkim

from mailauth.dns import Resolver, TemporaryError
from mailauth.headers import has_field
from mailauth.keys import KeyLookup, Keys, fetch_keys, key_names
from mailauth.verdicts import ArcResult

__all__ = ["ArcResult", "verify_arc"]

MAX_INSTANCES = 50  # RFC 8617 4.2.1
SIGNED_ARC_FIELDS = frozenset({b"arc-seal", b"arc-message-signature"})
ARC_FIELDS = SIGNED_ARC_FIELDS | {b"arc-authentication-results"}


def _verify(message: bytes, min_rsa_bits: int, keys: Keys) -> ArcResult:
    """The chain's verdict, CPU work only (runs in the caller's executor)."""
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
        cv, _sets, reason = verifier.verify(dnsfunc=KeyLookup(keys))
    except TemporaryError as exc:
        return ArcResult("fail", instances, f"key lookup: {exc}", temporary=True)
    except Exception as exc:  # dkimpy on hostile input
        return ArcResult("fail", instances, f"{type(exc).__name__}: {exc}")
    result = {dkim.CV_Pass: "pass", dkim.CV_None: "none"}.get(cv, "fail")
    return ArcResult(result, instances, str(reason))


async def verify_arc(
    resolver: Resolver,
    message: bytes,
    *,
    min_rsa_bits: int = 1024,
    executor: Executor | None = None,
) -> ArcResult:
    """The ARC chain's validation status (cv) of ``message``; never raises for its content. A
    message with no ARC field at all is ``none`` at once; otherwise the keys of its seals and
    message signatures are fetched here and the chain verified in ``executor`` (``None``: the
    loop's default thread pool)."""
    if not has_field(message, ARC_FIELDS):
        return ArcResult("none", 0, "no ARC sets")
    names = key_names(message, SIGNED_ARC_FIELDS, 2 * (MAX_INSTANCES + 1))
    keys = await fetch_keys(resolver, names)
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(executor, _verify, message, min_rsa_bits, keys)
