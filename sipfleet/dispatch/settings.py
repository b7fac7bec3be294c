"""The dispatcher's and the routing policy's settings at run time: plain frozen
objects, built from the typed config (``sipfleet.config``) by ``to_settings()``.

    ALGORITHMS         the algorithm ids Kamailio knows (ds_select_dst)
    ReplyCodes         parsed ``ping_reply_codes`` (ds_ping_reply_codes)
    DispatcherSettings ``[dispatcher]``
    RouteSpec          one ``[[route]]``, with its MatchSpec (and HeaderSpec)
    DiscoverySettings  one ``[[discovery]]`` entry

No pydantic here: the modules mypyc compiles read these, and validation has
already happened when the config was loaded.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "ALGORITHMS",
    "DiscoverySettings",
    "DispatcherSettings",
    "HeaderSpec",
    "MatchSpec",
    "ReplyCodes",
    "RouteSpec",
]

#: Algorithm ids Kamailio knows (ds_select_dst), 14 from 6.1 and 64 from 6.0.
ALGORITHMS: dict[int, str] = {
    0: "hash Call-ID",
    1: "hash From URI",
    2: "hash To URI",
    3: "hash R-URI",
    4: "round-robin",
    5: "hash auth username",
    6: "random",
    7: "hash configured string",
    8: "serial",
    9: "weight",
    10: "call-load",
    11: "relative weight",
    12: "parallel",
    13: "latency",
    14: "round-robin or serial",
    64: "round-robin with overload control",
}


class ReplyCodes:
    """Accepted OPTIONS replies besides 2xx: Kamailio's ``ds_ping_reply_codes``.

    Syntax ``code=404;class=3``: ``code`` is 100..699, ``class`` 1..6 (a
    whole class). Raises ValueError on anything else (Kamailio ignores it).
    """

    __slots__ = ("classes", "codes", "text")

    def __init__(self, text: str = "") -> None:
        self.text = text
        codes: set[int] = set()
        classes: set[int] = set()
        for part in text.split(";"):
            if not part.strip():
                continue
            name, eq, value = part.partition("=")
            key = name.strip().lower()
            try:
                n = int(value.strip())
            except ValueError:
                raise ValueError(
                    f"ping reply code {part.strip()!r}: value is not a number"
                ) from None
            if not eq or key not in ("code", "class"):
                raise ValueError(f"ping reply code {part.strip()!r}: expected code=N or class=N")
            if key == "code":
                if not 100 <= n < 700:
                    raise ValueError(f"ping reply code {n} out of range 100..699")
                codes.add(n)
            else:
                if not 1 <= n < 7:
                    raise ValueError(f"ping reply class {n} out of range 1..6")
                classes.add(n)
        self.codes = frozenset(codes)
        self.classes = frozenset(classes)

    def accepts(self, code: int) -> bool:
        """Whether a received reply counts as the destination answering.

        Any 2xx, or a configured code or class (``ds_ping_check_rplcode``).
        """
        return 200 <= code <= 299 or code in self.codes or code // 100 in self.classes

    def __repr__(self) -> str:
        return f"ReplyCodes({self.text!r})"


@dataclass(frozen=True, slots=True)
class DispatcherSettings:
    """``[dispatcher]`` for the Dispatcher; the fields and defaults of
    ``sipfleet.config.dispatcher.DispatcherConfig`` (documented there)."""

    algorithm: int = 4
    use_default: bool = False
    failover: bool = True
    hash_user_only: bool = False
    consistent_hash: bool = False
    ping_interval: float = 10.0
    ping_timeout: float = 32.0
    probe_timeout: float = 0.8
    ping_method: str = "OPTIONS"
    ping_from: str = "sip:dispatcher@localhost"
    probing_mode: int = 3
    probing_threshold: int = 1
    inactive_threshold: int = 1
    ping_reply_codes: str = ""
    ping_latency_stats: bool = True
    list_runtime: bool = True
    latency_estimator_alpha: int = 900
    reload_delta: float = 5.0
    failover_codes: tuple[int, ...] = (408, 500, 502, 503, 504)
    max_failover_attempts: int = 5
    mark_on_failure: str = ""
    skip_bad_destinations: bool = False

    def reply_codes(self) -> ReplyCodes:
        """The parsed ``ping_reply_codes``."""
        return ReplyCodes(self.ping_reply_codes)


@dataclass(frozen=True, slots=True)
class HeaderSpec:
    """A header whose value must match a regular expression (search)."""

    name: str
    value: str


@dataclass(frozen=True, slots=True)
class MatchSpec:
    """When a route applies: every given condition must hold; empty matches all."""

    ruri_user: str | None = None
    ruri_host: str | None = None
    header: HeaderSpec | None = None
    source: tuple[str, ...] = ()
    method: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """The ``[[route]]`` match as the config spells it (JSON-ready)."""
        header = self.header
        return {
            "ruri_user": self.ruri_user,
            "ruri_host": self.ruri_host,
            "header": None if header is None else {"name": header.name, "value": header.value},
            "source": list(self.source),
            "method": list(self.method),
        }


@dataclass(frozen=True, slots=True)
class RouteSpec:
    """One ``[[route]]`` rule; ``None`` and 0 defer to ``[dispatcher]``."""

    name: str
    sets: tuple[int, ...]
    match: MatchSpec = field(default_factory=MatchSpec)
    algorithm: int | None = None
    limit: int = 0
    failover_codes: tuple[int, ...] | None = None
    consistent_hash: bool | None = None
    hash_header: str | None = None
    retry_after: int = 5

    def as_dict(self) -> dict[str, Any]:
        """The rule as the config spells it (JSON-ready)."""
        codes = self.failover_codes
        return {
            "name": self.name,
            "match": self.match.as_dict(),
            "sets": list(self.sets),
            "algorithm": self.algorithm,
            "limit": self.limit,
            "failover_codes": None if codes is None else list(codes),
            "consistent_hash": self.consistent_hash,
            "hash_header": self.hash_header,
            "retry_after": self.retry_after,
        }


@dataclass(frozen=True, slots=True)
class DiscoverySettings:
    """One ``[[discovery]]`` entry: a set whose members are the records of a DNS
    name; fields as ``sipfleet.config.discovery.DiscoveryConfig`` (one of
    ``srv`` and ``a`` is set)."""

    set: int
    srv: str | None = None
    a: str | None = None
    port: int = 5060
    transport: Literal["udp", "tcp", "tls"] | None = None
    family: Literal["ipv4", "ipv6", "both"] = "ipv4"
    refresh: float = 30.0
    attrs: str = ""
    flags: int = 0
    priority: int = 0
    srv_weight: Literal["weight", "rweight", "off"] = "weight"
    drain_timeout: float = 600.0
    max_members: int = 1000

    @property
    def name(self) -> str:
        """The DNS name asked, without a trailing dot."""
        return (self.srv or self.a or "").strip().rstrip(".")

    @property
    def kind(self) -> Literal["SRV", "A"]:
        return "SRV" if self.srv is not None else "A"

    @property
    def label(self) -> str:
        """How logs and events name this entry."""
        return f"set {self.set} {self.kind} {self.name}"
