"""``[control]``: the RPC transports, validated once at load.

Defaults (every transport on)::

    [control]
    run_dir = ""                 # --run-dir / $SIPFLEET_RUN_DIR / /run/sipfleet / ...
    pretty = true                # Kamailio's tab-indented JSON layout

    [control.http]               # JSON-RPC: POST http://127.0.0.1:9060/RPC
    enabled = true
    host = "127.0.0.1"
    port = 9060
    token = ""                   # "Authorization: Bearer <token>"; needed off loopback
    allowed_hosts = []           # Host header names besides the bound address and localhost
    tls_cert = ""                # both set: HTTPS
    tls_key = ""

    [control.fifo]               # JSON-RPC FIFO, as `kamctl rpc` speaks it
    enabled = true
    path = ""                    # <run_dir>/sipfleet_rpc.fifo
    reply_dir = "/tmp/"          # where kamctl makes its reply pipe

    [control.dgram]              # JSON-RPC datagrams, as kamcli's socket transport
    enabled = true
    path = ""                    # <run_dir>/sipfleet_rpc.sock
    udp = ""                     # e.g. "127.0.0.1:9062"

    [control.binrpc]             # BINRPC, as kamcmd speaks it
    enabled = true
    path = ""                    # <run_dir>/sipfleet_ctl
    tcp = ""                     # e.g. "127.0.0.1:2049"
    udp = ""                     # e.g. "127.0.0.1:2046" (kamcmd -s udp:...)

    [control.socket]             # unix sockets and the FIFO
    mode = 0o600
    owner = ""                   # user name or uid
    group = ""                   # group name or gid

BINRPC, datagram and FIFO callers are not authenticated (as in Kamailio):
their UDP/TCP forms refuse non-loopback addresses unless
``allow_remote_unauthenticated`` is set.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

__all__ = [
    "MIN_TOKEN_LENGTH",
    "BinrpcConfig",
    "ControlConfig",
    "DgramConfig",
    "FifoConfig",
    "HttpConfig",
    "McpConfig",
    "SocketConfig",
    "is_loopback",
    "parse_hostport",
]


_HOST_PORT = re.compile(r"(\[[0-9a-f:.]+\]|[a-z0-9_.-]+)(:[0-9]{1,5})?")
MIN_TOKEN_LENGTH = 16
"""Shortest HTTP bearer token accepted (a short one is guessed by brute force)."""


def is_loopback(host: str) -> bool:
    """True for loopback literals and "localhost"; other names are not trusted."""
    if host.lower() in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_hostport(value: str) -> tuple[str, int]:
    """Split "127.0.0.1:9062", "[::1]:9062" or "localhost:9062" into (host, port)."""
    value = value.strip()
    if value.startswith("["):
        host, sep, port = value[1:].partition("]:")
    else:
        host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected HOST:PORT, got {value!r}")
    return host, int(port)


def _opt_path(value: object) -> object:
    return None if value in ("", None) else value


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HttpConfig(_Section):
    """``[control.http]``: JSON-RPC 2.0 over HTTP POST, as Kamailio's jsonrpcs + xhttp."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)  # the token

    enabled: bool = True
    host: str = Field("127.0.0.1", description="bind address; off loopback a token is required")
    port: Annotated[int, Field(ge=0, le=65535)] = Field(9060, description="0 = any free port")
    path: str = Field("/RPC", description="POST path (any path starting with it)")
    token: SecretStr | None = Field(
        None,
        description=f"require 'Authorization: Bearer <token>'; at least {MIN_TOKEN_LENGTH} "
        "characters, no whitespace",
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="other names clients may use in the Host header, e.g. "
        '"lb1.example.net" (any port) or "lb1.example.net:8443"; the bound address and '
        "localhost are always allowed (DNS rebinding)",
    )
    tls_cert: Path | None = Field(None, description="PEM certificate: serve HTTPS")
    tls_key: Path | None = Field(None, description="its PEM key")

    _empty_none = field_validator("token", "tls_cert", "tls_key", mode="before")(_opt_path)

    @field_validator("token")
    @classmethod
    def _strong_token(cls, v: SecretStr | None) -> SecretStr | None:
        if v is None:
            return v
        secret = v.get_secret_value()
        if any(c.isspace() or not c.isprintable() for c in secret):
            raise ValueError(
                "must not contain whitespace or control characters "
                "(it is sent as 'Authorization: Bearer <token>')"
            )
        if len(secret) < MIN_TOKEN_LENGTH:
            raise ValueError(
                f"{len(secret)} characters is too short to be guess-proof; "
                f"use at least {MIN_TOKEN_LENGTH} (e.g. the output of "
                "'python3 -c \"import secrets; print(secrets.token_urlsafe(24))\"')"
            )
        return v

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, v: list[str]) -> list[str]:
        out = []
        for entry in v:
            name = entry.strip().lower()
            m = _HOST_PORT.fullmatch(name)
            if m is None or (m.group(2) and int(m.group(2)[1:]) > 65535):
                raise ValueError(
                    f"{entry!r} is not HOST or HOST:PORT (e.g. lb1.example.net, [::1]:9060)"
                )
            out.append(name)
        return out

    @model_validator(mode="after")
    def _check(self) -> HttpConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("control.http: set both tls_cert and tls_key, or neither")
        if not self.path.startswith("/"):
            raise ValueError("control.http.path must start with '/'")
        if self.enabled and not is_loopback(self.host) and not self.token:
            raise ValueError(
                f"control.http: refusing to serve RPC on non-loopback address {self.host!r} "
                "without a token; set control.http.token (callers send "
                "'Authorization: Bearer <token>') or bind 127.0.0.1"
            )
        return self


class FifoConfig(_Section):
    """``[control.fifo]``: JSON-RPC over a named pipe, as ``kamctl rpc`` speaks it."""

    enabled: bool = True
    path: Path | None = Field(None, description="default <run_dir>/sipfleet_rpc.fifo")
    reply_dir: Path = Field(Path("/tmp/"), description="where clients create reply FIFOs")

    _empty_none = field_validator("path", mode="before")(_opt_path)


class DgramConfig(_Section):
    """``[control.dgram]``: JSON-RPC datagrams, as kamcli's socket transport."""

    enabled: bool = True
    path: Path | None = Field(None, description="default <run_dir>/sipfleet_rpc.sock")
    udp: str | None = Field(None, description='also on UDP, e.g. "127.0.0.1:9062"')

    _empty_none = field_validator("path", "udp", mode="before")(_opt_path)

    @field_validator("udp")
    @classmethod
    def _hostport(cls, v: str | None) -> str | None:
        if v is not None:
            parse_hostport(v)
        return v


class BinrpcConfig(_Section):
    """``[control.binrpc]``: Kamailio's BINRPC, as ``kamcmd -s unix:PATH`` speaks it."""

    enabled: bool = True
    path: Path | None = Field(None, description="default <run_dir>/sipfleet_ctl")
    tcp: str | None = Field(None, description='also on TCP, e.g. "127.0.0.1:2049"')
    udp: str | None = Field(
        None, description='also on UDP (kamcmd -s udp:HOST:PORT), e.g. "127.0.0.1:2046"'
    )

    _empty_none = field_validator("path", "tcp", "udp", mode="before")(_opt_path)

    @field_validator("tcp", "udp")
    @classmethod
    def _hostport(cls, v: str | None) -> str | None:
        if v is not None:
            parse_hostport(v)
        return v


class SocketConfig(_Section):
    """``[control.socket]``: ownership of the unix sockets and the FIFO."""

    mode: Annotated[int, Field(ge=0, le=0o777)] = Field(
        0o600, description="file mode (decimal here; 384 = 0o600)"
    )
    owner: str | int | None = Field(None, description="user name or uid")
    group: str | int | None = Field(None, description="group name or gid")

    _empty_none = field_validator("owner", "group", mode="before")(_opt_path)

    @field_validator("mode", mode="before")
    @classmethod
    def _octal(cls, v: object) -> object:
        # TOML has 0o600 but people write "0600" or "600" too.
        if isinstance(v, str):
            return int(v, 8)
        return v


class McpConfig(_Section):
    """``[control.mcp]``: the MCP server for AI agents (/mcp over HTTP; ``sipfleet mcp``).

    Streamable HTTP at /mcp on the control HTTP server (same token rule);
    ``sipfleet mcp -c FILE`` on stdio reads the guard rails from here too.
    """

    enabled: bool = Field(True, description="serve MCP at <control.http>/mcp")
    max_out_share: Annotated[float, Field(gt=0.0, le=1.0)] = Field(
        0.5,
        description="an MCP tool may leave at most this share of a set's destinations unusable "
        "(drained, disabled, inactive, removed) unless called with force",
    )
    max_wait: Annotated[float, Field(gt=0.0)] = Field(
        3600.0, description="longest drain wait (s) a tool call may ask for"
    )
    max_sessions: Annotated[int, Field(ge=1)] = Field(
        32, description="concurrent MCP sessions over HTTP; more get 503"
    )
    session_idle_timeout: Annotated[float, Field(gt=0.0)] = Field(
        600.0, description="an HTTP MCP session idle this long (s) is closed"
    )


class ControlConfig(_Section):
    """``[control]``: the RPC transports; all on by default."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)  # the token

    run_dir: Path | None = Field(
        None,
        description="where the sockets go: --run-dir, $SIPFLEET_RUN_DIR, /run/sipfleet if "
        "writable, $XDG_RUNTIME_DIR/sipfleet, else /tmp/sipfleet-<uid>",
    )
    pretty: bool = Field(True, description="tab-indented JSON, as Kamailio")
    max_request_bytes: Annotated[int, Field(ge=1024)] = 1 << 20
    """One request's bound on every transport (1 MiB: a request is a method
    name and a few params; this keeps a stuck or hostile client cheap)."""
    max_connections: Annotated[int, Field(ge=1)] = 64
    """Concurrent BINRPC stream connections (ctl's own bound is 128)."""
    allow_remote_unauthenticated: bool = Field(
        False, description="let BINRPC/datagram/FIFO listen off loopback (no authentication)"
    )
    own_thread: bool = Field(
        True,
        description="serve the transports (accept, read, parse, encode) on a loop of their own "
        "in a thread, off the SIP loop; methods still run on the SIP loop, bounded below",
    )
    cpu_share: float = Field(
        0.25,
        gt=0,
        le=1,
        description="with own_thread: the most of one CPU the control thread may use; it "
        "pauses (without the GIL) beyond, so an RPC storm slows itself, not SIP",
    )
    max_inflight: int = Field(
        16, ge=1, le=4096, description="RPC method calls running on the SIP loop at once"
    )
    max_queued: int = Field(
        1024,
        ge=0,
        le=1_000_000,
        description="calls waiting for a slot; beyond, the call is answered 503 "
        "'Server Busy' at once (HTTP status 503), counted",
    )
    http: HttpConfig = HttpConfig()
    fifo: FifoConfig = FifoConfig()
    dgram: DgramConfig = DgramConfig()
    binrpc: BinrpcConfig = BinrpcConfig()
    socket: SocketConfig = SocketConfig()
    mcp: McpConfig = McpConfig()

    _empty_none = field_validator("run_dir", mode="before")(_opt_path)

    @model_validator(mode="after")
    def _check_remote(self) -> ControlConfig:
        if self.allow_remote_unauthenticated:
            return self
        for name, addr in (
            ("dgram.udp", self.dgram.udp),
            ("binrpc.tcp", self.binrpc.tcp),
            ("binrpc.udp", self.binrpc.udp),
        ):
            if addr is not None and not is_loopback(parse_hostport(addr)[0]):
                raise ValueError(
                    f"control.{name}: {addr!r} is not a loopback address and this transport "
                    "has no authentication; bind 127.0.0.1 or set "
                    "control.allow_remote_unauthenticated = true"
                )
        return self
