"""Which source addresses are trunks: ``[[trunk]]`` CIDRs, optional port and
transport (Kamailio's ``permissions`` ``allow_source_address``)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from sipfleet.security.settings import TrunkSpec

__all__ = ["TrunkTable"]

_Net = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrunkTable:
    """Match a source to its trunk; answers are cached per source (bounded)."""

    MAX_CACHE = 65536  # sources remembered; the cache is emptied when full

    def __init__(self, trunks: Sequence[TrunkSpec]) -> None:
        self.trunks = tuple(trunks)
        self._nets: list[tuple[_Net, TrunkSpec]] = [
            (ipaddress.ip_network(cidr, strict=False), t)
            for t in self.trunks
            for cidr in t.networks
        ]
        # With no port or transport rule the host alone decides: cache by host.
        self._by_host = all(t.port is None and t.transport is None for t in self.trunks)
        self._cache: dict[object, TrunkSpec | None] = {}

    def __bool__(self) -> bool:
        return bool(self.trunks)

    def match(self, host: str, port: int, proto: str) -> TrunkSpec | None:
        if not self.trunks:
            return None
        key: object = host if self._by_host else (host, port, proto)
        cache = self._cache
        if key in cache:
            return cache[key]
        found = self._lookup(host, port, proto)
        if len(cache) >= self.MAX_CACHE:
            cache.clear()
        cache[key] = found
        return found

    def _lookup(self, host: str, port: int, proto: str) -> TrunkSpec | None:
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            return None
        for net, trunk in self._nets:
            if ip.version != net.version or ip not in net:
                continue
            if trunk.port is not None and trunk.port != port:
                continue
            if trunk.transport is not None and trunk.transport != proto:
                continue
            return trunk
        return None
