"""The control plane's bound: calls run on the SIP loop, at most max_inflight at once,
max_queued waiting, the rest answered 503 at once (HTTP status 503), counted; with
own_thread the transports live on a loop of their own."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
from pathlib import Path

import pytest

from sipfleet.aio.rpc_thread import BUSY, ControlPlane, RpcGate
from sipfleet.config.control import ControlConfig
from sipfleet.control.registry import Dialect, Registry, RpcFault


def _registry(gate_open: asyncio.Event, seen: list[int]) -> Registry:
    reg = Registry()

    async def slow() -> str:
        seen.append(threading.get_ident())
        await gate_open.wait()
        return "done"

    def quick() -> int:
        seen.append(threading.get_ident())
        return 1

    reg.add("test.slow", slow, doc="Waits for the test.")
    reg.add("test.quick", quick, doc="Answers 1.")
    return reg


def test_gate_bounds_running_and_waiting_calls_and_rejects_the_rest() -> None:
    async def main() -> None:
        opened = asyncio.Event()
        seen: list[int] = []
        gate = RpcGate(asyncio.get_running_loop(), max_inflight=2, max_queued=1)
        reg = gate.wrap(_registry(opened, seen))
        method = reg.get("test.slow")
        assert method is not None
        calls = [asyncio.ensure_future(method.handler()) for _ in range(3)]  # type: ignore[arg-type]
        for _ in range(100):  # the three calls reach the gate (bounded)
            if gate.running + gate.waiting == 3:
                break
            await asyncio.sleep(0.01)  # sleep-ok: poll interval of the bounded wait above
        assert (gate.running, gate.waiting) == (2, 1)
        with pytest.raises(RpcFault) as e:
            method.handler()
        assert e.value == BUSY and e.value.code == 503
        opened.set()
        assert await asyncio.gather(*calls) == ["done"] * 3
        assert (gate.running, gate.waiting, gate.rejected, gate.calls) == (0, 0, 1, 3)
        stats = {name: read() for _, name, read, _ in gate.stat_values()}
        assert stats["rpc_rejected_busy"] == 1 and stats["rpc_calls"] == 3

    asyncio.run(main())


def _post(url: str, method: str) -> tuple[int, dict[str, object]]:
    hostport = url.split("//", 1)[1].split("/", 1)[0]
    host, port = hostport.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        body = json.dumps({"jsonrpc": "2.0", "method": method, "id": 1})
        conn.request("POST", "/RPC", body, {"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_own_thread_serves_http_elsewhere_and_runs_methods_on_the_sip_loop(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        opened = asyncio.Event()
        seen: list[int] = []
        cfg = ControlConfig.model_validate(
            {
                "run_dir": str(tmp_path),
                "http": {"port": 0},
                "fifo": {"enabled": False},
                "dgram": {"enabled": False},
                "binrpc": {"enabled": False},
                "max_inflight": 1,
                "max_queued": 0,
            }
        )
        plane = await ControlPlane(_registry(opened, seen), cfg).start()
        try:
            assert plane.loop is not None and plane.loop is not asyncio.get_running_loop()
            url = plane.endpoints["http"]
            status, doc = await asyncio.to_thread(_post, url, "test.quick")
            assert (status, doc["result"]) == (200, 1)
            # One slow call holds the only slot and nothing may wait: the next gets 503.
            slow = asyncio.ensure_future(asyncio.to_thread(_post, url, "test.slow"))
            for _ in range(200):
                if plane.gate.running:
                    break
                await asyncio.sleep(0.01)  # sleep-ok: poll interval of a bounded wait
            status, doc = await asyncio.to_thread(_post, url, "system.listMethods")
            assert status == 503 and doc["error"] == {"code": 503, "message": "Server Busy"}
            opened.set()
            status, doc = await slow
            assert (status, doc["result"]) == (200, "done")
            assert set(seen) == {threading.get_ident()}  # every method ran on this loop
            assert plane.gate.rejected == 1
        finally:
            await plane.close()
        assert plane.loop is None

    asyncio.run(main())


def test_on_loop_and_soon_on_cross_threads() -> None:
    """A handler on the control thread reads state on the SIP loop (on_loop), and a
    SIP-loop callback feeds the control loop's queue (soon_on)."""
    from sipfleet.aio.rpc_thread import on_loop, soon_on

    async def main() -> None:
        sip = asyncio.get_running_loop()
        sip_thread = threading.get_ident()
        other = asyncio.new_event_loop()
        t = threading.Thread(target=other.run_forever, daemon=True)
        t.start()
        try:

            async def on_other() -> tuple[int, int]:
                q: asyncio.Queue[int] = asyncio.Queue()
                put = soon_on(asyncio.get_running_loop(), q.put_nowait)
                where = await on_loop(sip, threading.get_ident)
                sip.call_soon_threadsafe(put, 7)  # as an EventBus callback on the SIP loop
                return where, await asyncio.wait_for(q.get(), 5)

            fut = asyncio.run_coroutine_threadsafe(on_other(), other)
            where, got = await asyncio.wrap_future(fut)
            assert where == sip_thread and got == 7
            assert await on_loop(sip, threading.get_ident) == sip_thread  # same loop: direct
        finally:
            other.call_soon_threadsafe(other.stop)
            t.join(5)
            other.close()

    asyncio.run(main())


def test_the_gated_registry_counts_calls_on_the_original_methods() -> None:
    async def main() -> None:
        reg = _registry(asyncio.Event(), [])
        gated = RpcGate(asyncio.get_running_loop(), 4, 4).wrap(reg)
        method = gated.get("test.quick")
        assert method is not None
        assert await method.invoke([], Dialect.JSON) == 1  # type: ignore[misc]
        original = reg.get("test.quick")
        assert original is not None and sum(original.calls.values()) == 1

    asyncio.run(main())
