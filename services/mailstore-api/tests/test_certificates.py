"""The ACME client's schedule (the protocol itself runs against Pebble in tests/test_certificates.py)."""

from __future__ import annotations

import datetime
from pathlib import Path

from mailstack.certs import ScratchCA
from mailstore_api.certificates import backoff, certificate_window


def test_backoff_doubles_from_a_minute_to_six_hours() -> None:
    assert [backoff(n) for n in range(1, 6)] == [60, 120, 240, 480, 960]
    assert backoff(9) == 60 * 256
    assert backoff(10) == 6 * 3600
    assert backoff(50) == 6 * 3600


def test_a_certificate_for_another_name_is_not_ours(tmp_path: Path) -> None:
    """A changed MAIL_HOSTNAME orders a new certificate at once."""
    cert, _ = ScratchCA.create().issue("old.example.test", valid_for=datetime.timedelta(days=90))
    assert certificate_window(cert, "mail.example.test") is None
    window = certificate_window(cert, "old.example.test")
    assert window is not None
    not_before, not_after = window
    assert round((not_after - not_before) / 86400) == 90
    assert (
        certificate_window(b"-----BEGIN CERTIFICATE-----\nnot base64\n", "old.example.test") is None
    )
