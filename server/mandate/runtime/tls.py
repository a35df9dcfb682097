"""The server's TLS certificates, reloadable (SIGHUP) without closing the port.

gRPC's dynamic server credentials ask `_fetch` at every new handshake whether the certificates
changed: a reload reads and checks the files, then hands the new ones to the next handshake.
Connections already open keep the certificates they were made with. Files that do not load
(unreadable, a key that does not match its certificate, a bad CA) are refused and logged; the
certificates in use stay.

The AuthZEN endpoints (HTTPS) use `ssl_context()`, the same files in the standard library's
form: a reload loads the new certificate chain into it for the next handshakes, and adds a new
client CA to the ones it trusts (a client CA taken away stays trusted there until a restart).
"""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import grpc

log = logging.getLogger("mandate.tls")


class Certificates:
    def __init__(self, cert: Path, key: Path, client_ca: Path | None = None):
        self.cert, self.key, self.client_ca = Path(cert), Path(key), Path(client_ca) if client_ca else None
        self._current = self._read()  # a setting that does not load stops the start (ValueError)
        self._pending: grpc.ServerCertificateConfiguration | None = None
        self._ssl: ssl.SSLContext | None = None

    def _read(self) -> grpc.ServerCertificateConfiguration:
        try:
            # The standard library checks what gRPC would only find at the first handshake.
            checker = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            checker.load_cert_chain(self.cert, self.key)
            if self.client_ca is not None:
                checker.load_verify_locations(self.client_ca)
            chain, key = self.cert.read_bytes(), self.key.read_bytes()
            ca = self.client_ca.read_bytes() if self.client_ca is not None else None
        except (OSError, ssl.SSLError) as error:
            # The message names the files, never their contents.
            raise ValueError(f"TLS certificate {self.cert}, key {self.key}"
                             + (f", client CA {self.client_ca}" if self.client_ca else "")
                             + f" do not load: {_why(error)}") from None
        return grpc.ssl_server_certificate_configuration([(key, chain)], root_certificates=ca)

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.dynamic_ssl_server_credentials(self._current, self._fetch,
                                                   require_client_authentication=self.client_ca is not None)

    def _fetch(self) -> grpc.ServerCertificateConfiguration | None:
        """Called by gRPC at each handshake: the new certificates once after a reload, else None."""
        pending, self._pending = self._pending, None
        return pending

    def ssl_context(self) -> ssl.SSLContext:
        """The server side of TLS for HTTP: this certificate, and client certificates signed by
        the client CA required when there is one (mTLS)."""
        if self._ssl is None:
            self._ssl = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._ssl.minimum_version = ssl.TLSVersion.TLSv1_2
            self._load_into(self._ssl)
            if self.client_ca is not None:
                self._ssl.verify_mode = ssl.CERT_REQUIRED
        return self._ssl

    def _load_into(self, context: ssl.SSLContext) -> None:
        context.load_cert_chain(self.cert, self.key)
        if self.client_ca is not None:
            context.load_verify_locations(self.client_ca)

    def reload(self) -> bool:
        try:
            self._pending = self._current = self._read()
            if self._ssl is not None:
                self._load_into(self._ssl)
        except (ValueError, OSError, ssl.SSLError) as error:
            log.error("TLS reload refused, the certificates in use stay: %s", error)
            return False
        log.info("TLS certificates reloaded from %s", self.cert)
        return True


def _why(error: Exception) -> str:
    return getattr(error, "strerror", None) or getattr(error, "reason", None) or error.__class__.__name__
