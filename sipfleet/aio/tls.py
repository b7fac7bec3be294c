"""TLS contexts for SIP over TLS (RFC 3261 section 26.2, RFC 5630), from ``[tls]``.

``TlsContexts`` holds the server side (``tls:`` listeners) and the client
side (TLS towards back ends). ``reload()`` rereads the files (SIGHUP):
handshakes that start afterwards use the new certificate, key and CA list;
established connections keep the session they negotiated. The listeners'
context never changes itself: its SNI callback, which OpenSSL runs for
every ClientHello (with or without a server name), hands the connection the
current server context.
"""

from __future__ import annotations

import logging
import ssl

from sipfleet.config import TlsConfig

__all__ = ["TlsContexts", "TlsError", "describe_tls_error"]

log = logging.getLogger("sipfleet.tls")

_VERSIONS = {
    "TLSv1.2+": (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.MAXIMUM_SUPPORTED),
    "TLSv1.3+": (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.MAXIMUM_SUPPORTED),
    "TLSv1.2": (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2),
    "TLSv1.3": (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_3),
}


class TlsError(Exception):
    """The [tls] files cannot be used (missing, unreadable, key does not match)."""


def _build(cfg: TlsConfig, server: bool) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version, ctx.maximum_version = _VERSIONS[cfg.method]
    if cfg.cipher_list:
        ctx.set_ciphers(cfg.cipher_list)
    if cfg.certificate is not None and cfg.private_key is not None:
        ctx.load_cert_chain(cfg.certificate, cfg.private_key)
    if cfg.ca_list is not None:
        ctx.load_verify_locations(cafile=cfg.ca_list)
    else:
        ctx.load_default_certs(ssl.Purpose.CLIENT_AUTH if server else ssl.Purpose.SERVER_AUTH)
    if server:
        if cfg.require_certificate:
            ctx.verify_mode = ssl.CERT_REQUIRED
        elif cfg.verify_certificate and cfg.ca_list is not None:
            ctx.verify_mode = ssl.CERT_OPTIONAL  # a certificate sent must verify
        else:
            ctx.verify_mode = ssl.CERT_NONE
    else:
        ctx.check_hostname = cfg.verify_certificate
        ctx.verify_mode = ssl.CERT_REQUIRED if cfg.verify_certificate else ssl.CERT_NONE
    return ctx


class TlsContexts:
    """The server and client contexts, rebuilt by ``reload``."""

    def __init__(self, cfg: TlsConfig) -> None:
        self.cfg = cfg
        self.reloads = 0
        self.server, self.client = self._load(cfg)
        # What listeners are given: its SNI callback swaps in ``self.server``,
        # so a reload reaches new handshakes without touching the listeners.
        self.front = _build(cfg, server=True) if cfg.certificate is not None else self.server
        self.front.sni_callback = self._pick

    @staticmethod
    def _load(cfg: TlsConfig) -> tuple[ssl.SSLContext, ssl.SSLContext]:
        try:
            return _build(cfg, server=True), _build(cfg, server=False)
        except (OSError, ssl.SSLError, ValueError) as e:
            raise TlsError(f"[tls]: {describe_tls_error(e)}") from None

    def _pick(self, conn: ssl.SSLObject, name: str | None, _ctx: ssl.SSLContext) -> None:
        if self.server is not _ctx:
            conn.context = self.server
        return None

    def reload(self, cfg: TlsConfig) -> None:
        """Reread the files; on error keep the old contexts and raise TlsError."""
        server, client = self._load(cfg)
        if cfg.require_certificate != self.cfg.require_certificate:
            # OpenSSL keeps the verify mode of the context a handshake began with.
            self.front.verify_mode = server.verify_mode
        self.server, self.client, self.cfg = server, client, cfg
        self.reloads += 1


def describe_tls_error(e: BaseException) -> str:
    """One line for a log: the OpenSSL reason when there is one."""
    if isinstance(e, ssl.SSLCertVerificationError):
        return f"certificate verify failed: {e.verify_message}"
    if isinstance(e, ssl.SSLError) and e.reason:
        return f"{e.reason.lower().replace('_', ' ')} ({e.library or 'ssl'})"
    if isinstance(e, TimeoutError):
        return "handshake timed out"
    if isinstance(e, ConnectionError):
        return f"connection lost during the handshake ({type(e).__name__})"
    return str(e) or type(e).__name__
