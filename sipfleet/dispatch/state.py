"""Runtime state of one destination, kept apart from its immutable config.

Health (active / trying / inactive) comes from probing and marking; admin
state from the operator. Together with the probing bit they map one to one
onto Kamailio's state bits I, T, D, P, which is how every Kamailio rule is
written (``flags()`` / ``set_flags()``). A destination is skipped by
selection while inactive or not enabled by the admin.

Latency statistics follow ``latency_stats_update`` in Kamailio's dispatch.c:
Welford's online mean and standard deviation, an EWMA estimate, the maximum
and a count of probe timeouts. Overload-control data (RFC 7339, algorithm 64)
follows ``ds_ocdata_t``.
"""

from __future__ import annotations

import enum
import math
import random

from sipfleet.dispatch.destination import Address, Destination
from sipfleet.dispatch.flags import DS_DISABLED, DS_INACTIVE, DS_PROBING, DS_STATE_BITS, DS_TRYING

__all__ = ["AdminState", "DestState", "Health", "LatencyStats", "OverloadState"]


class Health(enum.Enum):
    """What probing (or marking) last said about a destination."""

    ACTIVE = "active"
    TRYING = "trying"  # failing but below ds_probing_threshold: still selected
    INACTIVE = "inactive"


class AdminState(enum.Enum):
    """What the operator said.

    DRAINING (sipfleet's own): no new calls, the calls on it finish, probing
    goes on. Kamailio's state bits have no such state: its ``flags()`` are
    those of an enabled destination (so probes and marks work as usual),
    while ``dispatcher.list`` shows it as D, since it takes no new calls.
    """

    ENABLED = "enabled"
    DISABLED = "disabled"
    DRAINING = "draining"


# Samples after which the mean becomes a running weighted mean (~24 days of
# 1 s probes), and the count Kamailio jumps to once the mean is stable.
_MAX_COUNT = 2097152
_TRAINING_COUNT = 10000


class LatencyStats:
    """Probe latency in ms: AVG, STD, EST (EWMA), MAX, MIN, TIMEOUT."""

    __slots__ = ("average", "count", "estimate", "m2", "max", "min", "stdev", "timeout")

    def __init__(self) -> None:
        self.min = 0
        self.max = 0
        self.average = 0.0
        self.stdev = 0.0
        self.estimate = 0.0
        self.m2 = 0.0
        self.count = 0
        self.timeout = 0

    def init(self, latency: int, count: int) -> None:
        """Seed the statistics (``latency_stats_init``); the timeout count stays."""
        self.stdev = 0.0
        self.m2 = 0.0
        self.max = latency
        self.min = latency
        self.average = float(latency)
        self.estimate = float(latency)
        self.count = count

    def update(self, latency: int, alpha: float) -> None:
        """Add one sample in ms; ``alpha`` is the weight of the old estimate."""
        if self.count < _MAX_COUNT:
            self.count += 1
        else:
            # Past the cap the sum of squares decays, making AVG/STD weighted.
            self.m2 -= self.m2 / (self.count or 1)
        if self.count == 1:
            self.init(latency, 1)
        # A stable average after 10 samples trains the estimator at once.
        if 10 < self.count < _TRAINING_COUNT and self.stdev < 0.5:
            self.count = _TRAINING_COUNT
        if self.min > latency:
            self.min = latency
        if self.max < latency:
            self.max = latency
        if self.count > 1:
            delta = latency - self.average
            self.average += delta / (self.count or 1)
            delta2 = latency - self.average
            self.m2 += delta * delta2
            self.stdev = math.sqrt(self.m2 / ((self.count - 1) or 1))
        if self.count < 10:
            self.estimate = self.average
        else:
            self.estimate = self.estimate * alpha + latency * (1 - alpha)

    def as_record(self) -> dict[str, float | int]:
        """The ``LATENCY`` block of ``dispatcher.list``."""
        return {
            "AVG": self.average,
            "STD": self.stdev,
            "EST": self.estimate,
            "MAX": self.max,
            "TIMEOUT": self.timeout,
        }


class OverloadState:
    """Overload control of one destination (RFC 7339, Kamailio 6.0 alg 64).

    While ``now < octime`` the destination is skipped for ``ocrate`` percent
    of picks, spread by a shuffled 100-slot table.
    """

    __slots__ = ("ocdist", "ocidx", "ocmax", "ocmin", "ocrate", "ocseq", "octime")

    def __init__(self, ocrate: int, ocmin: int, ocmax: int) -> None:
        self.ocrate = ocrate
        self.ocmin = ocmin
        self.ocmax = ocmax
        self.ocidx = 0
        self.ocseq = 0
        self.octime = 0.0
        self.ocdist: list[bool] = []

    def prepare(self, rng: random.Random) -> None:
        """Fill the table: ``ocrate`` skip slots, the rest use (``ds_oc_prepare``)."""
        dist = [False] * self.ocrate + [True] * (100 - self.ocrate)
        rng.shuffle(dist)
        self.ocdist = dist

    def skip(self, now: float) -> bool:
        """Whether this pick must skip the destination (``ds_oc_skip``)."""
        if self.octime < now or not self.ocdist:
            return False
        use = self.ocdist[self.ocidx]
        self.ocidx = (self.ocidx + 1) % 100
        return not use


_ENABLED = AdminState.ENABLED
_DISABLED = AdminState.DISABLED


class DestState:
    """Mutable runtime state of one destination.

    Shared, not copied, between snapshots: a reload hands the same object to
    the new snapshot when the destination remains, so in-flight selections
    on the old snapshot and new ones see the same health.
    """

    __slots__ = (
        "_latency",
        "admin",
        "admin_by",
        "admin_since",
        "bits",
        "config_flags",
        "config_rweight",
        "oc",
        "probe_sent_at",
        "probing_count",
        "resolved",
        "rweight",
        "skip",
    )

    def __init__(self, dest: Destination, resolved: Address | None = None) -> None:
        # Inlined set_flags(): a reload builds one of these per new entry.
        flags = dest.flags
        bits = flags & (DS_INACTIVE | DS_TRYING | DS_PROBING)  # I, T and P
        if bits & DS_INACTIVE:
            bits &= ~DS_TRYING
        self.bits = bits
        self.admin = _DISABLED if flags & DS_DISABLED else _ENABLED
        self.admin_since: float | None = None  # wall-clock time of the last admin change
        self.admin_by = ""
        self.skip = bool(flags & (DS_INACTIVE | DS_DISABLED))
        self.probing_count = 0
        self.config_flags = flags & DS_STATE_BITS
        attrs = dest.attrs
        # runtime rweight: congestion control (cc=1) lowers it
        self.config_rweight = self.rweight = attrs.rweight
        self._latency: LatencyStats | None = None
        if attrs.latency is not None:
            # An initial estimate counts as a trained estimator (ds_set_attrs).
            self.latency.init(attrs.latency, _TRAINING_COUNT)
        self.oc: OverloadState | None = None
        #: Address a resolver found for a host name (IP literals need none).
        self.resolved = resolved
        self.probe_sent_at: float | None = None

    @property
    def latency(self) -> LatencyStats:
        if self._latency is None:
            self._latency = LatencyStats()
        return self._latency

    @property
    def has_latency(self) -> bool:
        return self._latency is not None

    @property
    def health(self) -> Health:
        if self.bits & DS_INACTIVE:
            return Health.INACTIVE
        if self.bits & DS_TRYING:
            return Health.TRYING
        return Health.ACTIVE

    @property
    def probing(self) -> bool:
        return bool(self.bits & DS_PROBING)

    @property
    def usable(self) -> bool:
        return not self.skip

    @property
    def skip_admin(self) -> bool:
        """Draining: enabled as far as Kamailio's bits go, yet no new calls."""
        return self.admin is AdminState.DRAINING

    def flags(self) -> int:
        """Kamailio's state bits I, T, D, P for this destination."""
        return self.bits | (DS_DISABLED if self.admin is _DISABLED else 0)

    def set_flags(self, flags: int) -> None:
        """Overwrite the state from Kamailio bits (I wins over T, as when printed)."""
        bits = flags & (DS_INACTIVE | DS_TRYING | DS_PROBING)
        if bits & DS_INACTIVE:
            bits &= ~DS_TRYING
        self.bits = bits
        if flags & DS_DISABLED:
            self.admin = _DISABLED
        elif self.admin is _DISABLED:
            self.admin = _ENABLED
        self.skip = bool(bits & DS_INACTIVE) or self.admin is not _ENABLED

    def set_admin(self, admin: AdminState) -> None:
        self.admin = admin
        self.skip = bool(self.bits & DS_INACTIVE) or admin is not _ENABLED

    def __repr__(self) -> str:
        return f"DestState({self.health.value}, {self.admin.value}, probing={self.probing})"
