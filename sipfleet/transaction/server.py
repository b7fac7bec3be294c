"""Server transactions (RFC 3261 17.2, RFC 6026).

Each machine is a table ``(state, event) -> (next state, actions)`` that can
be read against the RFC's figures 7 and 8 (with RFC 6026's Accepted state
for INVITE). Actions are small methods; the transaction never decides what
to answer, the transaction user (the proxy) does.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import IntEnum
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from sipfleet.proxy.net import Peer, Sink
    from sipfleet.transaction.timers import Timer, Timers

__all__ = ["ServerState", "ServerTransaction", "TimerConfig"]


class TimerConfig:
    """T1, T2, T4 (RFC 3261 17.1.1.1, table 4)."""

    __slots__ = ("t1", "t2", "t4")

    def __init__(self, t1: float = 0.5, t2: float = 4.0, t4: float = 5.0) -> None:
        self.t1 = t1
        self.t2 = t2
        self.t4 = t4


class ServerState(IntEnum):
    TRYING = 1  # non-INVITE only
    PROCEEDING = 2
    COMPLETED = 3
    CONFIRMED = 4  # INVITE only
    ACCEPTED = 5  # INVITE only (RFC 6026)
    TERMINATED = 6


S = ServerState

# Events: "req" (a retransmission of the request), "1xx", "2xx", "final" (300-699,
# or 200-699 for non-INVITE) from the TU, "ack", timers "G", "H", "I", "J", "L".
# RFC 3261 figure 7 + RFC 6026 figure 5 (INVITE server transaction).
INVITE_TABLE: Final[dict[tuple[ServerState, str], tuple[ServerState, tuple[str, ...]]]] = {
    (S.PROCEEDING, "req"): (S.PROCEEDING, ("resend",)),
    (S.PROCEEDING, "1xx"): (S.PROCEEDING, ("send",)),
    (S.PROCEEDING, "2xx"): (S.ACCEPTED, ("send", "start_L")),
    (S.PROCEEDING, "final"): (S.COMPLETED, ("send", "start_G", "start_H")),
    (S.ACCEPTED, "req"): (S.ACCEPTED, ()),  # RFC 6026 8.7: absorb
    (S.ACCEPTED, "2xx"): (S.ACCEPTED, ("send",)),  # forward retransmitted / forked 2xx
    (S.ACCEPTED, "L"): (S.TERMINATED, ()),
    (S.COMPLETED, "req"): (S.COMPLETED, ("resend",)),
    (S.COMPLETED, "G"): (S.COMPLETED, ("resend", "restart_G")),
    (S.COMPLETED, "ack"): (S.CONFIRMED, ("start_I",)),
    (S.COMPLETED, "H"): (S.TERMINATED, ("timeout",)),
    (S.CONFIRMED, "req"): (S.CONFIRMED, ()),
    (S.CONFIRMED, "ack"): (S.CONFIRMED, ()),
    (S.CONFIRMED, "I"): (S.TERMINATED, ()),
}

# RFC 3261 figure 8 (non-INVITE server transaction).
NON_INVITE_TABLE: Final[dict[tuple[ServerState, str], tuple[ServerState, tuple[str, ...]]]] = {
    (S.TRYING, "req"): (S.TRYING, ()),
    (S.TRYING, "1xx"): (S.PROCEEDING, ("send",)),
    (S.TRYING, "final"): (S.COMPLETED, ("send", "start_J")),
    (S.PROCEEDING, "req"): (S.PROCEEDING, ("resend",)),
    (S.PROCEEDING, "1xx"): (S.PROCEEDING, ("send",)),
    (S.PROCEEDING, "final"): (S.COMPLETED, ("send", "start_J")),
    (S.COMPLETED, "req"): (S.COMPLETED, ("resend",)),
    # No "final" in Completed: 17.2.2 says other finals from the TU are discarded,
    # so respond() refuses them and keeps the one retransmissions must repeat.
    (S.COMPLETED, "J"): (S.TERMINATED, ()),
}


class ServerTransaction:
    """One server transaction; it answers through ``sink`` to ``peer``."""

    __slots__ = (
        "_g",
        "_g_interval",
        "_h",
        "_table",
        "_timers",
        "cfg",
        "context",
        "invite",
        "key",
        "last",
        "on_terminated",
        "peer",
        "quiet",
        "reliable",
        "sink",
        "state",
        "status",
    )

    def __init__(
        self,
        key: object,
        invite: bool,
        reliable: bool,
        sink: Sink,
        peer: Peer,
        timers: Timers,
        cfg: TimerConfig,
        on_terminated: Callable[[ServerTransaction, bool], None],
    ) -> None:
        self.key = key
        self.invite = invite
        self.reliable = reliable
        self.sink = sink
        self.peer = peer
        self._timers = timers
        self.cfg = cfg
        self.on_terminated = on_terminated
        self._table: dict[tuple[ServerState, str], tuple[ServerState, tuple[Action, ...]]] = (
            _INVITE if invite else _NON_INVITE
        )
        self.state = S.PROCEEDING if invite else S.TRYING
        self.last: bytes | None = None
        self.status = 0
        self.context: object = None  # the TU's response context
        self._g: Timer | None = None
        self._h: Timer | None = None
        self._g_interval = cfg.t1
        # No Timer G copies of the final: its source has not shown that it
        # receives our packets (a spoofed address must not get a dozen each).
        # A retransmitted request still gets the final again, one for one.
        self.quiet = False

    # -- inputs ---------------------------------------------------------------
    def on_request(self, now: float) -> None:
        """A retransmission of the request arrived."""
        self._fire("req", now)

    def on_ack(self, now: float) -> None:
        self._fire("ack", now)

    def respond(self, status: int, data: bytes, now: float) -> bool:
        """Send a response from the TU; False when the state forbids it."""
        if status < 200:
            event = "1xx"
        elif status < 300 and self.invite:
            event = "2xx"
        else:
            event = "final"
        if (self.state, event) not in self._table:
            return False
        self.last = data
        self.status = status
        self._fire(event, now)
        return True

    @property
    def final_sent(self) -> bool:
        return self.status >= 200

    # -- machine ----------------------------------------------------------------
    def _fire(self, event: str, now: float) -> None:
        entry = self._table.get((self.state, event))
        if entry is None:
            return
        self.state, actions = entry
        for action in actions:
            action(self, now)
        if self.state is S.TERMINATED:
            self._terminate(event == "H")

    def _a_send(self, now: float) -> None:
        assert self.last is not None
        self.sink.send(self.peer, self.last)

    def _a_resend(self, now: float) -> None:
        if self.last is not None:
            self.sink.send(self.peer, self.last)

    def _a_start_L(self, now: float) -> None:
        self._timers.add(now, 64 * self.cfg.t1, self._on_timer, "L")

    def _a_start_G(self, now: float) -> None:
        if not self.reliable and not self.quiet:
            self._g_interval = self.cfg.t1
            self._g = self._timers.add(now, self._g_interval, self._on_timer, "G")

    def _a_restart_G(self, now: float) -> None:
        self._g_interval = min(2 * self._g_interval, self.cfg.t2)
        self._g = self._timers.add(now, self._g_interval, self._on_timer, "G")

    def _a_start_H(self, now: float) -> None:
        self._h = self._timers.add(now, 64 * self.cfg.t1, self._on_timer, "H")

    def _a_start_I(self, now: float) -> None:
        if self._g is not None:
            self._g.cancel()
        if self._h is not None:
            self._h.cancel()
        if self.reliable:
            self.state = S.TERMINATED
        else:
            self._timers.add(now, self.cfg.t4, self._on_timer, "I")

    def _a_start_J(self, now: float) -> None:
        if self.reliable:
            self.state = S.TERMINATED
        else:
            self._timers.add(now, 64 * self.cfg.t1, self._on_timer, "J")

    def _a_timeout(self, now: float) -> None:
        pass  # reported through on_terminated(timed_out=True)

    def _on_timer(self, now: float, name: str) -> None:
        self._fire(name, now)

    def _terminate(self, timed_out: bool) -> None:
        # Drop the references that would keep this object in a cycle with its
        # timers: freed by refcount at once, it never waits for the collector.
        if self._g is not None:
            self._g.cancel()
            self._g = None
        if self._h is not None:
            self._h.cancel()
            self._h = None
        self.on_terminated(self, timed_out)


Action = Callable[[ServerTransaction, float], None]


def compile_table(
    cls: type, table: dict[tuple[ServerState, str], tuple[ServerState, tuple[str, ...]]]
) -> dict[tuple[ServerState, str], tuple[ServerState, tuple[Any, ...]]]:
    """A table with its action names resolved to ``cls``'s methods once, not per event."""
    return {
        key: (nxt, tuple(getattr(cls, "_a_" + a) for a in actions))
        for key, (nxt, actions) in table.items()
    }


_INVITE: Final = compile_table(ServerTransaction, INVITE_TABLE)
_NON_INVITE: Final = compile_table(ServerTransaction, NON_INVITE_TABLE)
