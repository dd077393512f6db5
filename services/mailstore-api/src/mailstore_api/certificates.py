"""The ACME client (RFC 8555): a certificate for ``MAIL_HOSTNAME``, obtained and renewed.

Why here: the mailstore is one process by design (it holds the data volume's lock), so exactly one
ACME client runs however many front-end replicas there are: no two orders at once, no rate limit
spent twice. It writes the chain and the key as ONE file, ``<SECRETS_DIR>/tls/acme.pem``, in one
``rename`` onto the secrets volume; the front ends only watch files (``mailcommon.certwatch``),
the same way they pick up an operator's certificate that certbot or Traefik rewrites.

certbot's ``acme`` library speaks the protocol (JWS with ``josepy``, nonces, polling); the
challenge is HTTP-01, answered by :mod:`mailstore_api.challenges`. State on the secrets volume:
``acme/account_key.pem`` (the account is found again from its key: a ``newAccount`` with a known
key returns the existing account) and ``tls/acme.pem``. A restart with a certificate for the host
name that is not yet due orders nothing. Due: a third of its lifetime left. A failure is logged
(``acme_failed``) and retried after 1 minute, doubling up to 6 hours.
"""

from __future__ import annotations

import datetime
import threading
import time
from pathlib import Path
from typing import cast

from acme import challenges, client, crypto_util, errors, messages
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from josepy.jwk import JWKRSA
from mailcommon.atomicfile import replace_file
from mailcommon.certbuilder import new_key, pem_private_key
from mailcommon.logging import get_logger
from mailcommon.secrets import load_or_create_file
from mailcommon.tls import ACME_FILE

from mailstore_api import metrics
from mailstore_api.challenges import ChallengeResponder
from mailstore_api.settings import MailstoreSettings

log = get_logger(__name__)

ACCOUNT_KEY_FILE = Path("acme") / "account_key.pem"
RETRY_FIRST = 60.0
RETRY_MAX = 6 * 3600.0
RECHECK = 3600.0  # look at the file at least hourly (a clock step, a file put back by hand)
ORDER_DEADLINE = datetime.timedelta(minutes=5)


def backoff(failures: int) -> float:
    """Seconds to wait after ``failures`` orders failed in a row: 1 minute, doubling, 6 hours at most."""
    return min(RETRY_FIRST * 2.0 ** (failures - 1), RETRY_MAX)


def certificate_window(pem: bytes, hostname: str) -> tuple[float, float] | None:
    """(notBefore, notAfter) of the leaf in ``pem`` if it names ``hostname``, else None."""
    try:
        leaf = x509.load_pem_x509_certificates(pem)[0]
        names = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, IndexError, x509.ExtensionNotFound):
        return None
    if hostname not in names.get_values_for_type(x509.DNSName):
        return None
    return leaf.not_valid_before_utc.timestamp(), leaf.not_valid_after_utc.timestamp()


class CertificateManager:
    """Runs in a thread of its own: orders when due, sleeps until the next renewal otherwise."""

    def __init__(self, settings: MailstoreSettings, responder: ChallengeResponder) -> None:
        self.settings = settings
        self.responder = responder
        self.cert_path = settings.secrets_dir / ACME_FILE
        # Expiry of the certificate on the volume (seconds since the epoch), for a metric.
        self.not_after: float | None = None
        self.failures = 0  # orders failed in a row (for a metric); 0 after a success
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="acme", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)

    def due_in(self) -> float:
        """Seconds until the certificate on the volume should be renewed (0 or less: now)."""
        try:
            window = certificate_window(self.cert_path.read_bytes(), self.settings.mail_hostname)
        except FileNotFoundError:
            window = None
        if window is None:
            self.not_after = None
            return 0.0
        not_before, self.not_after = window
        return self.not_after - (self.not_after - not_before) / 3 - time.time()

    def _run(self) -> None:
        announced: float | None = None  # the certificate last said to be valid (once, not hourly)
        while not self._stop.is_set():
            due = self.due_in()
            if due > 0:
                if self.not_after != announced:
                    announced = self.not_after
                    log.info(
                        "acme_certificate_valid",
                        not_after=int(self.not_after or 0),
                        renew_in_s=int(due),
                    )
                self._stop.wait(min(due, RECHECK))
                continue
            try:
                self.issue()
            except Exception as exc:  # any failure: log it, back off, try again
                self.failures += 1
                metrics.ACME_FAILURES.inc()
                retry = backoff(self.failures)
                log.error(
                    "acme_failed",
                    error=f"{type(exc).__name__}: {exc}",
                    failures=self.failures,
                    directory=self.settings.acme_directory_url,
                    retry_in_s=int(retry),
                )
                self._stop.wait(retry)
                continue
            self.failures = 0
            if self.due_in() <= 0:  # a certificate due at once: do not order in a loop
                self._stop.wait(RETRY_FIRST)

    def _client(self) -> tuple[client.ClientV2, JWKRSA]:
        path = self.settings.secrets_dir / ACCOUNT_KEY_FILE
        if not path.exists():
            load_or_create_file(path, pem_private_key(rsa.generate_private_key(65537, 2048)))
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
        account_key = JWKRSA(key=cast(rsa.RSAPrivateKey, private))
        bundle = self.settings.acme_ca_bundle
        # requests' ``verify`` takes a CA bundle's path too; acme hands ``verify_ssl`` to it as is.
        verify = cast(bool, str(bundle)) if bundle is not None else True
        net = client.ClientNetwork(account_key, user_agent="maildrop", verify_ssl=verify)
        directory = client.ClientV2.get_directory(self.settings.acme_directory_url, net)
        acme = client.ClientV2(directory, net)
        registration = messages.NewRegistration.from_data(
            email=self.settings.acme_email, terms_of_service_agreed=True
        )
        try:
            acme.new_account(registration)
        except errors.ConflictError as known:  # this key's account exists: use it
            net.account = messages.RegistrationResource(
                uri=known.location, body=messages.Registration()
            )
        return acme, account_key

    def issue(self) -> None:
        """One order: new key, CSR, HTTP-01, finalize, write ``acme.pem``."""
        hostname = self.settings.mail_hostname
        log.info("acme_order", hostname=hostname, directory=self.settings.acme_directory_url)
        acme, account_key = self._client()
        key_pem = pem_private_key(new_key())
        order = acme.new_order(crypto_util.make_csr(key_pem, [hostname]))
        tokens: list[str] = []
        try:
            for authz in order.authorizations:
                if authz.body.status == messages.STATUS_VALID:
                    continue  # validated recently: the CA reuses it
                challb = next(
                    (c for c in authz.body.challenges if isinstance(c.chall, challenges.HTTP01)),
                    None,
                )
                if challb is None:
                    raise RuntimeError("the CA offers no http-01 challenge")
                response, validation = challb.response_and_validation(account_key)
                token = challb.chall.encode("token")
                self.responder.publish(token, validation)
                tokens.append(token)
                acme.answer_challenge(challb, response)
            deadline = datetime.datetime.now() + ORDER_DEADLINE
            order = acme.poll_and_finalize(order, deadline)
        finally:
            for token in tokens:
                self.responder.withdraw(token)
        chain = order.fullchain_pem.encode()
        window = certificate_window(chain, hostname)
        if window is None:
            raise RuntimeError(f"the CA issued a certificate that does not name {hostname}")
        replace_file(self.cert_path, chain.rstrip(b"\n") + b"\n" + key_pem)
        self.not_after = window[1]
        log.info(
            "acme_certificate_issued",
            hostname=hostname,
            not_after=int(window[1]),
            serial=format(x509.load_pem_x509_certificates(chain)[0].serial_number, "x"),
            file=str(self.cert_path),
        )
