"""Delivery status notifications (RFC 3464): the bounce of failed recipients and the delay
notice, built with Python's email package (``multipart/report; report-type=delivery-status``:
a text for people, the ``message/delivery-status`` fields, the original's headers as
``text/rfc822-headers``)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from email.message import Message
from email.mime.base import MIMEBase
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formatdate, make_msgid

FAILED, DELAYED = "failed", "delayed"
#: An SMTP reply's enhanced status code (RFC 3463) after its basic code.
_ENHANCED = re.compile(r"^[245]\d\d[ -]([245]\.\d{1,3}\.\d{1,3})\b")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


@dataclass(frozen=True)
class DsnRecipient:
    address: str
    reply: str | None  # the last SMTP reply, if any
    expired: bool = False  # failed because QUEUE_LIFETIME ran out


def status_of(recipient: DsnRecipient, action: str) -> str:
    """The Status field: the reply's enhanced code, else 4.4.7 (expired), 5.0.0 or 4.0.0."""
    if recipient.reply:
        found = _ENHANCED.match(recipient.reply.strip())
        if found and not (action == FAILED and recipient.expired):
            return found.group(1)
    if recipient.expired:
        return "4.4.7"
    return "5.0.0" if action == FAILED else "4.0.0"


def _field(value: str) -> str:
    """One line for a header field: no control characters, at most 900 characters."""
    return _CONTROL.sub(" ", value).strip()[:900]


def _fields(pairs: list[tuple[str, str]]) -> Message:
    block = Message()
    for name, value in pairs:
        block[name] = value
    return block


def build_dsn(
    *,
    action: str,
    to: str,
    reporting_mta: str,
    queue_id: str,
    arrival: float,
    recipients: list[DsnRecipient],
    original_headers: bytes,
    retry_until: float | None = None,
    now: float | None = None,
) -> bytes:
    """The DSN for ``recipients`` of queue entry ``queue_id`` (``action`` failed or delayed),
    addressed to ``to``; its octets with CRLF line ends."""
    failed = action == FAILED
    report = MIMEMultipart("report", report_type="delivery-status")
    report["From"] = f"Mail Delivery System <MAILER-DAEMON@{reporting_mta}>"
    report["To"] = to
    report["Subject"] = (
        "Undelivered Mail Returned to Sender" if failed else "Delayed Mail (still being retried)"
    )
    report["Date"] = formatdate(now, localtime=False)
    report["Message-ID"] = make_msgid("dsn", reporting_mta)
    report["Auto-Submitted"] = "auto-replied"  # RFC 3834: no automatic answer to this one
    lines = [
        f"This is the mail system at {reporting_mta}.",
        "",
        (
            "Your message could not be delivered to the recipients below."
            if failed
            else "Your message has not been delivered yet to the recipients below;"
            " the mail system keeps trying."
        ),
        "",
    ]
    for r in recipients:
        why = _field(r.reply) if r.reply else "no reply"
        if r.expired:
            why = f"gave up after the queue lifetime; last reply: {why}"
        lines.append(f"<{r.address}>: {why}")
    text = "\n".join(lines) + "\n"
    report.attach(MIMEText(text, "plain", "us-ascii" if text.isascii() else "utf-8"))

    status = MIMEBase("message", "delivery-status")
    del status["MIME-Version"]
    blocks = [
        _fields(
            [
                ("Reporting-MTA", f"dns; {reporting_mta}"),
                ("X-Queue-ID", queue_id),
                ("Arrival-Date", formatdate(arrival)),
            ]
        )
    ]
    for r in recipients:
        pairs = [
            ("Final-Recipient", f"rfc822; {r.address}"),
            ("Action", action),
            ("Status", status_of(r, action)),
        ]
        if r.reply:
            pairs.append(("Diagnostic-Code", f"smtp; {_field(r.reply)}"))
        pairs.append(("Last-Attempt-Date", formatdate(now)))
        if not failed and retry_until is not None:
            pairs.append(("Will-Retry-Until", formatdate(retry_until)))
        blocks.append(_fields(pairs))
    status.set_payload(blocks)  # type: ignore[arg-type]
    report.attach(status)

    headers = original_headers.decode("utf-8", "replace")
    part = MIMEText(headers, "rfc822-headers", "us-ascii" if headers.isascii() else "utf-8")
    del part["MIME-Version"]
    report.attach(part)
    return report.as_bytes(policy=report.policy.clone(linesep="\r\n"))
