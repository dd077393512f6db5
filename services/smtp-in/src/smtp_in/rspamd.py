"""Optional spam scanning with rspamd over its HTTP protocol (``POST /checkv2``), on by RSPAMD_URL.

Sent: the message as the request body, streamed from its bytes in :data:`CHUNK` pieces with its
``Content-Length``; the envelope as rspamd's request headers (rspamd's protocol documentation):
``IP``, ``Helo``, ``From`` (MAIL FROM; empty for the null sender), one ``Rcpt`` per recipient,
``Queue-Id`` (our transaction id), ``MTA-Name`` (MAIL_HOSTNAME), ``Hostname`` (the client's
verified host name, only when the caller has one: rspamd's hfilter scores a missing one, 2.5 by
default), and ``Password`` when RSPAMD_PASSWORD is set (rspamd's controller asks for it; the
normal worker on 11333 does not).

Our SPF/DKIM/DMARC verdicts reach rspamd only as the Authentication-Results header the message
already carries. rspamd 3.4 has no setting to take its SPF, DKIM and DMARC results from an
upstream Authentication-Results (its ARC module can copy one into a seal it adds,
``reuse_auth_results``, and that is all): it checks again, with its own DNS resolver.

rspamd's action, and what becomes of the message (:class:`SpamVerdict`):

- ``reject``: ``550 5.7.1``; ``soft reject``: ``451 4.7.1``;
- ``add header``, ``rewrite subject``: accepted with ``X-Spam: Yes`` and ``X-Spam-Score``
  (the subject is not rewritten);
- ``greylist``, ``no action``: accepted as it is. rspamd does not expect the MTA to delay a
  ``greylist``: its own milter accepts it, and its greylisting module (which needs Redis) turns
  a first attempt into ``soft reject`` itself;
- anything else (``discard``, ``quarantine``, custom actions): tagged like ``add header``, so
  that mail is never dropped, nor refused for an action we do not know;
- no answer: unreachable, timed out (RSPAMD_TIMEOUT), a status other than 200, a reply that is
  not JSON with an ``action``, or over :data:`MAX_REPLY` octets. RSPAMD_FAIL=accept (default):
  accepted with ``X-Spam-Checker: unavailable`` and a warning logged; RSPAMD_FAIL=tempfail:
  ``451 4.7.1``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import aiohttp
from mailcommon.client import read_bounded
from mailcommon.logging import get_logger

from smtp_in.settings import SmtpSettings

log = get_logger(__name__)

CHECK_PATH = "/checkv2"
#: Octets of the request body handed to the connection at a time.
CHUNK = 64 * 1024
#: The longest reply read: rspamd's JSON for one message is a few KiB.
MAX_REPLY = 1024 * 1024
#: Scans in flight at once; more wait for a connection (within RSPAMD_TIMEOUT).
MAX_CONNECTIONS = 32
UNAVAILABLE = "unavailable"
REJECT_REPLY = "550 5.7.1 Message refused as spam"
SOFT_REJECT_REPLY = "451 4.7.1 Message deferred by the spam filter, try again later"
TEMPFAIL_REPLY = "451 4.7.1 Spam filter unavailable, try again later"
_ACCEPTED = frozenset({"no action", "greylist"})
_REFUSED = {"reject": REJECT_REPLY, "soft reject": SOFT_REJECT_REPLY}


@dataclass(frozen=True)
class SpamVerdict:
    """What one scan decided. ``reply``: the SMTP refusal, None to accept; ``headers``: the
    header lines to prepend to the message when it is accepted (CRLF line ends; may be b"");
    ``tagged``: they mark it ``X-Spam: Yes``."""

    action: str
    score: float | None
    required: float | None
    symbols: list[str]
    reply: str | None
    headers: bytes
    reachable: bool
    tagged: bool = False


class BadReply(Exception):
    """rspamd answered something other than a scan result."""


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def verdict_from(body: bytes) -> SpamVerdict:
    """The verdict in one ``/checkv2`` reply body; :class:`BadReply` when it holds none."""
    try:
        reply: Any = json.loads(body)
    except ValueError as exc:
        raise BadReply("not JSON") from exc
    if not isinstance(reply, dict) or not isinstance(reply.get("action"), str):
        raise BadReply("no action in the reply")
    action: str = reply["action"]
    score = _number(reply.get("score"))
    symbols = reply.get("symbols")
    headers = b""
    tagged = action not in _ACCEPTED and action not in _REFUSED
    if tagged:
        shown = f"{score:.2f}" if score is not None else "unknown"
        headers = f"X-Spam: Yes\r\nX-Spam-Score: {shown}\r\n".encode()
    return SpamVerdict(
        action=action,
        score=score,
        required=_number(reply.get("required_score")),
        symbols=sorted(symbols) if isinstance(symbols, dict) else [],
        reply=_REFUSED.get(action),
        headers=headers,
        reachable=True,
        tagged=tagged,
    )


async def _pieces(message: bytes) -> AsyncIterator[memoryview]:
    view = memoryview(message)
    for start in range(0, len(view), CHUNK):
        yield view[start : start + CHUNK]


class Rspamd:
    """One connection pool to rspamd; share one instance per process. Like the mailstore's
    client, the aiohttp session is made on the first scan, inside the running event loop."""

    def __init__(
        self,
        url: str,
        *,
        mta_name: str,
        timeout: float = 10.0,
        fail: Literal["accept", "tempfail"] = "accept",
        password: str = "",
    ) -> None:
        self.url = url.rstrip("/") + CHECK_PATH
        self.fail = fail
        self._headers = {"MTA-Name": mta_name}
        if password:
            self._headers["Password"] = password
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._http: aiohttp.ClientSession | None = None

    @classmethod
    def from_settings(cls, settings: SmtpSettings) -> Rspamd | None:
        """The scanner RSPAMD_URL names, or None when it is unset."""
        if not settings.rspamd_url:
            return None
        return cls(
            settings.rspamd_url,
            mta_name=settings.mail_hostname,
            timeout=settings.rspamd_timeout,
            fail=settings.rspamd_fail,
            password=settings.rspamd_password,
        )

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(
                headers=self._headers,
                connector=aiohttp.TCPConnector(limit=MAX_CONNECTIONS),
                cookie_jar=aiohttp.DummyCookieJar(),
                auto_decompress=False,
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            )
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None

    async def scan(
        self,
        message: bytes,
        *,
        ip: str,
        helo: str | None,
        mail_from: str,
        recipients: Sequence[str],
        queue_id: str,
        client_hostname: str | None = None,
    ) -> SpamVerdict:
        """rspamd's verdict on ``message`` (as it will be stored, trace headers included).
        Never raises: any failure is the RSPAMD_FAIL verdict (see the module docstring)."""
        headers = [("IP", ip), ("From", mail_from), ("Queue-Id", queue_id)]
        headers += [("Rcpt", recipient) for recipient in recipients]
        if helo:
            headers.append(("Helo", helo))
        if client_hostname:
            headers.append(("Hostname", client_hostname))
        headers.append(("Content-Length", str(len(message))))
        try:
            async with self._session().post(
                self.url, data=_pieces(message), headers=headers, timeout=self._timeout
            ) as response:
                try:
                    body = await read_bounded(response, MAX_REPLY)
                except Exception:
                    response.close()  # the rest is never read: the connection cannot be reused
                    raise
                if response.status != 200:
                    raise BadReply(f"HTTP {response.status}: {body[:200]!r}")
                return verdict_from(body)
        except Exception as exc:  # scan never raises: every failure is one verdict
            log.warning(
                "rspamd_unavailable",
                transaction=queue_id,
                error=f"{type(exc).__name__}: {exc}",
                fail=self.fail,
            )
            return self._unavailable()

    def _unavailable(self) -> SpamVerdict:
        tempfail = self.fail == "tempfail"
        return SpamVerdict(
            action=UNAVAILABLE,
            score=None,
            required=None,
            symbols=[],
            reply=TEMPFAIL_REPLY if tempfail else None,
            headers=b"" if tempfail else b"X-Spam-Checker: unavailable\r\n",
            reachable=False,
        )
