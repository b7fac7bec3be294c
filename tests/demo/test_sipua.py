"""The demo's tiny UAS and UAC, face to face (no proxy): calls are answered,
held and hung up, the cap on calls up at once holds, CANCEL of a ringing call
gets 487, OPTIONS gets 200."""

from __future__ import annotations

import asyncio

from sipfleet.demo.sipua import MiniUac, MiniUas
from sipfleet.sip.message import parse


def test_calls_up_to_the_cap_and_hang_up() -> None:
    async def go() -> tuple[MiniUas, MiniUac, int]:
        uas = await MiniUas.start("b1")
        uac = await MiniUac.start(("127.0.0.1", uas.port))
        peak = 0

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, uac.stats.active)
                await asyncio.sleep(0.01)  # sleep-ok: sampling interval of the peak

        w = asyncio.get_running_loop().create_task(watch())
        try:
            await asyncio.wait_for(uac.run(rate=50, max_calls=5, hold=(0.2, 0.3), duration=1.0), 20)
        finally:
            w.cancel()
            uac.close()
            uas.close()
        return uas, uac, peak

    uas, uac, peak = asyncio.run(go())
    s = uac.stats
    assert s.placed >= 10 and s.placed == s.answered == s.completed, s
    assert s.failed == 0 and s.active == 0 and peak <= 5
    assert uas.stats.calls == s.answered and uas.stats.byes == s.answered
    assert uas.stats.active == 0
    assert s.by_backend == {"b1": s.answered}


def _request(method: str, port: int, call_id: str, cseq: str) -> bytes:
    return (
        f"{method} sip:b1@127.0.0.1:{port} SIP/2.0\r\n"
        "Via: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bK-t1\r\n"
        "From: <sip:t@127.0.0.1>;tag=a\r\nTo: <sip:b1@127.0.0.1>\r\n"
        f"Call-ID: {call_id}\r\nCSeq: {cseq}\r\nContent-Length: 0\r\n\r\n"
    ).encode()


def test_options_and_cancel() -> None:
    async def go() -> list[tuple[int, str]]:
        uas = await MiniUas.start("b1")
        uas.ring = (5.0, 5.0)  # rings long enough to be cancelled
        loop = asyncio.get_running_loop()
        got: asyncio.Queue[bytes] = asyncio.Queue()

        class Peer(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: object) -> None:
                got.put_nowait(data)

        transport, _ = await loop.create_datagram_endpoint(Peer, local_addr=("127.0.0.1", 0))
        out = []
        try:
            transport.sendto(
                _request("OPTIONS", uas.port, "o1", "1 OPTIONS"), ("127.0.0.1", uas.port)
            )
            transport.sendto(
                _request("INVITE", uas.port, "c1", "1 INVITE"), ("127.0.0.1", uas.port)
            )
            for _ in range(3):  # 200 (OPTIONS), 100, 180
                m = parse(await asyncio.wait_for(got.get(), 5))
                out.append((m.status, m.cseq[1]))
            transport.sendto(
                _request("CANCEL", uas.port, "c1", "1 CANCEL"), ("127.0.0.1", uas.port)
            )
            for _ in range(2):  # 200 (CANCEL), 487 (INVITE)
                m = parse(await asyncio.wait_for(got.get(), 5))
                out.append((m.status, m.cseq[1]))
        finally:
            transport.close()
            uas.close()
        assert uas.stats.cancelled == 1 and uas.stats.calls == 0
        return out

    assert sorted(asyncio.run(go())) == [
        (100, "INVITE"),
        (180, "INVITE"),
        (200, "CANCEL"),
        (200, "OPTIONS"),
        (487, "INVITE"),
    ]
