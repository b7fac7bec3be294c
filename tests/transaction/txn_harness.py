"""A fake clock, a recording sink and the callbacks a transaction user gives,
for driving one transaction at a time (no proxy, no sockets)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sipfleet.proxy.net import Peer
from sipfleet.sip.message import Message, parse
from sipfleet.testing import FakeClock
from sipfleet.transaction.client import ClientTransaction
from sipfleet.transaction.server import ServerTransaction, TimerConfig
from sipfleet.transaction.timers import Timers

NEXT_HOP = Peer(0, "127.0.0.1", 5070)
T1, T2, T4 = 0.5, 4.0, 5.0  # RFC 3261 table 4 defaults
REQUEST = b"INVITE sip:a@127.0.0.1 SIP/2.0\r\nContent-Length: 0\r\n\r\n"
ACK = b"ACK sip:a@127.0.0.1 SIP/2.0\r\nContent-Length: 0\r\n\r\n"
EPSILON = 1e-6


def response(status: int, method: str = "INVITE") -> Message:
    return parse(
        b"SIP/2.0 %d Reason\r\n"
        b"Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK-1\r\n"
        b"From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:b@127.0.0.1>\r\n"
        b"Call-ID: c1\r\nCSeq: 1 %s\r\nContent-Length: 0\r\n\r\n" % (status, method.encode())
    )


class TimedSink:
    """Records what is written to the next hop, and when."""

    def __init__(self, clock: FakeClock) -> None:
        self.clock = clock
        self.sent: list[tuple[float, bytes]] = []

    def send(self, peer: Peer, data: bytes) -> None:
        assert peer == NEXT_HOP
        self.sent.append((self.clock.now, data))


@dataclass
class Harness:
    clock: FakeClock = field(default_factory=lambda: FakeClock(start=0.0))
    timers: Timers = field(default_factory=Timers)
    cfg: TimerConfig = field(default_factory=lambda: TimerConfig(T1, T2, T4))
    passed: list[int] = field(default_factory=list)
    failures: list[tuple[int, float]] = field(default_factory=list)
    terminated: list[tuple[float, bool]] = field(default_factory=list)
    acks_built: int = 0

    def __post_init__(self) -> None:
        self.sink = TimedSink(self.clock)

    # -- the transaction user's callbacks --------------------------------------
    def _on_response(self, txn: ClientTransaction, msg: Message, now: float) -> None:
        self.passed.append(msg.status)

    def _on_failure(self, txn: ClientTransaction, code: int, now: float) -> None:
        self.failures.append((code, now))

    def _on_client_terminated(self, txn: ClientTransaction) -> None:
        self.terminated.append((self.clock.now, False))

    def _on_server_terminated(self, txn: ServerTransaction, timed_out: bool) -> None:
        self.terminated.append((self.clock.now, timed_out))

    def _make_ack(self, msg: Message) -> bytes:
        self.acks_built += 1
        return ACK

    # -- factories -------------------------------------------------------------
    def client(self, invite: bool, reliable: bool) -> ClientTransaction:
        txn = ClientTransaction(
            ("z9hG4bK-1", "INVITE" if invite else "OPTIONS"),
            "z9hG4bK-1",
            invite,
            reliable,
            REQUEST,
            self.sink,
            NEXT_HOP,
            self.timers,
            self.cfg,
            self._on_response,
            self._on_failure,
            self._on_client_terminated,
            self._make_ack if invite else None,
        )
        txn.start(self.clock.now)
        return txn

    def server(self, invite: bool, reliable: bool) -> ServerTransaction:
        return ServerTransaction(
            ("z9hG4bK-1", "127.0.0.1", 5070, "INVITE" if invite else "OPTIONS"),
            invite,
            reliable,
            self.sink,
            NEXT_HOP,
            self.timers,
            self.cfg,
            self._on_server_terminated,
        )

    # -- time ------------------------------------------------------------------
    def run_until(self, end: float) -> None:
        """Fire every timer due up to ``end``, each at its own deadline."""
        for _ in range(10_000):
            deadline = self.timers.next_deadline()
            if deadline is None or deadline > end:
                break
            self.clock.now = max(self.clock.now, deadline)
            self.timers.run(self.clock.now)
        else:
            raise AssertionError("timers never went quiet")
        self.clock.now = max(self.clock.now, end)

    def sends(self, data: bytes | None = None) -> list[float]:
        """When ``data`` (default: anything) was written to the next hop."""
        return [round(t, 6) for t, d in self.sink.sent if data is None or d == data]
