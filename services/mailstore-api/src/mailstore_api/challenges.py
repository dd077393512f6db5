"""The HTTP-01 responder (RFC 8555 8.3) on ``ACME_HTTP_PORT``: the ACME client's pending
challenges at ``/.well-known/acme-challenge/<token>``, 404 for everything else.

The standard library's ``ThreadingHTTPServer`` in a thread of its own: a handful of requests per
certificate, from the CA's validators; nothing here touches the event loop or the mail.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from mailcommon.logging import get_logger

log = get_logger(__name__)
PREFIX = "/.well-known/acme-challenge/"


class ChallengeResponder:
    """Serves the key authorizations the ACME client publishes, while it publishes them."""

    def __init__(self, host: str, port: int) -> None:
        self._answers: dict[str, str] = {}
        self._lock = threading.Lock()
        responder = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "maildrop-acme"
            sys_version = ""

            def do_GET(self) -> None:
                answer = responder.answer(self.path)
                body = (answer if answer is not None else "not found\n").encode()
                self.send_response(200 if answer is not None else 404)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                # The CA's validators at info; anything else (scanners on port 80) at debug.
                (log.info if self.path.startswith(PREFIX) else log.debug)(
                    "acme_challenge_request", path=self.path[:200], found=answer is not None
                )

            def log_message(self, format: str, *args: Any) -> None:
                """Our own line above instead of the standard library's stderr line."""

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="acme-http01", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()
        log.info("acme_http_listening", port=self.port)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def answer(self, path: str) -> str | None:
        """The key authorization for ``path``, if a challenge with its token is pending."""
        if not path.startswith(PREFIX):
            return None
        with self._lock:
            return self._answers.get(path[len(PREFIX) :])

    def publish(self, token: str, key_authorization: str) -> None:
        with self._lock:
            self._answers[token] = key_authorization

    def withdraw(self, token: str) -> None:
        with self._lock:
            self._answers.pop(token, None)
