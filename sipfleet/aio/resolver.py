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

__all__ = ["resolve_all", "resolve_destination", "resolve_host"]

#: Addresses kept per name (a name with hundreds of records is not a back end).
MAX_ADDRESSES = 64

log = logging.getLogger("sipfleet.dns")


def resolve_all(host: str) -> list[str]:
    """Every address of ``host``, IPv4 first, in the resolver's order (an IP
    literal is returned as is); [] when it does not resolve."""
    try:
        ipaddress.ip_address(host)
        return [host]
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_DGRAM)
    except OSError as e:
        log.warning("cannot resolve %s: %s", host, e)
        return []
    out: list[str] = []
    for family in (socket.AF_INET, socket.AF_INET6):
        for info in infos:
            ip = str(info[4][0])
            if info[0] == family and ip not in out:
                out.append(ip)
    return out[:MAX_ADDRESSES]


def resolve_host(host: str) -> str | None:
    """An IP address for ``host`` (an IP literal is returned as is)."""
    ips = resolve_all(host)
    return ips[0] if ips else None


def resolve_destination(host: str, port: int | None, transport: str) -> Address | None:
    """The dispatcher's Resolver: A/AAAA of the host, default port by transport.

    Requests go to the first address, as in Kamailio; the others are kept in
    ``Address.others`` so requests from any of them count as from this back
    end. To send to every address of a name, make it a ``[[discovery]]``
    entry (``a = NAME``): one destination per address.
    """
    ips = resolve_all(host)
    if not ips:
        return None
    return Address(
        ips[0], port or (5061 if transport == "tls" else 5060), transport, tuple(ips[1:])
    )
