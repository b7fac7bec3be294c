"""Probing: which destinations get an OPTIONS when, and what a reply means.

One round every ``ping_interval`` (Kamailio's ``ds_ping_interval`` timer),
unless ``dispatcher.ping_active`` turned probing off; a destination whose
last probe is unanswered for less than ``ping_timeout`` is not probed again
in the next round. A reply goes through ``ds_options_callback``'s rules
(health.py) and, with ``ping_latency_stats``, the latency maths
(latency.py). The adapter sends the ``ProbeRequest``s and reports results.
"""

from __future__ import annotations

from collections.abc import Iterable

from sipfleet.dispatch.destination import Destination
from sipfleet.dispatch.health import (
    DstEvent,
    ProbeRequest,
    apply_state,
    probe_eligible,
    probe_result_state,
)
from sipfleet.dispatch.latency import update_latency
from sipfleet.dispatch.runtime import SetRun
from sipfleet.dispatch.settings import DispatcherSettings, ReplyCodes
from sipfleet.dispatch.state import DestState

__all__ = ["Prober"]


class Prober:
    """Probe rounds and the outcome of each probe."""

    __slots__ = ("_alpha", "_cfg", "_codes", "active", "next_round")

    _cfg: DispatcherSettings
    _codes: ReplyCodes
    _alpha: float

    def __init__(self, now: float) -> None:
        """The first round is due at ``now``; ``configure`` before use."""
        self.active = 1  # dispatcher.ping_active
        self.next_round = now

    def configure(self, cfg: DispatcherSettings, reply_codes: ReplyCodes, alpha: float) -> None:
        """Take settings (at start and on a SIGHUP); the round schedule stays.

        ``alpha`` is the weight of the old latency estimate.
        """
        self._cfg = cfg
        self._codes = reply_codes
        self._alpha = alpha

    def ping_active(self, value: int | None) -> dict[str, int]:
        """``dispatcher.ping_active``: read, or set and return old and new."""
        old = self.active
        if value is None:
            return {"OldPingState": old}
        self.active = value
        return {"NewPingState": value, "OldPingState": old}

    def next_at(self) -> float | None:
        """When ``due`` next has work, or None while probing is off."""
        if self._cfg.ping_interval <= 0 or not self.active:
            return None
        return self.next_round

    def due(self, runs: Iterable[SetRun], now: float) -> list[ProbeRequest]:
        """The OPTIONS to send now, stamping each destination's send time."""
        cfg = self._cfg
        if cfg.ping_interval <= 0 or not self.active or now < self.next_round:
            return []
        self.next_round = now + cfg.ping_interval
        mode, timeout = cfg.probing_mode, cfg.ping_timeout
        out: list[ProbeRequest] = []
        for run in runs:
            for d, st in zip(run.entries, run.states, strict=True):
                if not probe_eligible(st.flags(), d.flags, mode):
                    continue
                if st.probe_sent_at is not None and now - st.probe_sent_at < timeout:
                    continue
                st.probe_sent_at = now
                out.append(
                    ProbeRequest(
                        d, cfg.ping_method, d.attrs.ping_from or cfg.ping_from, d.attrs.obproxy, now
                    )
                )
        return out

    def on_result(
        self,
        run: SetRun,
        st: DestState,
        d: Destination,
        code: int | None,
        rtt: float | None,
        reason: str,
    ) -> list[DstEvent]:
        """Apply an OPTIONS outcome (``code`` None: a timeout or transport
        failure, always a failure); return dst-up/dst-down events."""
        cfg = self._cfg
        st.probe_sent_at = None
        if cfg.ping_latency_stats:
            update_latency(run, st, d, code, rtt, self._alpha)
        ok = code is not None and self._codes.accepts(code)
        state = probe_result_state(ok, st.flags(), cfg.probing_mode)
        if state is None:
            return []
        if not reason:
            reason = "probe timeout" if code is None else f"probe reply {code}"
        return apply_state(
            run, st, d, state, 0, reason, code, cfg.probing_threshold, cfg.inactive_threshold
        )
