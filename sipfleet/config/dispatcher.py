"""``[dispatcher]``: the dispatcher's typed configuration; ``to_settings()``
gives the Dispatcher its plain ``DispatcherSettings``.

Names follow Kamailio's module parameters where one exists (``ds_`` prefix
dropped). Defaults are Kamailio's except where sipfleet deliberately differs,
said per field: probing runs out of the box (``ping_interval`` 10) for the
destinations flagged for it (P, flag 8; ``probing_mode`` 3), and
failover candidates are always computed.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from sipfleet.dispatch.flags import parse_mark_state
from sipfleet.dispatch.settings import ALGORITHMS, DispatcherSettings, ReplyCodes
from sipfleet.sip.errors import BadMessage
from sipfleet.sip.uri import parse_uri

__all__ = ["DispatcherConfig"]


class DispatcherConfig(BaseModel):
    """``[dispatcher]``: algorithms, failover, probing, reload."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    algorithm: int = Field(4, description="default algorithm id (Kamailio ds_select_dst alg)")
    use_default: bool = Field(
        False, description="reserve each set's last entry as fallback (Kamailio use_default)"
    )
    failover: bool = Field(
        True,
        description="compute failover candidates after the pick (Kamailio flags bit 2; "
        "Kamailio's default is off)",
    )
    hash_user_only: bool = Field(
        False, description="URI hashing uses only the user part (Kamailio flags bit 1)"
    )
    consistent_hash: bool = Field(
        False,
        description="sipfleet: hash algorithms 0-3, 5 and 7 use rendezvous hashing, so a "
        "lost destination's calls spread evenly and no other call moves",
    )
    ping_interval: float = Field(
        10.0, ge=0, description="seconds between OPTIONS rounds, 0 = off (Kamailio default 0)"
    )
    ping_timeout: float = Field(
        32.0,
        gt=0,
        description="a probe unanswered this long no longer holds back the next one "
        "(RFC 3261 Timer F = 64*T1)",
    )
    probe_timeout: float = Field(
        0.8,
        gt=0,
        le=32,
        description="sipfleet: a probe without a final reply after this many seconds "
        "failed (Kamailio waits for tm's fr_timer, 30 s by default); keep it under 1 s "
        "so a dead destination goes inactive within ping_interval x threshold + 1 s",
    )
    ping_method: str = Field("OPTIONS", min_length=1, description="probe method")
    ping_from: str = Field("sip:dispatcher@localhost", description="From URI of probes")
    probing_mode: Annotated[int, Field(ge=0, le=3)] = Field(
        3,
        description="0 probe P-flagged entries (flag 8; dropped after a reply, as in "
        "Kamailio), 1 all, 2 inactive P-flagged, 3 P-flagged, kept: continuous health "
        "checks of the destinations flagged for them (Kamailio's default is 0)",
    )
    probing_threshold: int = Field(1, ge=1, description="failed probes before inactive")
    inactive_threshold: int = Field(1, ge=1, description="answered probes before active again")
    ping_reply_codes: str = Field(
        "", description="replies accepted besides 2xx, e.g. 'code=404;class=3'"
    )
    ping_latency_stats: bool = Field(
        True,
        description="keep probe latency statistics; dispatcher.list shows them as LATENCY "
        "(Kamailio ds_ping_latency_stats, off there by default)",
    )
    list_runtime: bool = Field(
        True,
        description="sipfleet: dispatcher.list shows each destination's active calls as "
        "RUNTIME {DLGLOAD} (Kamailio shows it only with ds_hash_size > 0); with this and "
        "ping_latency_stats off the listing is Kamailio's default shape, byte for byte",
    )
    latency_estimator_alpha: int = Field(
        900,
        gt=0,
        lt=1000,
        description="per-mille weight of the old estimate in EST (Kamailio "
        "ds_latency_estimator_alpha; 900 = new sample weighs 0.1)",
    )
    reload_delta: float = Field(
        5.0, ge=0, description="seconds between reload/add/remove, 0 = no limit"
    )
    failover_codes: list[int] = Field(
        default_factory=lambda: [408, 500, 502, 503, 504],
        description="final replies that move a call to the next candidate (408 = timeout)",
    )
    max_failover_attempts: int = Field(
        5, ge=0, le=64, description="candidates tried after the first one"
    )
    mark_on_failure: str = Field(
        "",
        description="state given to a destination whose branch failed with a failover code "
        "or timed out, in ds_mark_dst letters ('ip', 'tp'); empty = no marking",
    )
    skip_bad_destinations: bool = Field(
        False,
        description="load the good entries when some are malformed (Kamailio ds_load_mode 0); "
        "default refuses the whole load",
    )

    @field_validator("algorithm")
    @classmethod
    def _known_algorithm(cls, v: int) -> int:
        if v not in ALGORITHMS:
            known = ", ".join(str(a) for a in ALGORITHMS)
            raise ValueError(f"unknown algorithm {v} (known: {known})")
        return v

    @field_validator("ping_from")
    @classmethod
    def _sip_uri(cls, v: str) -> str:
        try:
            uri = parse_uri(v)
        except BadMessage as exc:
            raise ValueError(f"not a SIP URI: {exc.reason}") from None
        if uri.scheme not in ("sip", "sips"):
            raise ValueError("must be a sip: or sips: URI")
        return v

    @field_validator("ping_reply_codes")
    @classmethod
    def _reply_codes(cls, v: str) -> str:
        ReplyCodes(v)
        return v

    @field_validator("failover_codes")
    @classmethod
    def _codes(cls, v: list[int]) -> list[int]:
        for code in v:
            if not 300 <= code < 700:
                raise ValueError(f"failover code {code} is not a final failure (300..699)")
        return v

    @field_validator("mark_on_failure")
    @classmethod
    def _mark(cls, v: str) -> str:
        parse_mark_state(v)
        return v

    def to_settings(self) -> DispatcherSettings:
        """The plain settings the Dispatcher runs on."""
        fields = self.model_dump()
        fields["failover_codes"] = tuple(self.failover_codes)
        return DispatcherSettings(**fields)
