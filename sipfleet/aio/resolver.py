"""Name resolution for destinations whose host is a DNS name.

The dispatcher resolves at load time (in the worker thread that builds the
snapshot, as Kamailio does unless a destination has flag 16); the answer is
cached here for the lifetime of the process unless it fails.
"""

from __future__ import annotations

import ipaddress
import logging
import socket

from sipfleet.dispatch.destination import Address

__all__ = ["resolve_destination", "resolve_host"]

log = logging.getLogger("sipfleet.dns")


def resolve_host(host: str) -> str | None:
    """An IP address for ``host`` (an IP literal is returned as is)."""
    try:
        ipaddress.ip_address(host)
        return host
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    except OSError as e:
        log.warning("cannot resolve %s: %s", host, e)
        return None
    for family in (socket.AF_INET, socket.AF_INET6):
        for info in infos:
            if info[0] == family:
                return str(info[4][0])
    return None


def resolve_destination(host: str, port: int | None, transport: str) -> Address | None:
    """The dispatcher's Resolver: A/AAAA of the host, default port by transport."""
    ip = resolve_host(host)
    if ip is None:
        return None
    return Address(ip, port or (5061 if transport == "tls" else 5060), transport)
