"""A tiny SIP UAS and UAC over UDP for the demo and the tests (no SIPp needed).

``MiniUas`` answers OPTIONS with 200, INVITE with 100, 180 and 200 (after a
short random ring), ACK silently, BYE and CANCEL with 200 (and 487 to the
INVITE a CANCEL catches ringing); it keeps its 200 going until the ACK, as
RFC 3261 13.3.1.4 asks, and counts its calls. ``MiniUac`` places calls
through a proxy at a steady rate, capped in how many are up at once; each
call is held for a random time, then hung up with a BYE along the route set
the 200 recorded. Both are asyncio datagram endpoints on loopback, with
every table bounded and every wait timed out: good enough to show a load
balancer at work, not a SIP stack.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from sipfleet.sip.errors import BadMessage
from sipfleet.sip.message import Message, parse

__all__ = ["CallerStats", "MiniUac", "MiniUas", "UasStats"]

log = logging.getLogger("sipfleet.demo")

_T1 = 0.5  # RFC 3261 T1: first retransmission interval
_TRIES = 6  # retransmissions before a transaction is given up (~T1 * 63 = Timer B)
_MAX_CALLS = 10_000  # per endpoint: a bound on the dialog tables
_RECENT = 256  # answered-call times kept for calls/s


def _tag() -> str:
    return os.urandom(4).hex()


def _branch() -> str:
    return "z9hG4bK-" + os.urandom(6).hex()


def _lines(msg: Message, name: bytes) -> list[bytes]:
    return [msg.lines[i] for i in msg.positions(name)]


def _uri_of(value: bytes) -> bytes:
    v = value.strip()
    lt = v.find(b"<")
    if lt >= 0:
        return v[lt + 1 : v.find(b">", lt)]
    return v.split(b";", 1)[0]


class _Endpoint(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.bad = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's UDP transport is not an asyncio.DatagramTransport subclass.
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            msg = parse(data)
        except BadMessage:
            self.bad += 1
            return
        try:
            self.on_message(msg, addr)
        except Exception:
            log.exception("demo endpoint: cannot handle a message")

    def on_message(self, msg: Message, addr: tuple[str, int]) -> None:
        raise NotImplementedError

    def send(self, data: bytes, addr: tuple[str, int]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.sendto(data, addr)

    @property
    def port(self) -> int:
        assert self.transport is not None
        port: int = self.transport.get_extra_info("sockname")[1]
        return port

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


@dataclass
class UasStats:
    calls: int = 0  # INVITEs answered 200
    active: int = 0  # answered, not yet hung up
    options: int = 0
    byes: int = 0
    cancelled: int = 0
    recent: deque[float] = field(default_factory=lambda: deque(maxlen=_RECENT))


class MiniUas(_Endpoint):
    """An answering back end: ``await MiniUas.start(name)``."""

    def __init__(self, name: str, ring: tuple[float, float] = (0.02, 0.15)) -> None:
        super().__init__()
        self.name = name
        self.ring = ring
        self.stats = UasStats()
        self._host = "127.0.0.1"
        self._to_tags: dict[bytes, bytes] = {}  # Call-ID -> our tag, while the call is up
        self._pending: dict[bytes, asyncio.Task[None]] = {}  # ringing INVITEs by Call-ID
        self._unacked: dict[bytes, asyncio.Task[None]] = {}  # 200s retransmitted until ACK

    @classmethod
    async def start(cls, name: str, host: str = "127.0.0.1", port: int = 0) -> MiniUas:
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_datagram_endpoint(
            lambda: cls(name), local_addr=(host, port)
        )
        proto.transport = transport  # uvloop calls connection_made later
        proto._host = host
        return proto

    @property
    def uri(self) -> str:
        return f"sip:{self._host}:{self.port}"

    def _reply(
        self,
        msg: Message,
        code: int,
        reason: str,
        to_tag: bytes | None,
        extra: tuple[bytes, ...] = (),
    ) -> bytes:
        to = msg.get(b"to") or b""
        if to_tag is not None and b";tag=" not in to.replace(b" ", b""):
            to += b";tag=" + to_tag
        lines = [
            b"SIP/2.0 %d %s" % (code, reason.encode()),
            *_lines(msg, b"via"),
            *(_lines(msg, b"record-route") if 100 < code < 300 else []),
            b"From: " + (msg.get(b"from") or b""),
            b"To: " + to,
            b"Call-ID: " + msg.call_id,
            b"CSeq: " + (msg.get(b"cseq") or b""),
            *extra,
            b"Content-Length: 0",
        ]
        return b"\r\n".join(lines) + b"\r\n\r\n"

    def on_message(self, msg: Message, addr: tuple[str, int]) -> None:
        if not msg.is_request:
            return
        method = msg.method
        call_id = msg.call_id
        if method == "OPTIONS":
            self.stats.options += 1
            self.send(self._reply(msg, 200, "OK", _tag().encode()), addr)
        elif method == "INVITE":
            if msg.to_tag:  # a re-INVITE: accept, nothing changes
                self.send(self._reply(msg, 200, "OK", None, (self._contact(),)), addr)
                return
            if call_id in self._pending or call_id in self._to_tags:
                return  # a retransmission: the answer is on its way
            if len(self._pending) + len(self._to_tags) >= _MAX_CALLS:
                self.send(self._reply(msg, 486, "Busy Here", _tag().encode()), addr)
                return
            tag = _tag().encode()
            self.send(self._reply(msg, 100, "Trying", None), addr)
            task = asyncio.get_running_loop().create_task(self._answer(msg, addr, tag))
            self._pending[call_id] = task
        elif method == "ACK":
            t = self._unacked.pop(call_id, None)
            if t is not None:
                t.cancel()
        elif method == "BYE":
            self.send(self._reply(msg, 200, "OK", None), addr)
            if self._to_tags.pop(call_id, None) is not None:
                self.stats.byes += 1
                self.stats.active -= 1
            t = self._unacked.pop(call_id, None)
            if t is not None:
                t.cancel()
        elif method == "CANCEL":
            self.send(self._reply(msg, 200, "OK", _tag().encode()), addr)
            ringing = self._pending.pop(call_id, None)
            if ringing is not None:
                ringing.cancel()
                self.stats.cancelled += 1
                # The 487 answers the INVITE: same Via/CSeq number, method INVITE.
                cseq = (msg.get(b"cseq") or b"1 CANCEL").split()[0]
                invite = self._reply(msg, 487, "Request Terminated", _tag().encode())
                invite = invite.replace(
                    b"CSeq: " + (msg.get(b"cseq") or b""), b"CSeq: " + cseq + b" INVITE"
                )
                self.send(invite, addr)
        else:
            self.send(self._reply(msg, 405, "Method Not Allowed", _tag().encode()), addr)

    def _contact(self) -> bytes:
        return f"Contact: <sip:{self.name}@{self._host}:{self.port}>".encode()

    async def _answer(self, msg: Message, addr: tuple[str, int], tag: bytes) -> None:
        call_id = msg.call_id
        try:
            self.send(self._reply(msg, 180, "Ringing", tag, (self._contact(),)), addr)
            await asyncio.sleep(random.uniform(*self.ring))
        except asyncio.CancelledError:
            return
        finally:
            self._pending.pop(call_id, None)
        ok = self._reply(msg, 200, "OK", tag, (self._contact(),))
        self._to_tags[call_id] = tag
        self.stats.calls += 1
        self.stats.active += 1
        self.stats.recent.append(time.monotonic())
        self.send(ok, addr)
        self._unacked[call_id] = asyncio.get_running_loop().create_task(
            self._until_ack(call_id, ok, addr)
        )

    async def _until_ack(self, call_id: bytes, ok: bytes, addr: tuple[str, int]) -> None:
        delay = _T1
        for _ in range(_TRIES):
            await asyncio.sleep(delay)
            self.send(ok, addr)
            delay = min(delay * 2, 4.0)
        self._unacked.pop(call_id, None)

    def calls_per_second(self, window: float = 5.0) -> float:
        now = time.monotonic()
        return sum(1 for t in self.stats.recent if now - t <= window) / window

    def close(self) -> None:
        for t in [*self._pending.values(), *self._unacked.values()]:
            t.cancel()
        self._pending.clear()
        self._unacked.clear()
        super().close()


@dataclass
class CallerStats:
    placed: int = 0
    answered: int = 0
    failed: int = 0
    completed: int = 0
    active: int = 0
    codes: Counter[int] = field(default_factory=Counter)
    by_backend: Counter[str] = field(default_factory=Counter)  # answered calls by Contact user


@dataclass
class _Call:
    call_id: bytes
    from_tag: bytes
    cseq: int
    branch: str
    invite: bytes
    done: asyncio.Future[Message]
    provisional: bool = False


class MiniUac(_Endpoint):
    """A caller: ``await MiniUac.start(proxy_addr)``, then ``await uac.run(...)``."""

    def __init__(self, proxy: tuple[str, int]) -> None:
        super().__init__()
        self.proxy = proxy
        self.stats = CallerStats()
        self._host = "127.0.0.1"
        self._calls: dict[bytes, _Call] = {}  # by Call-ID: INVITE and BYE transactions
        self._tasks: set[asyncio.Task[None]] = set()
        self._stop = asyncio.Event()

    @classmethod
    async def start(cls, proxy: tuple[str, int], host: str = "127.0.0.1") -> MiniUac:
        loop = asyncio.get_running_loop()
        transport, proto = await loop.create_datagram_endpoint(
            lambda: cls(proxy), local_addr=(host, 0)
        )
        proto.transport = transport  # uvloop calls connection_made later
        proto._host = host
        return proto

    def stop(self) -> None:
        """Place no more calls; the ones up are hung up as their hold time ends."""
        self._stop.set()

    async def run(
        self,
        *,
        rate: float = 5.0,
        max_calls: int = 20,
        hold: tuple[float, float] = (2.0, 8.0),
        duration: float | None = None,
        ruri_user: str = "demo",
    ) -> None:
        """Place ``rate`` calls a second (at most ``max_calls`` up at once) until
        ``stop()`` or ``duration`` seconds; then wait for the calls to end."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        n = 0
        while not self._stop.is_set():
            if duration is not None and loop.time() - start >= duration:
                break
            due = start + n / rate
            if loop.time() < due:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), due - loop.time())
                continue
            n += 1
            if self.stats.active >= max_calls or len(self._calls) >= _MAX_CALLS:
                continue  # at the cap: this slot is skipped, not queued
            task = loop.create_task(self._call(random.uniform(*hold), ruri_user))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=hold[1] + 10.0)

    def _request(
        self,
        method: str,
        ruri: bytes,
        call: _Call,
        cseq: int,
        to: bytes,
        routes: Sequence[bytes] = (),
    ) -> bytes:
        lines = [
            method.encode() + b" " + ruri + b" SIP/2.0",
            f"Via: SIP/2.0/UDP {self._host}:{self.port};branch={call.branch};rport".encode(),
            b"Max-Forwards: 70",
            *([b"Route: " + b", ".join(routes)] if routes else []),
            f"From: <sip:caller@{self._host}>;tag=".encode() + call.from_tag,
            b"To: " + to,
            b"Call-ID: " + call.call_id,
            f"CSeq: {cseq} {method}".encode(),
            f"Contact: <sip:caller@{self._host}:{self.port}>".encode(),
            b"Content-Length: 0",
        ]
        return b"\r\n".join(lines) + b"\r\n\r\n"

    async def _transact(self, call: _Call, data: bytes) -> Message | None:
        """Send, retransmitting (Timer A/E) until a provisional or final reply;
        then wait for the final one. None when none came."""
        delay = _T1
        for _ in range(_TRIES):
            self.send(data, self.proxy)
            try:
                return await asyncio.wait_for(asyncio.shield(call.done), delay)
            except TimeoutError:
                if call.provisional:
                    break
                delay = min(delay * 2, 4.0)
        if not call.provisional:
            return None
        try:
            return await asyncio.wait_for(asyncio.shield(call.done), 60.0)
        except TimeoutError:
            return None

    async def _call(self, hold: float, user: str) -> None:
        loop = asyncio.get_running_loop()
        call_id = f"demo-{os.urandom(8).hex()}@{self._host}".encode()
        ruri = f"sip:{user}@{self.proxy[0]}:{self.proxy[1]}".encode()
        to = b"<" + ruri + b">"
        call = _Call(call_id, _tag().encode(), 1, _branch(), b"", loop.create_future())
        self._calls[call_id] = call
        self.stats.placed += 1
        self.stats.active += 1
        try:
            call.invite = self._request("INVITE", ruri, call, 1, to)
            final = await self._transact(call, call.invite)
            if final is None:
                self.stats.failed += 1
                self.stats.codes[408] += 1
                return
            self.stats.codes[final.status] += 1
            if final.status >= 300:
                self.stats.failed += 1
                return  # the ACK went out when the reply came in
            self.stats.answered += 1
            contact = _uri_of(final.get(b"contact") or b"")
            backend = contact.split(b"@", 1)[0].removeprefix(b"sip:").decode("utf-8", "replace")
            self.stats.by_backend[backend or "?"] += 1
            routes = list(reversed(final.values(b"record-route")))
            to_tagged = final.get(b"to") or to
            ack_call = _Call(call_id, call.from_tag, 1, _branch(), b"", loop.create_future())
            ack = self._request("ACK", contact or ruri, ack_call, 1, to_tagged, routes)
            self.send(ack, self.proxy)
            await asyncio.sleep(hold)
            bye_call = _Call(call_id, call.from_tag, 2, _branch(), b"", loop.create_future())
            self._calls[call_id] = bye_call
            bye = self._request("BYE", contact or ruri, bye_call, 2, to_tagged, routes)
            await self._transact(bye_call, bye)
            self.stats.completed += 1
        finally:
            self.stats.active -= 1
            self._calls.pop(call_id, None)

    def on_message(self, msg: Message, addr: tuple[str, int]) -> None:
        if msg.is_request:
            if msg.method == "BYE":  # the far end hung up first: fine
                self.send(self._ok(msg), addr)
            return
        call = self._calls.get(msg.call_id)
        if call is None:
            if msg.status == 200 and msg.cseq[1] == "INVITE":
                self._ack_stray(msg)  # a retransmitted 200: ACK it again
            return
        cseq, method = msg.cseq
        if cseq != call.cseq:
            return
        if msg.status < 200:
            call.provisional = True  # stops retransmissions (RFC 3261 17.1.1.2)
            return
        if method == "INVITE" and msg.status >= 300:
            ack = self._request(
                "ACK", call.invite.split(b" ", 2)[1], call, call.cseq, msg.get(b"to") or b""
            )
            self.send(ack, self.proxy)
        if not call.done.done():
            call.done.set_result(msg)

    def _ok(self, msg: Message) -> bytes:
        lines = [
            b"SIP/2.0 200 OK",
            *_lines(msg, b"via"),
            b"From: " + (msg.get(b"from") or b""),
            b"To: " + (msg.get(b"to") or b""),
            b"Call-ID: " + msg.call_id,
            b"CSeq: " + (msg.get(b"cseq") or b""),
            b"Content-Length: 0",
        ]
        return b"\r\n".join(lines) + b"\r\n\r\n"

    def _ack_stray(self, msg: Message) -> None:
        contact = _uri_of(msg.get(b"contact") or b"")
        if not contact:
            return
        routes = list(reversed(msg.values(b"record-route")))
        from_value = msg.get(b"from") or b""
        tag = from_value.partition(b";tag=")[2].split(b";")[0]
        stray = _Call(
            msg.call_id,
            tag,
            msg.cseq[0],
            _branch(),
            b"",
            asyncio.get_running_loop().create_future(),
        )
        lines = self._request("ACK", contact, stray, msg.cseq[0], msg.get(b"to") or b"", routes)
        self.send(lines, self.proxy)

    def close(self) -> None:
        self._stop.set()
        for t in list(self._tasks):
            t.cancel()
        super().close()
