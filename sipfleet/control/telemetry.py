"""What the metrics and the dashboard need beyond the core's own counters.

The core counts requests, replies, transactions, dialogs and, per
destination, routed calls and branch outcomes (``Proxy.stats``,
``DispatchRouter.counts``); the metrics read those at scrape time. What is
left is fed here by the process around the core: OPTIONS probe results per
destination (a latency histogram), reloads and how long they took, and the
event loop's lag. Every table is bounded: probe records by the destinations
loaded (pruned when they outgrow them), histograms by their buckets.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

from sipfleet.dispatch.destination import StateKey

__all__ = [
    "LAG_BUCKETS",
    "PROBE_BUCKETS",
    "RELOAD_BUCKETS",
    "Histogram",
    "ProbeRecord",
    "Telemetry",
]

#: Upper bounds in seconds (Prometheus ``le``); +Inf is implicit.
PROBE_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
RELOAD_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0)
LAG_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)

#: The estimate of a destination's probe latency: this much of the old value
#: stays at each new sample (Kamailio's ds_latency_estimator_alpha default).
_ALPHA = 0.9


class Histogram:
    """Counts per bucket, their sum and count: what a Prometheus histogram holds."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """``[(le, count of samples <= le), ..., ("+Inf", count)]``."""
        out: list[tuple[str, int]] = []
        total = 0
        for bound, n in zip((*(repr(b) for b in self.bounds), "+Inf"), self.counts, strict=True):
            total += n
            out.append((bound, total))
        return out


class ProbeRecord:
    """OPTIONS probes of one destination: replies by class, timeouts, latency."""

    __slots__ = ("estimate", "last", "latency", "results")

    def __init__(self) -> None:
        self.latency = Histogram(PROBE_BUCKETS)
        self.results: Counter[str] = Counter()  # "2xx" ... "6xx", "timeout"
        self.last: float | None = None  # seconds, the last reply's round trip
        self.estimate: float | None = None  # seconds, a moving average of them

    def add(self, code: int | None, rtt: float | None) -> None:
        if code is None or rtt is None:
            self.results["timeout"] += 1
            return
        self.results[f"{min(max(code // 100, 1), 6)}xx"] += 1
        self.latency.observe(rtt)
        self.last = rtt
        est = self.estimate
        self.estimate = rtt if est is None else est * _ALPHA + rtt * (1 - _ALPHA)


class Telemetry:
    """One per process; ``loaded`` lists the keys of the destinations loaded now."""

    def __init__(self, loaded: Callable[[], Iterable[StateKey]]) -> None:
        self._loaded = loaded
        self.probes: dict[StateKey, ProbeRecord] = {}
        self._prune_at = 64
        self.reloads: Counter[str] = Counter()  # "ok", "failed"
        self.reload_seconds = Histogram(RELOAD_BUCKETS)
        self.loop_lag = Histogram(LAG_BUCKETS)
        self.loop_lag_last = 0.0

    def probe(self, key: StateKey, code: int | None, rtt: float | None) -> None:
        """A probe of destination ``key`` got ``code`` after ``rtt`` s (None: no answer)."""
        rec = self.probes.get(key)
        if rec is None:
            if len(self.probes) >= self._prune_at:
                self.prune()
            rec = self.probes[key] = ProbeRecord()
        rec.add(code, rtt)

    def prune(self) -> None:
        """Forget the destinations no longer loaded."""
        loaded = set(self._loaded())
        for key in [k for k in self.probes if k not in loaded]:
            del self.probes[key]
        self._prune_at = 2 * len(loaded) + 64

    def reloaded(self, ok: bool, seconds: float) -> None:
        self.reloads["ok" if ok else "failed"] += 1
        self.reload_seconds.observe(seconds)

    def lag(self, seconds: float) -> None:
        """The loop ran a timer ``seconds`` late."""
        seconds = max(seconds, 0.0)
        self.loop_lag.observe(seconds)
        self.loop_lag_last = seconds
