"""DKIM (RFC 6376, RFC 8463 ed25519, RFC 8301 key sizes) verification with dkimpy.

dkimpy does the parsing, canonicalization and cryptography; this module decides the RFC 8601
result of each signature, which dkimpy folds into ``True``/``False``/an exception:

- the keys are looked up first, on the event loop through the shared resolver
  (:mod:`mailauth.keys`), then each is parsed with dkimpy's ``evaluate_pk`` before its signature
  is verified, in an executor (the caller's, e.g. a process pool; a thread by default): a
  temporary DNS failure is ``temperror``, no key or an unusable one ``permerror``;
- a signature whose tags do not parse or validate is ``permerror``, and so is ``a=rsa-sha1``
  (dkimpy still verifies it) or an ``a=`` of another type than the key's ``k=``;
- a body-hash or signature mismatch, an RSA key under ``min_rsa_bits`` and a past ``x=`` are
  ``fail`` (dkimpy allows ten hours of slack past ``x=``; this module allows none);
- an ``l=`` that does not cover the whole canonicalized body is never a pass: a signature that
  verifies is reported ``policy``, so content appended after signing cannot ride it; an ``l=``
  longer than the body is ``fail``.

At most ``max_signatures`` signatures are looked at (the topmost first): a message with a
thousand DKIM-Signature fields costs no more than that many lookups and verifications.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor

import dkim
from dkim.canonicalization import CanonicalizationPolicy
from dkim.util import parse_tag_value

from mailauth.dns import Resolver, TemporaryError
from mailauth.headers import has_field
from mailauth.keys import KeyLookup, Keys, fetch_keys, key_names
from mailauth.verdicts import DkimResult

__all__ = ["DkimResult", "verify_dkim"]

# RFC 8301 3.1: rsa-sha1 MUST NOT be considered valid.
ALGORITHMS = (b"rsa-sha256", b"ed25519-sha256")
SIGNATURE_FIELDS = frozenset({b"dkim-signature"})
HEADER_B_LENGTH = 12  # RFC 6008: header.b carries enough of b= to tell signatures apart


class _Verdict(Exception):
    """The result of one signature, raised from deep inside its verification."""

    def __init__(self, result: str, reason: str) -> None:
        super().__init__(reason)
        self.result = result
        self.reason = reason


def _text(tags: dict[bytes, bytes], tag: bytes) -> str:
    return tags.get(tag, b"").decode("ascii", "replace")


def _check_expiry(tags: dict[bytes, bytes]) -> None:
    expiry = tags.get(b"x", b"")
    if expiry.isdigit() and int(expiry) < time.time():
        raise _Verdict("fail", f"signature expired (x={expiry.decode()})")


def _check_length(verifier: dkim.DKIM, tags: dict[bytes, bytes]) -> None:
    """Raise ``policy`` when ``l=`` leaves part of the canonicalized body unsigned, ``fail``
    when it counts more than there is."""
    if b"l" not in tags:
        return
    policy = CanonicalizationPolicy.from_c_value(tags.get(b"c", b"simple/simple"))
    body_length = len(policy.canonicalize_body(verifier.body))
    signed = int(tags[b"l"])
    if signed < body_length:
        raise _Verdict(
            "policy", f"l={signed} signs only {signed} of {body_length} body octets; not a pass"
        )
    if signed > body_length:  # it counts octets that are not there (libopendkim fails it too)
        raise _Verdict("fail", f"l={signed} exceeds the body")


def _fetch_key(tags: dict[bytes, bytes], min_rsa_bits: int, lookup: KeyLookup) -> bytes:
    """The key record for the signature, checked with dkimpy's own parser."""
    name = tags[b"s"] + b"._domainkey." + tags[b"d"]
    try:
        record = lookup(name)
    except TemporaryError as exc:
        raise _Verdict("temperror", f"key lookup: {exc}") from exc
    if record is None:
        raise _Verdict("permerror", f"no key at {name.decode('ascii', 'replace')}")
    try:
        _key, bits, key_type, _tlsrpt = dkim.evaluate_pk(name, record)
    except Exception as exc:  # KeyFormatError, binascii.Error, ... from a hostile record
        raise _Verdict("permerror", f"unusable key record: {exc}") from exc
    if not tags[b"a"].startswith(key_type + b"-"):
        raise _Verdict("permerror", f"a={_text(tags, b'a')} with a k={key_type.decode()} key")
    if key_type == b"rsa" and bits < min_rsa_bits:
        raise _Verdict("fail", f"RSA key of {bits} bits, under {min_rsa_bits}")
    return record


def _verify_one(verifier: dkim.DKIM, index: int, min_rsa_bits: int, lookup: KeyLookup) -> _Verdict:
    """Verify signature ``index``; the checks on the way raise their :class:`_Verdict`."""
    try:
        signature, include_headers, fields = verifier.verify_headerprep(index)
    except Exception as exc:  # tag syntax or validation (dkimpy), or worse
        raise _Verdict("permerror", f"broken signature: {exc}") from exc
    if signature[b"a"] not in ALGORITHMS:
        raise _Verdict("permerror", f"a={_text(signature, b'a')} is not accepted (RFC 8301)")
    _check_expiry(signature)
    record = _fetch_key(signature, min_rsa_bits, lookup)
    try:
        valid = verifier.verify_sig(
            signature, include_headers, fields[index], lambda _name, timeout=0: record
        )
    except dkim.ValidationError as exc:  # the body hash does not match
        raise _Verdict("fail", str(exc)) from exc
    except dkim.KeyFormatError as exc:  # under dkimpy's minkey, digest too large for the key
        raise _Verdict("fail", str(exc)) from exc
    except Exception as exc:
        raise _Verdict("permerror", f"{type(exc).__name__}: {exc}") from exc
    if not valid:
        raise _Verdict("fail", "signature does not verify")
    _check_length(verifier, signature)
    return _Verdict("pass", "signature verified")


def _summary(field_value: bytes, verdict: _Verdict) -> DkimResult:
    try:
        tags = parse_tag_value(field_value)
    except Exception:  # the verdict already says why; report what can be told
        tags = {}
    b_value = b"".join(tags.get(b"b", b"").split())
    return DkimResult(
        verdict.result,
        _text(tags, b"d"),
        _text(tags, b"s"),
        _text(tags, b"a"),
        b_value[:HEADER_B_LENGTH].decode("ascii", "replace"),
        verdict.reason,
    )


def _verify_all(
    message: bytes, max_signatures: int, min_rsa_bits: int, keys: Keys
) -> list[DkimResult]:
    """Every verdict, CPU work only (runs in the caller's executor)."""
    lookup = KeyLookup(keys)
    try:
        verifier = dkim.DKIM(message, minkey=min_rsa_bits)
    except Exception as exc:  # headers dkimpy cannot parse: nothing can be verified
        if b"dkim-signature" not in message.lower():
            return []
        return [DkimResult("permerror", "", "", "", "", f"message not parseable: {exc}")]
    fields = [value for name, value in verifier.headers if name.lower() == b"dkim-signature"]
    results = []
    for index, value in enumerate(fields[:max_signatures]):
        try:
            verdict = _verify_one(verifier, index, min_rsa_bits, lookup)
        except _Verdict as raised:
            verdict = raised
        except Exception as exc:  # what the steps above did not foresee: still not a pass
            verdict = _Verdict("permerror", f"{type(exc).__name__}: {exc}")
        results.append(_summary(value, verdict))
    return results


async def verify_dkim(
    resolver: Resolver,
    message: bytes,
    *,
    max_signatures: int = 5,
    min_rsa_bits: int = 1024,
    executor: Executor | None = None,
) -> list[DkimResult]:
    """A result for each of the first ``max_signatures`` DKIM signatures; ``[]`` when unsigned
    (told from the header block alone). The keys are fetched here; the verifying runs in
    ``executor`` (``None``: the loop's default thread pool)."""
    if not has_field(message, SIGNATURE_FIELDS):
        return []
    keys = await fetch_keys(resolver, key_names(message, SIGNATURE_FIELDS, max_signatures))
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(
        executor, _verify_all, message, max_signatures, min_rsa_bits, keys
    )
