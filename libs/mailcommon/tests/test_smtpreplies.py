"""Every reply carries an RFC 3463 enhanced status code (RFC 2034)."""

from __future__ import annotations

import pytest
from mailcommon.smtpreplies import with_enhanced_code


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("250 OK", "250 2.0.0 OK"),
        ("221 Bye", "221 2.0.0 Bye"),
        ("220 Ready to start TLS", "220 2.0.0 Ready to start TLS"),
        ("503 Error: need MAIL command", "503 5.5.1 Error: need MAIL command"),
        ("501 Syntax: MAIL FROM: <address>", "501 5.5.4 Syntax: MAIL FROM: <address>"),
        ("500 Error: bad syntax", "500 5.5.2 Error: bad syntax"),
        ("552 Error: Too much mail data", "552 5.3.4 Message too big for system"),
        (
            "552 Error: message size exceeds fixed maximum message size",
            "552 5.3.4 Message size exceeds fixed maximum message size",
        ),
        ("500 Line too long (see RFC5321 4.5.3.1.6)", None),
        ("553 5.1.3 Error: malformed address", "553 5.1.3 Error: malformed address"),
        ("550 5.7.1 Relay access denied", "550 5.7.1 Relay access denied"),
        ("502 EXPN not implemented", "502 5.5.1 EXPN not implemented"),
        ("599 odd", "599 5.0.0 odd"),
        (
            '500 Error: command "X\x00\x1b" not recognized',
            "500 5.5.1 Error: command not recognized",
        ),
        ("354 End data with <CR><LF>.<CR><LF>", "354 End data with <CR><LF>.<CR><LF>"),
    ],
)
def test_enhanced_codes(raw: str, expected: str | None) -> None:
    got = with_enhanced_code(raw)
    if expected is None:
        assert got.startswith("500 5.5.2 Line too long")
    else:
        assert got == expected
