"""SMTP replies with RFC 3463 enhanced status codes (RFC 2034), for every aiosmtpd-based service.

aiosmtpd words a few replies without an enhanced code; :func:`with_enhanced_code` rewrites those
and adds the code any other reply lacks (by reply code, then by class).
"""

from __future__ import annotations

import re

_HAS_ENHANCED = re.compile(r"^\d{3}[ -][245]\.\d{1,3}\.\d{1,3}(?: |$)")
_REPLY = re.compile(r"^(\d{3})([ -])(.*)$", re.DOTALL)
# aiosmtpd replies we word differently (and give the right enhanced code).
_REWRITES = {
    "552 Error: Too much mail data": "552 5.3.4 Message too big for system",
    "552 Error: message size exceeds fixed maximum message size": (
        "552 5.3.4 Message size exceeds fixed maximum message size"
    ),
    "500 Line too long (see RFC5321 4.5.3.1.6)": (
        "500 5.5.2 Line too long: message lines are limited to 1000 octets (RFC 5321 4.5.3.1.6)"
    ),
    "500 Command line too long": "500 5.5.2 Command line too long",
    "220 Ready to start TLS": "220 2.0.0 Ready to start TLS",
    "221 Bye": "221 2.0.0 Bye",
}
# The enhanced code added to any other reply lacking one, by reply code (then by class).
_ENHANCED_BY_CODE = {
    "220": "2.0.0",
    "221": "2.0.0",
    "250": "2.0.0",
    "252": "2.0.0",
    "421": "4.3.2",
    "451": "4.3.0",
    "452": "4.3.1",
    "454": "4.7.0",
    "500": "5.5.2",
    "501": "5.5.4",
    "502": "5.5.1",
    "503": "5.5.1",
    "504": "5.5.4",
    "530": "5.7.0",
    "550": "5.0.0",
    "552": "5.3.4",
    "553": "5.1.3",
    "554": "5.0.0",
    "555": "5.5.4",
}


# aiosmtpd's reply to an unknown verb repeats the verb, control characters and all: not ours.
_UNKNOWN_COMMAND = re.compile(r'500 Error: command ".*" not recognized', re.DOTALL)


def with_enhanced_code(reply: str) -> str:
    """``reply`` with an RFC 3463 status code after the reply code (unchanged if it has one)."""
    if _UNKNOWN_COMMAND.fullmatch(reply):
        return "500 5.5.1 Error: command not recognized"
    reply = _REWRITES.get(reply, reply)
    if _HAS_ENHANCED.match(reply):
        return reply
    match = _REPLY.match(reply)
    if match is None or match.group(1)[0] not in "245":
        return reply  # 3xx intermediate replies carry no status code (RFC 2034)
    code, sep, text = match.groups()
    enhanced = _ENHANCED_BY_CODE.get(code, f"{code[0]}.0.0")
    return f"{code}{sep}{enhanced} {text}".rstrip()
