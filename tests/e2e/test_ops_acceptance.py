"""Issue 5's acceptance, end to end: operations on a running ``sipfleet run`` between
SIPp peers on loopback (a UAC, three UAS), with calls lasting seconds: drain, reload and
state flips, a UAS dying, sipfleet restarting and stopping gracefully, webhooks.

Which UAS got which call and when comes from the UAS's own log (scenarios/uas_logged.xml),
which calls failed from the UAC's (scenarios/uac_logged.xml: START and DONE per call),
sipfleet's view from its JSON-RPC. The issue's 60 s run at 500 calls/s is here too,
opt-in (SIPFLEET_E2E_LOAD=1); the other default runs are shorter, at lower rates.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import fleet
import pytest
import sipp as harness
from aiohttp import web

sipp_env = harness.sipp_env
Dest = fleet.Dest
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]
LOAD = os.environ.get("SIPFLEET_E2E_LOAD") == "1"

PROBING = {"ping_interval": 1, "probing_mode": 1, "probing_threshold": 1}


def _three(env: Any, **kw: Any) -> list[Any]:
    return [fleet.uas(env, probe=True, **kw) for _ in range(3)]


def _dests(uas: list[Any]) -> list[Any]:
    return [Dest(u, flags=8, attrs=f"duid={n}") for n, u in zip("abc", uas, strict=True)]


def _failed_calls(uac: Any) -> set[str]:
    """Call-IDs the UAC started and never finished (no 200 to its BYE)."""
    lines = fleet.uac_log(uac)
    return {x.call_id for x in lines if x.kind == "START"} - {
        x.call_id for x in lines if x.kind == "DONE"
    }


def _open_ids(u: Any) -> set[str]:
    """Calls open on a logging UAS: INVITEs without their BYE yet."""
    count: Counter[str] = Counter()
    for x in u.log():
        count[x.call_id] += 1 if x.kind == "INVITE" else -1
    return {call_id for call_id, n in count.items() if n > 0}


def _open_on(u: Any) -> int:
    return len(_open_ids(u))


# --- drain -----------------------------------------------------------------------------


def test_drain_under_load_loses_nothing_and_wait_exits_after_the_last_bye(sipp_env):
    """The issue's 200 calls/s of 5 s calls over a, b, c; once 100 calls are up on b,
    ``sipfleet dispatcher drain b --wait``: b gets no INVITE from then on, its calls all end with their BYE, no call
    fails, and the CLI exits 0 within 1 s of b's last BYE."""
    a, b, c = _three(sipp_env)
    proxy = fleet.proxy(sipp_env, _dests([a, b, c]), dispatcher={"algorithm": 4, **PROBING})
    fleet.wait_for(
        "a, b, c active", lambda: set(proxy.flags().values()) == {"AP"}, 15, seen=proxy.flags
    )

    uac = fleet.uac(sipp_env, "uac_logged.xml", proxy, calls=1200, rate=200, duration_ms=5000)
    fleet.wait_for("calls up on b", lambda: _open_on(b) >= 100, 20, seen=lambda: _open_on(b))
    issued = time.time()
    cli = proxy.cli("dispatcher", "drain", "b", "--wait", "--timeout", "20")

    def draining() -> bool:
        if cli.poll() is not None:
            raise AssertionError(f"the CLI exited with {cli.returncode}: {cli.communicate()}")
        return bool(proxy.rpc("dispatcher.drain_status", "b")[0]["STATE"] == "draining")

    try:
        fleet.wait_for("b draining", draining, 10, 0.005)
        in_force = time.time()
        on_b_at_drain = proxy.loads()[b.uri]
        assert proxy.flags()[b.uri] == "DP"  # takes no calls, still probed
        fleet.wait_for("the CLI to exit", lambda: cli.poll() is not None, 40, 0.01)
        cli_exit = time.time()
        out, err = cli.communicate(timeout=5)
    finally:
        if cli.poll() is None:
            cli.kill()
            cli.communicate()
    r = uac.wait()

    assert (r.successful, r.failed) == (1200, 0), r.summary()
    assert cli.returncode == 0, (out, err)
    invites, byes = b.log("INVITE"), b.log("BYE")
    # + datagrams in flight, and a UAS that logs late on a loaded machine (a drain that
    # did not hold would show INVITEs on b for seconds: a third of 200 calls/s).
    late = [x for x in invites if x.time > in_force + 0.5]
    assert not late, (in_force, late[:5])
    assert {x.call_id for x in byes} == {x.call_id for x in invites}  # every call completed
    last_bye = max(x.time for x in byes)
    print(
        f"drain: {on_b_at_drain} calls on b when the drain took hold "
        f"({in_force - issued:.2f} s after the CLI started); the CLI exited "
        f"{cli_exit - last_bye:.2f} s after b's last BYE"
    )
    assert last_bye > in_force + 4  # the drain did wait for calls
    # sipfleet ends the dialog as the BYE passes, a hair before the UAS logs it (later
    # still when SIPp is short of CPU); the slack on both sides is a loaded machine's.
    assert -0.5 <= cli_exit - last_bye <= 1.5, (cli_exit, last_bye)
    assert b"drained" in out, out
    assert any(e["event"] == "drained" and e["duid"] == "b" for e in proxy.rpc("sipfleet.events"))
    assert set(proxy.loads().values()) == {0}
    assert len(a.invites()) + len(c.invites()) + len(invites) == 1200


# --- reload and state flips --------------------------------------------------------------


def _reload_and_flip_run(env: Any, *, seconds: float, rate: int, reload_every: float) -> None:
    """Calls of 1 s at ``rate`` for ``seconds`` while the list file gains and loses a
    fourth UAS and is reloaded every ``reload_every`` s, and c's state cycles d, a, i, a
    (set_state) every 0.5 s: no call may fail."""
    a, b, c, d = (fleet.uas(env, "uas_logged.xml") for _ in range(4))
    base = _dests([a, b, c])
    extra = Dest(d, attrs="duid=d")
    proxy = fleet.proxy(
        env, base, dispatcher={"algorithm": 4, "reload_delta": 0, "ping_interval": 0}
    )
    calls = int(seconds * rate)
    uac = fleet.uac(env, "uac_logged.xml", proxy, calls=calls, rate=rate, duration_ms=1000)
    reloads = flips = 0
    cycle = ["d", "a", "i", "a"]
    next_reload = time.monotonic() + reload_every
    next_flip = time.monotonic()
    with_d = False
    while uac.alive():
        proxy.rpc("dispatcher.set_state", cycle[flips % 4], 1, c.uri)
        flips += 1
        if time.monotonic() >= next_reload:
            with_d = not with_d
            proxy.rewrite_list(base + [extra] if with_d else base)
            proxy.rpc("dispatcher.reload")
            reloads += 1
            next_reload += reload_every
        # Paced by the clock, not by the RPCs' speed: a flip every 0.5 s.
        next_flip += 0.5
        time.sleep(max(0.0, next_flip - time.monotonic()))  # sleep-ok: pacing the flips
    r = uac.wait()
    print(f"reload/flip: {calls} calls, {reloads} reloads, {flips} set_state flips")

    assert (r.successful, r.failed) == (calls, 0), r.summary()
    # Slow RPCs on a loaded machine may skip a beat: at least one flip a second.
    assert reloads >= seconds / reload_every - 2 and flips >= seconds, (reloads, flips)
    got = [len(u.invites()) for u in (a, b, c, d)]
    assert sum(got) == calls and all(got), got  # d took calls while listed
    assert set(proxy.loads().values()) == {0}


def test_reload_and_set_state_flips_under_load(sipp_env):
    _reload_and_flip_run(sipp_env, seconds=10, rate=300, reload_every=1.5)


@pytest.mark.timeout(150)
@pytest.mark.skipif(not LOAD, reason="load test: set SIPFLEET_E2E_LOAD=1")
def test_reload_every_5_s_and_flips_for_60_s_at_500_calls_per_second(sipp_env):
    """The issue's own numbers."""
    _reload_and_flip_run(sipp_env, seconds=60, rate=500, reload_every=5.0)


# --- a UAS dies ---------------------------------------------------------------------------


def test_killed_uas_loses_only_its_established_calls(sipp_env):
    """SIGKILL c mid-run (no probing: failover alone must cope); each UAS rings 0.3 s
    before it answers. New calls whose INVITE reaches the dead c fail over after the 1 s
    first-response timeout, calls c was ringing after the 2 s final-response timeout
    (Timer C; 120 s by default): none of them fails. The only calls lost are those c had
    answered: their BYE finds nobody (sipfleet answers it only at Timer F, 32 s, so the
    UAC gives up after its 3 s recv timeout)."""
    uas = [fleet.uas(sipp_env, "uas_logged_ring.xml", extra=["-d", "300"]) for _ in range(3)]
    c = uas[2]
    proxy = fleet.proxy(
        sipp_env,
        _dests(uas),
        first_response_timeout=1.0,
        final_response_timeout=2.0,
        dispatcher={"algorithm": 4},
    )
    uac = fleet.uac(
        sipp_env, "uac_logged.xml", proxy, calls=600, rate=100, duration_ms=2000,
        extra=["-recv_timeout", "3000"],
    )  # fmt: skip
    fleet.wait_for("calls up on c", lambda: _open_on(c) >= 50, 20, seen=lambda: _open_on(c))
    c.terminate(signal.SIGKILL, grace=0)
    killed = time.time()
    open_on_c = _open_ids(c)  # its log is complete now
    r = uac.wait()

    failed = _failed_calls(uac)
    rescued = open_on_c - failed
    print(
        f"UAS killed: {len(open_on_c)} calls open on it; {len(failed)} lost (answered by it), "
        f"{len(rescued)} it was ringing failed over; {r.successful} of 600 completed"
    )
    assert r.failed == len(failed), r.summary()
    assert failed <= open_on_c, failed - open_on_c  # no other call was lost
    assert failed and rescued, (failed, rescued)
    assert r.successful == 600 - len(failed)
    starts = {x.call_id: x.time for x in fleet.uac_log(uac, "START")}
    assert not [cid for cid in failed if starts[cid] > killed]  # no new call failed
    assert proxy.statistic("failovers") > len(rescued)  # and new calls did fail over
    # The lost calls' BYEs ended their dialogs as they passed: no load is left on c either.
    loads, dialogs = proxy.loads(), proxy.rpc("dlg.list")
    assert set(loads.values()) == {0}, (c.uri, loads, dialogs)


# --- sipfleet restarts ----------------------------------------------------------------------


def test_restart_with_calls_up_keeps_their_byes_and_load(sipp_env):
    """60 calls of 7 s are up (and persisted: 200 ms batches) when sipfleet is SIGKILLed;
    new calls start while it is down (their INVITEs are retransmitted until it is back)
    and it starts again on the same config and store. After it is back: the restored
    dialogs give each UAS its load (dlg.list and the UAS's own count agree), every BYE of
    the calls set up before reaches its UAS and gets its 200, no call fails, and every
    load ends at 0. (No dialog changes in the last 200 ms before the kill here: see
    test_sigkill_restart_leaves_no_phantom_dialog for what those do.)"""
    patient = ["-recv_timeout", "15000"]  # 7 s calls plus the restart
    uas = [fleet.uas(sipp_env, extra=patient) for _ in range(3)]
    proxy = fleet.proxy(sipp_env, _dests(uas), dispatcher={"algorithm": 4})
    long_calls = fleet.uac(sipp_env, "uac_logged.xml", proxy, calls=60, rate=60, duration_ms=7000)
    fleet.wait_for(
        "60 calls up",
        lambda: proxy.rpc("dlg.stats_active")["ongoing"] == 60,
        15,
        seen=lambda: proxy.rpc("dlg.stats_active"),
    )
    proxy.wait_stored({d["call-id"] for d in proxy.rpc("dlg.list")})
    before = proxy.loads()
    assert sorted(before.values()) == [20, 20, 20]

    killed = time.monotonic()
    proxy.kill(signal.SIGKILL)
    stream = fleet.uac(sipp_env, "uac_logged.xml", proxy, calls=100, rate=50)
    proxy.start(fresh=False)
    down = time.monotonic() - killed
    r = stream.wait()
    restored = re.findall(r"restored (\d+) open dialogs", proxy.stderr_path.read_text())
    print(
        f"restart: down {down:.2f} s (SIGKILL to RPC answering); {restored} dialogs "
        f"restored; calls started while down: {r.summary()}"
    )
    # The stream's INVITEs are retransmitted for ~7 s; 3 s is usual, a loaded machine
    # starts Python slower.
    assert down < 6.0
    assert restored == ["60"]
    assert (r.successful, r.failed) == (100, 0), r.summary()

    # Only the long calls are left: load per UAS = its open calls, by every count.
    long_ids = {x.call_id for x in fleet.uac_log(long_calls, "START")}

    def dialogs() -> set[str]:
        return {d["call-id"] for d in proxy.rpc("dlg.list")}

    # The stream's last dialogs end as their BYEs pass.
    fleet.wait_for(
        "only the long calls open",
        lambda: dialogs() == long_ids,
        10,
        seen=lambda: (dialogs() - long_ids, long_ids - dialogs()),
    )
    loads, by_callee = proxy.loads(), proxy.dialogs_by_callee()
    assert loads == before, (loads, before)
    assert [loads[u.uri] for u in uas] == [by_callee.get(u.port, 0) for u in uas], by_callee
    assert [loads[u.uri] for u in uas] == [_open_on(u) for u in uas]

    r = long_calls.wait()
    assert (r.successful, r.failed) == (60, 0), r.summary()
    byes = {x.call_id for u in uas for x in u.log("BYE")}
    assert long_ids <= byes  # every BYE of a call set up before the restart reached its UAS
    fleet.wait_for(
        "every load back to 0", lambda: set(proxy.loads().values()) == {0}, 10, seen=proxy.loads
    )
    assert proxy.rpc("dlg.list") == []


def test_sigkill_restart_leaves_no_phantom_dialog(sipp_env):
    """Calls of 0.1 s at 200 calls/s across a SIGKILL restart. Every call completes, so
    once they are over no dialog may be left and every load must be 0.

    A hang-up reaches the disk within 10 ms (sipfleet.aio.app _DELETE_DELAY): only a
    BYE that passed in the last few ms before the kill can come back as an open dialog
    (then ended by dialog_lifetime). Found with the first version of the write-behind
    queue, which lost up to 200 ms of hang-ups this way."""
    uas = [fleet.uas(sipp_env) for _ in range(3)]
    proxy = fleet.proxy(sipp_env, _dests(uas), dispatcher={"algorithm": 4})
    uac = fleet.uac(sipp_env, "uac_logged.xml", proxy, calls=800, rate=200, duration_ms=100)

    def placed() -> int:
        return sum(len(u.invites()) for u in uas)

    # Mid-run: about 300 calls placed (1.5 s at the nominal rate), 500 to come.
    fleet.wait_for("300 calls placed", lambda: placed() >= 300, 20, seen=placed)
    killed = time.time()
    proxy.restart()
    r = uac.wait()
    # A call whose INVITE was in flight at the kill may be placed twice (its
    # retransmission meets a proxy that forgot it): that is the restart, not a leak.
    assert r.successful + r.failed == 800 and r.failed <= 3, r.summary()

    def phantoms() -> dict[str, float]:
        byes = {x.call_id: x.time for u in uas for x in u.log("BYE")}
        seen = {d["call-id"]: round(byes[d["call-id"]] - killed, 3) for d in proxy.rpc("dlg.list")}
        # BYEs within the crash window of the kill itself are the price of writing behind.
        return {cid: dt for cid, dt in seen.items() if dt < -0.02}

    # A dialog whose BYE went through ends as it passes; one still listed after the
    # deadline is a phantom (restored, kept until dialog_lifetime).
    try:
        fleet.wait_for("no dialog left open after its BYE", lambda: not phantoms(), 10)
    except AssertionError:
        left = phantoms()
        raise AssertionError(
            f"{len(left)} dialogs left open after their BYE; BYE seen by the UAS this many "
            f"seconds before the SIGKILL: {left}"
        ) from None
    open_calls = len(proxy.rpc("dlg.list"))
    assert sum(proxy.loads().values()) == open_calls, proxy.loads()


def test_drain_survives_reload_and_restart(sipp_env):
    """b drained by an operator stays drained, since the same time and by the same
    caller, after dispatcher.reload, after a SIGKILL restart and after a graceful one:
    dispatcher.list shows it D and it takes no call; undrained, it takes its share."""
    a, b, c = (fleet.uas(sipp_env) for _ in range(3))
    proxy = fleet.proxy(sipp_env, _dests([a, b, c]), dispatcher={"algorithm": 4, "reload_delta": 0})
    [row] = proxy.rpc("dispatcher.drain", "b")
    assert (row["STATE"], row["BY"], row["DRAINED"]) == ("draining", "http 127.0.0.1", True)
    since = row["SINCE"]

    def still_draining(when: str) -> None:
        [row] = proxy.rpc("dispatcher.drain_status", "b")
        assert (row["STATE"], row["SINCE"], row["BY"]) == ("draining", since, "http 127.0.0.1"), (
            when,
            row,
        )
        assert proxy.flags()[b.uri].startswith("D"), (when, proxy.flags())
        seen = len(b.invites())
        r = fleet.uac(sipp_env, "uac_logged.xml", proxy, calls=20, rate=100).wait()
        assert (r.successful, r.failed) == (20, 0), (when, r.summary())
        assert len(b.invites()) == seen, when  # b took no call
        assert proxy.rpc("dlg.list") == [], when
        # The ended dialogs off the disk before the next SIGKILL: see the phantom test.
        proxy.wait_stored(set())

    proxy.rpc("dispatcher.reload")
    still_draining("after dispatcher.reload")
    proxy.restart()
    still_draining("after a restart (SIGKILL)")
    proxy.kill(signal.SIGTERM)  # graceful: no call is up, so it exits at once
    proxy.start(fresh=False)
    still_draining("after a restart (SIGTERM)")

    proxy.rpc("dispatcher.undrain", "b")
    r = fleet.uac(sipp_env, "uac_logged.xml", proxy, calls=30, rate=100).wait()
    assert (r.successful, r.failed) == (30, 0), r.summary()
    assert len(b.invites()) == 10


# --- graceful stop --------------------------------------------------------------------------


def test_sigterm_refuses_new_calls_and_exits_after_the_last_dialog(sipp_env):
    """SIGTERM with 20 calls up: new INVITEs get 503 with a Retry-After, the calls' BYEs
    still go through, and the process exits (status 0) right after the last one."""
    uas = [fleet.uas(sipp_env) for _ in range(2)]
    proxy = fleet.proxy(sipp_env, [Dest(u) for u in uas])
    up = fleet.uac(sipp_env, "uac_logged.xml", proxy, calls=20, rate=40, duration_ms=3000)
    fleet.wait_for(
        "20 calls up",
        lambda: proxy.rpc("dlg.stats_active")["ongoing"] == 20,
        15,
        seen=lambda: proxy.rpc("dlg.stats_active"),
    )

    assert proxy.popen is not None
    proxy.popen.send_signal(signal.SIGTERM)
    fleet.wait_for(
        "the graceful stop to begin",
        lambda: "graceful stop: no new calls" in proxy.stderr_path.read_text(),
        10,
    )
    late_uac = fleet.uac(sipp_env, "uac_answer_or_503.xml", proxy, calls=10, rate=20)
    late = late_uac.wait()
    fleet.wait_for("sipfleet to exit", lambda: not proxy.alive(), 10, 0.005)
    exited = time.time()
    r = up.wait()

    assert (r.successful, r.failed) == (20, 0), r.summary()
    assert proxy.popen.returncode == 0
    last_bye = max(x.time for u in uas for x in u.log("BYE"))
    print(f"graceful stop: exited {exited - last_bye:.2f} s after the last BYE")
    # Right after it, not at shutdown_timeout (30 s); 2 s: a loaded machine's slack.
    assert exited - last_bye <= 2.0
    assert (late.successful, late.failed) == (10, 0), late.summary()
    outcomes = Counter(x.kind for x in fleet.uac_log(late_uac))
    # Before 84f6750 they were routed to the UAS as if nothing had happened.
    assert outcomes == {"REJECTED": 10}, outcomes
    refused = fleet.uac_log(late_uac, "REJECTED")
    assert all(int(x.fields[0]) > 0 for x in refused), refused  # a Retry-After of seconds


# --- webhooks -------------------------------------------------------------------------------


class HookServer:
    """A small aiohttp server, on its own loop in a thread, that keeps what is POSTed."""

    def __init__(self) -> None:
        self.port = harness.free_port()
        self.received: list[tuple[dict[str, Any], str | None]] = []
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{fleet.HOST}:{self.port}/hooks/sip"

    async def _hook(self, request: web.Request) -> web.Response:
        body = await request.json()
        with self._lock:
            self.received.append((body, request.headers.get("Authorization")))
        return web.Response(status=204)

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/hooks/sip", self._hook)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, fleet.HOST, self.port).start()

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(5)

    def stop(self) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            return [e for e, _ in self.received if kind is None or e["event"] == kind]

    def auth(self) -> set[str | None]:
        with self._lock:
            return {a for _, a in self.received}


@pytest.fixture
def hooks() -> Iterator[HookServer]:
    server = HookServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


def test_webhooks_get_dst_down_dst_up_and_drained(sipp_env, hooks):
    """dst-up for each destination at startup; SIGSTOP a UAS: dst-down; SIGCONT: dst-up;
    drain a UAS with a call up: drained when the call ends. Each a JSON POST with the
    configured bearer token."""
    a, b = fleet.uas(sipp_env, probe=True), fleet.uas(sipp_env, probe=True)
    proxy = fleet.proxy(
        sipp_env,
        [Dest(a, flags=8, attrs="duid=a"), Dest(b, flags=8, attrs="duid=b")],
        dispatcher={"algorithm": 4, **PROBING},
        webhooks=[
            {"url": hooks.url, "events": ["dst-up", "dst-down", "drained"], "token": "s3cret"}
        ],
    )
    fleet.wait_for(
        "dst-up of a and b at startup", lambda: {e["duid"] for e in hooks.events("dst-up")}
        == {"a", "b"}, 15
    )  # fmt: skip

    b.signal(signal.SIGSTOP)
    try:
        fleet.wait_for("dst-down of b", lambda: hooks.events("dst-down"), 15)
    finally:
        b.signal(signal.SIGCONT)
    fleet.wait_for("dst-up of b again", lambda: len(hooks.events("dst-up")) == 3, 15)

    call = fleet.uac(sipp_env, "uac_logged.xml", proxy, calls=1, rate=1, duration_ms=1500)
    fleet.wait_for("the call up", lambda: proxy.rpc("dlg.stats_active")["ongoing"] == 1, 15)
    on = next(u for u in (a, b) if u.invites())
    duid = "a" if on is a else "b"
    proxy.rpc("dispatcher.drain", duid)
    time.sleep(0.5)  # sleep-ok: a drained post sent too early would arrive in this window
    assert proxy.rpc("dlg.stats_active")["ongoing"] == 1
    assert not hooks.events("drained")  # the call is still up
    r = call.wait()
    assert (r.successful, r.failed) == (1, 0), r.summary()
    fleet.wait_for("drained", lambda: hooks.events("drained"), 15)

    [down] = hooks.events("dst-down")
    assert (down["set"], down["uri"], down["duid"]) == (1, b.uri, "b"), down
    assert [e["duid"] for e in hooks.events("dst-up")][2:] == ["b"]
    [drained] = hooks.events("drained")
    assert (drained["set"], drained["uri"], drained["duid"]) == (1, on.uri, duid), drained
    assert drained["waited"] >= 0.5
    assert all(isinstance(e["time"], float) for e in hooks.events())
    assert {e["event"] for e in hooks.events()} == {"dst-up", "dst-down", "drained"}
    assert hooks.auth() == {"Bearer s3cret"}
