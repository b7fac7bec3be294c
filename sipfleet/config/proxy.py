"""``[proxy]`` and ``[tls]``: where sipfleet listens (``ListenSpec``), how it
proxies, and the certificates of ``tls:`` listeners and back ends."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator

from sipfleet.config.base import Model

__all__ = ["ListenSpec", "ProxyConfig", "TlsConfig"]


class ListenSpec(Model):
    proto: Literal["udp", "tcp", "tls"]
    host: str
    port: int = Field(5060, ge=1, le=65535)
    advertise: str | None = None

    @classmethod
    def parse(cls, text: str) -> ListenSpec:
        """``udp:127.0.0.1:5060``, ``tcp:[::1]:5060``, ``tls:0.0.0.0:5061``, ``udp:0.0.0.0`` ..."""
        proto, sep, rest = text.partition(":")
        proto = proto.lower()
        if not sep or proto not in ("udp", "tcp", "tls"):
            raise ValueError(
                f"listen address {text!r}: expected udp:HOST[:PORT], tcp:HOST[:PORT] or tls:HOST[:PORT]"
            )
        default_port = 5061 if proto == "tls" else 5060
        adv = None
        if "/" in rest:  # udp:0.0.0.0:5060/203.0.113.7 advertises a public name
            rest, adv = rest.split("/", 1)
        if rest.startswith("["):
            end = rest.find("]")
            if end < 0:
                raise ValueError(f"listen address {text!r}: unterminated [IPv6]")
            host, tail = rest[1:end], rest[end + 1 :]
            port = int(tail[1:]) if tail.startswith(":") else default_port
        else:
            host, _, p = rest.partition(":")
            port = int(p) if p else default_port
        return cls(proto=proto, host=host, port=port, advertise=adv)


class ProxyConfig(Model):
    """``[proxy]``: where sipfleet listens and how it proxies."""

    listen: list[ListenSpec] = Field(
        default_factory=lambda: [
            ListenSpec(proto="udp", host="127.0.0.1", port=5060),
            ListenSpec(proto="tcp", host="127.0.0.1", port=5060),
        ],
        description='listeners: "udp:HOST[:PORT]", "tcp:[::1]:5060", "tls:0.0.0.0:5061" '
        '(needs [tls] certificate), "udp:0.0.0.0:5060/203.0.113.7" (after / the name put '
        "in Via and Record-Route)",
    )
    aliases: list[str] = Field(
        default_factory=list, description="other host[:port] names of this proxy (Route matching)"
    )
    first_response_timeout: float = Field(
        2.0,
        gt=0,
        le=300,
        description="a back end silent this long (not even 100 Trying) is given up; the "
        "call fails over (Kamailio fr_timer)",
    )
    final_response_timeout: float = Field(
        120.0,
        gt=0,
        le=3600,
        description="after a provisional reply, how long to wait for the final one before "
        "CANCEL and failover (RFC 3261 Timer C, Kamailio fr_inv_timer)",
    )
    t1: float = Field(0.5, gt=0, le=10, description="RFC 3261 T1: RTT estimate (s)")
    t2: float = Field(4.0, gt=0, le=60, description="RFC 3261 T2: longest retransmit interval")
    t4: float = Field(5.0, gt=0, le=60, description="RFC 3261 T4: network lifetime of a message")
    max_forwards: int = Field(
        70, ge=1, le=255, description="Max-Forwards added to requests that have none"
    )
    record_route: bool = Field(
        True, description="Record-Route dialog-creating requests, so the dialog stays on us"
    )
    answer_options: bool = Field(
        True, description="answer OPTIONS sent to the proxy itself (carrier keep-alives)"
    )
    transform_503: bool = Field(
        True,
        description="a 503 from a back end goes up as 500 (RFC 3261 16.7 item 6); our own 503 "
        "(nothing usable) keeps its Retry-After",
    )
    max_message_size: int = Field(
        65536, ge=1024, le=1 << 20, description="bigger messages: 513 or dropped"
    )
    max_header_count: int = Field(256, ge=16, le=4096, description="more header lines: 400")
    max_line_length: int = Field(8192, ge=256, le=65536, description="longer header lines: 400")
    tcp_idle_timeout: float = Field(
        300.0, gt=0, description="close TCP/TLS connections silent this long (s)"
    )
    tcp_max_connections: int = Field(
        4096, ge=1, description="TCP/TLS connections in all, inbound and outbound"
    )
    tcp_max_connections_per_source: int = Field(
        256,
        ge=1,
        description="inbound TCP/TLS connections from one IP address; beyond, new ones are "
        "refused (one address cannot take every slot)",
    )
    tcp_outbound_reserve: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="share of tcp_max_connections only outbound connections (to back ends) "
        "may use: inbound ones are refused beyond the rest",
    )
    tcp_header_timeout: float = Field(
        10.0,
        gt=0,
        le=600,
        description="an inbound TCP/TLS connection must deliver a complete message within this "
        "long of connecting (or of its last complete message, once it has started another): "
        "slow-loris senders are closed (s)",
    )
    tcp_max_buffer: int = Field(
        1 << 20,
        ge=65536,
        description="bytes queued for sending on one connection (a peer that does not read); "
        "beyond, the connection is closed. Input is bounded by max_message_size",
    )
    shutdown_timeout: float = Field(
        600.0,
        ge=0,
        description="graceful stop (SIGTERM): new calls get 503, wait this long for open "
        "dialogs to end",
    )
    dialog_lifetime: float = Field(
        7200.0, gt=0, description="a dialog whose BYE never comes ends after this (s)"
    )
    route_secret: SecretStr | None = Field(
        None,
        description="key that signs our Record-Route values, so in-dialog requests of a "
        "dialog unknown here (after a restart, or set up by another node sharing the key) "
        "are still relayed; default: a random key kept in <run_dir>/route.key",
    )
    preloaded_route: Literal["remove", "refuse"] = Field(
        "remove",
        description="Route headers (other than ours) on out-of-dialog requests from sources "
        "that are not back ends: remove them (as Kamailio's stock config does) or refuse the "
        "request (403); never followed either way",
    )

    @field_validator("route_secret")
    @classmethod
    def _secret(cls, v: SecretStr | None) -> SecretStr | None:
        if v is not None and len(v.get_secret_value().strip()) < 16:
            raise ValueError("route_secret must be at least 16 characters (not blank)")
        return v

    @field_validator("listen", mode="before")
    @classmethod
    def _listen(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [s for s in v.replace(",", " ").split() if s]
        if isinstance(v, list):
            return [ListenSpec.parse(x) if isinstance(x, str) else x for x in v]
        return v


class TlsConfig(Model):
    """``[tls]``: certificates and policy for ``tls:`` listeners and TLS towards back
    ends; Kamailio's tls.cfg names. Reread on SIGHUP: new handshakes use the new
    files, established connections stay."""

    certificate: Path | None = Field(
        None, description="PEM certificate chain presented to peers (required by tls: listeners)"
    )
    private_key: Path | None = Field(None, description="its PEM private key")
    ca_list: Path | None = Field(
        None,
        description="PEM CA certificates trusted for peers' certificates (default: the system's)",
    )
    verify_certificate: bool = Field(
        True,
        description="verify the back end's certificate (and name) on outbound TLS, and a "
        "client's certificate when it sends one",
    )
    require_certificate: bool = Field(
        False, description="inbound TLS clients must present a certificate that verifies"
    )
    method: Literal["TLSv1.2+", "TLSv1.3+", "TLSv1.2", "TLSv1.3"] = Field(
        "TLSv1.2+", description="protocol versions: 'TLSv1.2+' is 1.2 or newer"
    )
    handshake_timeout: float = Field(
        5.0, gt=0, le=120, description="a TLS handshake must finish within this long (s)"
    )
    cipher_list: str | None = Field(
        None, description="OpenSSL cipher list for TLS 1.2 (default: OpenSSL's)"
    )
