"""``python -m smtp_submit``: read the settings, then serve submission until SIGTERM.

Bad settings (an insecure token, a missing domain list, an unreadable certificate) end the process
with exit status 2 and one line saying why, before anything listens.
"""

from __future__ import annotations

import asyncio
import logging
import sys

import uvloop
from mailcommon.certwatch import ReloadingContext
from mailcommon.client import MailstoreClient
from mailcommon.logging import configure_logging, get_logger
from mailcommon.metrics import exposed, watch_certificate
from mailcommon.redisclient import connect_redis
from mailcommon.startup import ConfigError, front_end_secrets, load_settings, refuse
from mailcommon.throttle import AuthThrottle
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff

from smtp_submit.limits import HourlyLimit
from smtp_submit.login import Logins
from smtp_submit.server import SubmitServer
from smtp_submit.settings import SubmitSettings

EXIT_BIND = 1
REDIS_POOL_SIZE = 64


async def run(settings: SubmitSettings, token: str, tls: ReloadingContext) -> None:
    mailstore = MailstoreClient(
        settings.mailstore_url,
        token,
        timeout=settings.mailstore_timeout,
        max_connections=settings.submit_mailstore_connections,
    )
    redis = connect_redis(
        settings,
        socket_timeout=5.0,
        retry=Retry(ExponentialBackoff(cap=0.2, base=0.02), 2),
        max_connections=REDIS_POOL_SIZE,
        wait_timeout=5.0,
    )
    throttle = AuthThrottle(
        redis,
        settings.submit_auth_fail_window,
        settings.submit_auth_fail_max_per_ip,
        settings.submit_auth_fail_max_per_user,
        settings.submit_auth_fail_max_per_known_net,
        prefix="submit",
        known_ttl=settings.submit_known_network_ttl,
    )
    logins = Logins(mailstore, throttle, settings.primary_domain, settings.submit_auth_fail_delay)
    hourly = HourlyLimit(redis, settings.submit_max_messages_per_hour)
    server = SubmitServer(settings, mailstore, logins, hourly, tls.context)
    watcher = asyncio.create_task(tls.watch())  # a new certificate: see mailcommon.certwatch
    watch_certificate(lambda: tls.not_after)
    try:
        await server.start()
        async with exposed(settings, "smtp-submit"):
            await server.serve_until_stopped()
    finally:
        watcher.cancel()
        await mailstore.aclose()
        await redis.aclose()


def main() -> None:
    try:
        settings = load_settings(SubmitSettings)
        token, tls = front_end_secrets(settings)
    except ConfigError as exc:
        refuse("smtp-submit", exc)
    configure_logging("smtp-submit", settings.log_level, settings.log_format)
    # aiosmtpd logs every command at INFO; our own lines say what matters.
    logging.getLogger("mail.log").setLevel(logging.WARNING)
    loop_factory = uvloop.new_event_loop if settings.submit_uvloop else None
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(run(settings, token, tls))
    except OSError as exc:  # the listening address is taken or not ours
        get_logger(__name__).error("cannot_listen", error=str(exc))
        print(f"smtp-submit: cannot listen: {exc}", file=sys.stderr)
        sys.exit(EXIT_BIND)


if __name__ == "__main__":
    main()
