"""Client transactions (RFC 3261 17.1, RFC 6026).

Tables ``(state, event) -> (next state, actions)`` to read against RFC 3261
figures 5 and 6 (RFC 6026 figure 4 adds Accepted to INVITE). Responses are
handed to the transaction user through ``on_response``; timeouts and
transport errors through ``on_failure``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from sipfleet.transaction.server import ServerState, TimerConfig, compile_table

if TYPE_CHECKING:
    from sipfleet.proxy.net import Peer, Sink
    from sipfleet.sip.message import Message
    from sipfleet.transaction.timers import Timer, Timers

__all__ = ["ClientTransaction"]

S = ServerState  # same state names: CALLING is TRYING for INVITE

# Events: "1xx", "2xx", "final" (300-699; 200-699 for non-INVITE), timers
# "A", "B", "D", "E", "F", "K", "M", "transport" (transport error), and "X":
# the deadline for a final after a CANCEL (RFC 3261 9.1, no RFC timer name).
INVITE_TABLE: Final[dict[tuple[ServerState, str], tuple[ServerState, tuple[str, ...]]]] = {
    (S.TRYING, "A"): (S.TRYING, ("resend", "restart_A")),  # Calling
    (S.TRYING, "B"): (S.TERMINATED, ("fail_timeout",)),
    (S.TRYING, "1xx"): (S.PROCEEDING, ("stop_A", "pass")),
    (S.TRYING, "2xx"): (S.ACCEPTED, ("stop_A", "pass", "start_M")),
    (S.TRYING, "final"): (S.COMPLETED, ("stop_A", "ack", "pass", "start_D")),
    (S.TRYING, "transport"): (S.TERMINATED, ("fail_transport",)),
    (S.PROCEEDING, "1xx"): (S.PROCEEDING, ("pass",)),
    (S.PROCEEDING, "2xx"): (S.ACCEPTED, ("pass", "start_M")),
    (S.PROCEEDING, "final"): (S.COMPLETED, ("ack", "pass", "start_D")),
    (S.PROCEEDING, "transport"): (S.TERMINATED, ("fail_transport",)),
    # RFC 3261 9.1: no final within 64*T1 of our CANCEL: the transaction is done.
    (S.TRYING, "X"): (S.TERMINATED, ("fail_timeout",)),
    (S.PROCEEDING, "X"): (S.TERMINATED, ("fail_timeout",)),
    (S.COMPLETED, "final"): (S.COMPLETED, ("ack",)),
    (S.COMPLETED, "D"): (S.TERMINATED, ()),
    (S.ACCEPTED, "2xx"): (S.ACCEPTED, ("pass",)),
    (S.ACCEPTED, "M"): (S.TERMINATED, ()),
}

NON_INVITE_TABLE: Final[dict[tuple[ServerState, str], tuple[ServerState, tuple[str, ...]]]] = {
    (S.TRYING, "E"): (S.TRYING, ("resend", "restart_E")),
    (S.TRYING, "F"): (S.TERMINATED, ("fail_timeout",)),
    (S.TRYING, "1xx"): (S.PROCEEDING, ("pass",)),
    (S.TRYING, "final"): (S.COMPLETED, ("stop_E", "pass", "start_K")),
    (S.TRYING, "transport"): (S.TERMINATED, ("fail_transport",)),
    (S.PROCEEDING, "E"): (S.PROCEEDING, ("resend", "restart_E")),
    (S.PROCEEDING, "F"): (S.TERMINATED, ("fail_timeout",)),
    (S.PROCEEDING, "1xx"): (S.PROCEEDING, ("pass",)),
    (S.PROCEEDING, "final"): (S.COMPLETED, ("stop_E", "pass", "start_K")),
    (S.PROCEEDING, "transport"): (S.TERMINATED, ("fail_transport",)),
    (S.COMPLETED, "final"): (S.COMPLETED, ()),
    (S.COMPLETED, "K"): (S.TERMINATED, ()),
}

TIMEOUT: Final = 408  # what on_failure reports for Timer B/F
TRANSPORT: Final = 503  # ... and for a transport error (RFC 3261 16.7 / 8.1.3.1)


class ClientTransaction:
    """One client transaction.

    It writes through ``sink`` to ``peer`` (the next hop); ``make_ack(response)`` builds
    the hop-by-hop ACK for a non-2xx final (17.1.1.3); the TU gets
    ``on_response(txn, msg, now)`` and ``on_failure(txn, code, now)``.
    """

    __slots__ = (
        "_a",
        "_interval",
        "_table",
        "_timeout",
        "_timers",
        "ack",
        "branch",
        "cfg",
        "context",
        "invite",
        "key",
        "make_ack",
        "on_failure",
        "on_response",
        "on_terminated",
        "peer",
        "reliable",
        "request",
        "sink",
        "state",
        "status",
    )

    def __init__(
        self,
        key: object,
        branch: str,
        invite: bool,
        reliable: bool,
        request: bytes,
        sink: Sink,
        peer: Peer,
        timers: Timers,
        cfg: TimerConfig,
        on_response: Callable[[ClientTransaction, Message, float], None],
        on_failure: Callable[[ClientTransaction, int, float], None],
        on_terminated: Callable[[ClientTransaction], None],
        make_ack: Callable[[Message], bytes] | None = None,
    ) -> None:
        self.key = key
        self.branch = branch
        self.invite = invite
        self.reliable = reliable
        self.request = request
        self.sink = sink
        self.peer = peer
        self._timers = timers
        self.cfg = cfg
        self.on_response = on_response
        self.on_failure = on_failure
        self.on_terminated = on_terminated
        self.make_ack = make_ack
        self._table: dict[tuple[ServerState, str], tuple[ServerState, tuple[Action, ...]]] = (
            _INVITE if invite else _NON_INVITE
        )
        self.state = S.TRYING
        self.status = 0
        self.ack: bytes | None = None
        self.context: object = None
        self._a: Timer | None = None
        self._timeout: Timer | None = None
        self._interval = cfg.t1

    def start(self, now: float) -> None:
        """Send the request and arm Timers A/B (INVITE) or E/F (non-INVITE)."""
        self.sink.send(self.peer, self.request)
        timers = self._timers
        if not self.reliable:
            self._a = timers.add(now, self._interval, self._on_timer, "A" if self.invite else "E")
        self._timeout = timers.add(
            now, 64 * self.cfg.t1, self._on_timer, "B" if self.invite else "F"
        )

    # -- inputs ---------------------------------------------------------------
    def receive(self, msg: Message, now: float) -> None:
        status = msg.status
        if status < 200:
            event = "1xx"
        elif status < 300 and self.invite:
            event = "2xx"
        else:
            event = "final"
        entry = self._table.get((self.state, event))
        if entry is None:
            return
        if self.status < 200 or status >= 200:
            self.status = status
        self.state = entry[0]
        for action in entry[1]:
            action(self, now, msg)
        if self.state is S.TERMINATED:
            self._terminate()

    def transport_error(self, now: float) -> None:
        self._fire("transport", now)

    def stop_retransmitting(self) -> None:
        """The TU gave up on this branch: no more copies (Timer B/F still ends it)."""
        if self._a is not None:
            self._a.cancel()
            self._a = None

    def cancelled(self, now: float) -> None:
        """We sent a CANCEL for this INVITE: without a final within 64*T1 it
        ends (RFC 3261 9.1); else a back end that rang and went silent would
        hold it for ever (Timer B does not run once a provisional came)."""
        if self.invite and self.state in (S.TRYING, S.PROCEEDING):
            self._timers.add(now, 64 * self.cfg.t1, self._on_timer, "X")

    def cancel_timers(self) -> None:
        """Stop retransmitting and stop the B/F clock (the TU gave up on this branch)."""
        if self._a is not None:
            self._a.cancel()
        if self._timeout is not None:
            self._timeout.cancel()

    def _fire(self, event: str, now: float) -> None:
        entry = self._table.get((self.state, event))
        if entry is None:
            return
        self.state = entry[0]
        for action in entry[1]:
            action(self, now, None)
        if self.state is S.TERMINATED:
            self._terminate()

    def _on_timer(self, now: float, name: str) -> None:
        self._fire(name, now)

    # -- actions (self, now, the response or None) ---------------------------------
    def _a_pass(self, now: float, msg: Message | None) -> None:
        assert msg is not None
        self.on_response(self, msg, now)

    def _a_ack(self, now: float, msg: Message | None) -> None:
        if self.ack is None and self.make_ack is not None and msg is not None:
            self.ack = self.make_ack(msg)
            self.make_ack = None  # built once; retransmissions resend the bytes
        if self.ack is not None:
            self.sink.send(self.peer, self.ack)

    def _a_resend(self, now: float, msg: Message | None = None) -> None:
        self.sink.send(self.peer, self.request)

    def _a_restart_A(self, now: float, msg: Message | None = None) -> None:
        self._interval *= 2  # 17.1.1.2: Timer A doubles, no T2 cap
        self._a = self._timers.add(now, self._interval, self._on_timer, "A")

    def _a_restart_E(self, now: float, msg: Message | None = None) -> None:
        # 17.1.2.2: doubling up to T2 while Trying, T2 once Proceeding.
        if self.state is S.PROCEEDING:
            self._interval = self.cfg.t2
        else:
            self._interval = min(2 * self._interval, self.cfg.t2)
        self._a = self._timers.add(now, self._interval, self._on_timer, "E")

    def _a_stop_A(self, now: float, msg: Message | None = None) -> None:
        if self._a is not None:
            self._a.cancel()
            self._a = None

    def _a_stop_E(self, now: float, msg: Message | None = None) -> None:
        self._a_stop_A(now, msg)

    def _a_start_D(self, now: float, msg: Message | None = None) -> None:
        self._stop_timeout()
        if self.reliable:
            self.state = S.TERMINATED
        else:
            self._timers.add(now, 32.0, self._on_timer, "D")

    def _a_start_K(self, now: float, msg: Message | None = None) -> None:
        self._stop_timeout()
        if self.reliable:
            self.state = S.TERMINATED
        else:
            self._timers.add(now, self.cfg.t4, self._on_timer, "K")

    def _a_start_M(self, now: float, msg: Message | None = None) -> None:
        self._stop_timeout()
        self._timers.add(now, 64 * self.cfg.t1, self._on_timer, "M")

    def _a_fail_timeout(self, now: float, msg: Message | None = None) -> None:
        self.cancel_timers()
        self.status = TIMEOUT
        self.on_failure(self, TIMEOUT, now)

    def _a_fail_transport(self, now: float, msg: Message | None = None) -> None:
        self.cancel_timers()
        self.status = TRANSPORT
        self.on_failure(self, TRANSPORT, now)

    def _stop_timeout(self) -> None:
        if self._timeout is not None:
            self._timeout.cancel()
            self._timeout = None

    def _terminate(self) -> None:
        self.cancel_timers()
        # Break the cycles (timers and the ACK builder point back here).
        self._a = self._timeout = None
        self.make_ack = None
        self.on_terminated(self)


Action = Callable[[ClientTransaction, float, "Message | None"], None]


_INVITE: Final = compile_table(ClientTransaction, INVITE_TABLE)
_NON_INVITE: Final = compile_table(ClientTransaction, NON_INVITE_TABLE)
