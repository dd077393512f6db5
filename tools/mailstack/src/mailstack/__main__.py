"""``mailstack``: run the whole stack locally until Ctrl-C, printing where each service listens."""

from __future__ import annotations

import argparse
import signal
import tempfile
from pathlib import Path

from mailstack.stack import ALL_SERVICES, Stack


def _parse_env(pairs: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"mailstack: --env takes NAME=VALUE, not {pair!r}")
        env[key] = value
    return env


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="mailstack",
        description=(
            "Run redis-server, mailstore-api, smtp-in, pop3, smtp-submit and smtp-out as local"
            " processes."
        ),
    )
    parser.add_argument(
        "--dir", type=Path, help="working directory (data, secrets, logs); default: a new temp dir"
    )
    parser.add_argument(
        "--env", action="append", default=[], metavar="NAME=VALUE", help="extra variable"
    )
    parser.add_argument("--domains", default="pokey.onl,example.test", help="MAIL_DOMAINS")
    args = parser.parse_args()
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="mailstack-"))
    with Stack(workdir, ALL_SERVICES, env=_parse_env(args.env), domains=args.domains) as stack:
        print(f"mailstack: working directory {workdir} (logs in {stack.log_dir})")
        print(f"  redis          {stack.redis_url}")
        print(f"  mailstore-api  {stack.api_url}  (OpenAPI: {stack.api_url}/docs)")
        print(f"  smtp-in        smtp://127.0.0.1:{stack.smtp_port}")
        print(f"  pop3           pop3://127.0.0.1:{stack.pop3_port}  (STLS)")
        print(f"  pop3s          127.0.0.1:{stack.pop3s_port}  (implicit TLS)")
        print(f"  submission     smtp://127.0.0.1:{stack.submit_port}  (STARTTLS, then AUTH)")
        print(f"  submissions    127.0.0.1:{stack.submits_port}  (implicit TLS, AUTH)")
        print("  smtp-out       works the outbound queue (connects to remote MXs on port 25)")
        print("  metrics        (Prometheus text; the mailstore's needs the admin token)")
        for name in ("mailstore-api", "smtp-in", "pop3", "smtp-submit", "smtp-out"):
            print(f"    {name:15}{stack.metrics_url(name)}")
        print(f"  admin token    {stack.admin_token}")
        print(
            f"  mailctl:       MAILSTORE_API_URL={stack.api_url} ADMIN_TOKEN=... mailctl user list"
        )
        print("Ctrl-C (or SIGTERM) stops everything.", flush=True)
        # Blocked only now: the services started above must not inherit a blocked SIGTERM.
        stop_signals = {signal.SIGINT, signal.SIGTERM}
        signal.pthread_sigmask(signal.SIG_BLOCK, stop_signals)
        received = signal.sigwait(stop_signals)
        print(f"mailstack: {signal.Signals(received).name}, stopping", flush=True)


if __name__ == "__main__":
    main()
