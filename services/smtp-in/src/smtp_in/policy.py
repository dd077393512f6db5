"""What the verdicts mean for one message: refused at the end of DATA, or stored with which flags.

SPF and DKIM alone never refuse. A DMARC ``fail`` whose disposition is ``reject`` is refused with
550 5.7.1 (RFC 7489 6.6.4 and 10.3; ``DMARC_POLICY=tag`` stores it flagged instead); ``quarantine``
flags it (POP3 has no folders). A check that met DNS trouble refuses only with
``AUTH_TEMPERROR=tempfail`` (451 4.7.5, the sender retries); otherwise the temperror is recorded
and the message stored: DNS trouble never loses mail.
"""

from __future__ import annotations

from dataclasses import dataclass

from smtp_in.authentication import Verdicts
from smtp_in.settings import SmtpSettings


@dataclass(frozen=True)
class Refusal:
    result: str  # the log line's ``result``
    reply: str


def refusal(settings: SmtpSettings, verdicts: Verdicts) -> Refusal | None:
    """The SMTP refusal the authentication verdicts call for, if any."""
    dmarc = verdicts.dmarc
    if dmarc.disposition == "reject" and settings.dmarc_policy == "enforce":
        return Refusal(
            "dmarc_reject",
            f"550 5.7.1 Message rejected by the DMARC policy of {dmarc.from_domain}",
        )
    if verdicts.temperror and settings.auth_temperror == "tempfail":
        return Refusal(
            "auth_tempfail",
            "451 4.7.5 Sender authentication failed temporarily (DNS), try again later",
        )
    return None


def flagged(settings: SmtpSettings, verdicts: Verdicts) -> bool:
    """The message is stored marked ``X-Spam: Yes`` for what DMARC says of it."""
    disposition = verdicts.dmarc.disposition
    return disposition == "quarantine" or (
        disposition == "reject" and settings.dmarc_policy == "tag"
    )
