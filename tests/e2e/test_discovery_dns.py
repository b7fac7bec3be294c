"""Fleet discovery by DNS, end to end: dnsmasq on a loopback port serves SRV records
for ``_sip._udp.media.fleet.test``; SIPp UAS are the members; SIPp calls flow through
sipfleet while the records change, as a Kubernetes headless Service's do when its pods
come and go. ``--srv-host`` is not reloaded by SIGHUP, so a change restarts dnsmasq on
the same port (a short DNS outage sipfleet must ride out)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import fleet
import pytest
import sipp as harness

sipp_env = harness.sipp_env
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

DNSMASQ = shutil.which("dnsmasq") or next(
    (p for p in ("/usr/sbin/dnsmasq", "/sbin/dnsmasq") if Path(p).exists()), None
)
SRV = "_sip._udp.media.fleet.test"
REFRESH = 1.0


class Dnsmasq:
    """dnsmasq answering for fleet.test only (NXDOMAIN for the rest of it, nothing
    forwarded), from command-line records; restartable on the same port."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = harness.free_port()
        self.popen: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / "dnsmasq.log"

    def start(self, members: Sequence[tuple[str, int]], extra: Sequence[str] = ()) -> None:
        """``members``: (host label, SIP port) of SRV records, every host 127.0.0.1;
        ``extra``: more dnsmasq arguments. A running one is stopped first."""
        self.stop()
        argv = [
            str(DNSMASQ), "--no-daemon", f"--port={self.port}",
            "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv", "--no-hosts",
            "--conf-file=/dev/null", "--pid-file=", "--log-facility=-", "--log-queries",
            "--local=/fleet.test/",
        ]  # fmt: skip
        if os.geteuid() == 0:
            argv.append("--user=root")  # as root it would switch to nobody otherwise
        argv += extra
        for label, port in members:
            host = f"{label}.media.fleet.test"
            argv += [f"--srv-host={SRV},{host},{port},10,50", f"--host-record={host},127.0.0.1"]
        for _ in range(50):  # the old process may hold the port for a moment
            with open(self.log_path, "ab") as log:
                self.popen = subprocess.Popen(
                    argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
                )
            popen = self.popen
            got = fleet.wait_for(
                "dnsmasq to listen or exit",
                lambda p=popen: "exited" if p.poll() is not None else self._listening(),
                15,
                0.02,
                seen=lambda: harness._tail(self.log_path),
            )
            if got == "listening":
                return
            time.sleep(0.05)  # sleep-ok: backoff before the next of 50 bounded tries
        raise RuntimeError(f"dnsmasq exited:\n{harness._tail(self.log_path)}")

    def _listening(self) -> str:
        return "listening" if harness.listening(self.port, "udp") else ""

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)


@pytest.fixture
def dnsmasq(tmp_path: Path) -> Iterator[Dnsmasq]:
    if DNSMASQ is None:
        pytest.skip("dnsmasq is not installed (Debian package dnsmasq-base)")
    d = Dnsmasq(tmp_path)
    try:
        yield d
    finally:
        d.stop()
        print(f"--- dnsmasq\n{harness._tail(d.log_path, 2000)}")


class DiscoveryFleet(fleet.Fleet):  # type: ignore[misc]
    """A Fleet whose config has ``[[discovery]]`` entries."""

    discovery: list[dict[str, Any]]

    def config_text(self) -> str:
        text = str(super().config_text())
        for row in self.discovery:
            text += "[[discovery]]\n"
            text += "".join(f"{k} = {harness._toml(v)}\n" for k, v in row.items())
            text += "\n"
        return text


def start_fleet(env: Any, dns_port: int, **entry: Any) -> DiscoveryFleet:
    f = DiscoveryFleet(env._dir("sipfleet"), [], {"first_response_timeout": 1.0}, {})
    f.sections["dns"] = {"servers": [f"127.0.0.1:{dns_port}"], "timeout": 0.5}
    f.discovery = [{"set": 1, "srv": SRV, "refresh": REFRESH, **entry}]
    env.procs.append(f)
    f.start()
    return f


def events(proxy: DiscoveryFleet, kind: str) -> list[dict[str, Any]]:
    return [e for e in proxy.rpc("sipfleet.events", 1000) if e["event"] == kind]


def when(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["time"]).timestamp()


def members(proxy: DiscoveryFleet) -> dict[str, str]:
    """URI -> discovery state of the first entry."""
    (entry,) = proxy.rpc("sipfleet.discovery")
    return {m["URI"]: m["STATE"] for m in entry["MEMBERS"]}


def test_members_follow_the_srv_records_with_no_failed_call(sipp_env, dnsmasq):
    m1, m2, m3 = fleet.uas(sipp_env), fleet.uas(sipp_env), fleet.uas(sipp_env)
    dnsmasq.start([("m1", m1.port), ("m2", m2.port)])
    proxy = start_fleet(sipp_env, dnsmasq.port, attrs="duid=${host}")

    # Both SRV members become destinations of set 1 and take calls.
    fleet.wait_for(
        "both members in the set",
        lambda: {m1.uri, m2.uri} <= set(_targets(proxy)),
        10.0,
    )
    assert _targets(proxy)[m1.uri]["ATTRS"]["DUID"] == "m1.media.fleet.test"
    assert _targets(proxy)[m1.uri]["ATTRS"]["WEIGHT"] == 50  # SRV weights 50/50
    uac = fleet.uac(sipp_env, "uac_logged.xml", proxy, calls=160, rate=20, duration_ms=400)
    fleet.wait_for("calls on both", lambda: m1.invites() and m2.invites(), 10.0)

    # DNS goes away for two refreshes: the members stay, calls go on.
    dnsmasq.stop()
    fleet.wait_for("a discovery-error", lambda: events(proxy, "discovery-error"), 15.0)
    err = events(proxy, "discovery-error")[0]
    assert err["members"] == 2 and err["name"] == SRV, err
    (entry,) = proxy.rpc("sipfleet.discovery")
    failed = entry["ERRORS"]
    fleet.wait_for(
        "two more failed refreshes",
        lambda: proxy.rpc("sipfleet.discovery")[0]["ERRORS"] >= failed + 2,
        4 * REFRESH + 15,
        seen=lambda: proxy.rpc("sipfleet.discovery")[0],
    )
    assert members(proxy) == {m1.uri: "active", m2.uri: "active"}
    assert proxy.flags()[m1.uri] == proxy.flags()[m2.uri] == "AX"
    assert len(events(proxy, "discovery-error")) == 1  # reported once per minute at most

    # The records change: m1 out, m3 in.
    before = len(m1.invites())
    dnsmasq.start([("m2", m2.port), ("m3", m3.port)])
    changed = time.time()  # the new records served (dnsmasq's own start not counted)
    fleet.wait_for("m3 taking calls", lambda: m3.invites(), REFRESH + 15.0)
    fleet.wait_for("m1 removed", lambda: events(proxy, "member-removed"), REFRESH + 15.0)
    (removed,) = events(proxy, "member-removed")
    (draining,) = events(proxy, "member-draining")
    assert removed["uri"] == draining["uri"] == m1.uri
    assert removed["reason"] == "drained", removed
    print(
        f"m1 draining {when(draining) - changed:.2f} s and removed {when(removed) - changed:.2f} s"
        f" after the change (refresh {REFRESH:g} s), {removed['waited']} s of drain"
    )
    # drained and removed within refresh + 3 s of the change
    assert when(removed) - changed <= REFRESH + 3.0, (changed, removed)
    # no INVITE reached m1 after it started draining (event times have ms precision;
    # + 0.1 s: a SIPp short of CPU logs late; m1 took 10 calls/s until then)
    late = [x for x in m1.invites() if x.time > when(draining) + 0.1]
    assert not late, late
    assert len(m1.invites()) >= before
    joined = [e["uri"] for e in events(proxy, "member-joined")]
    assert joined == [m1.uri, m2.uri, m3.uri], joined
    assert set(_targets(proxy)) == {m2.uri, m3.uri}
    assert members(proxy) == {m2.uri: "active", m3.uri: "active"}

    result = uac.wait()
    assert (result.successful, result.failed) == (160, 0), result.summary()
    assert len(m1.invites()) + len(m2.invites()) + len(m3.invites()) == 160
    assert proxy.loads() == {m2.uri: 0, m3.uri: 0}


def test_every_address_of_an_a_name_is_a_member_and_a_reload_keeps_them(sipp_env, dnsmasq):
    """The list file's "first address only" (Kamailio issues 2376, 4338) does not
    apply to discovered members: every A record is a destination."""
    a = fleet.uas(sipp_env)
    # 127.0.0.2 has no UAS: the test only reads the set, which must hold both.
    pool = ["--host-record=pool.fleet.test,127.0.0.1", "--host-record=pool.fleet.test,127.0.0.2"]
    dnsmasq.start([], pool)
    f = DiscoveryFleet(
        sipp_env._dir("sipfleet"), [], {"first_response_timeout": 1.0}, {"reload_delta": 0}
    )
    f.sections["dns"] = {"servers": [f"127.0.0.1:{dnsmasq.port}"], "timeout": 0.5}
    f.discovery = [{"set": 1, "a": "pool.fleet.test", "port": a.port, "refresh": REFRESH}]
    sipp_env.procs.append(f)
    f.start()
    want = {f"sip:127.0.0.1:{a.port}", f"sip:127.0.0.2:{a.port}"}
    fleet.wait_for("both addresses in the set", lambda: set(_targets(f)) == want, 10.0)
    # Discovered members are not in the store, and a reload of the store keeps them.
    assert f.list_path.read_text() == ""
    f.rpc("dispatcher.reload")
    assert set(_targets(f)) == want
    assert {
        e["uri"] for e in f.rpc("sipfleet.events", 1000) if e["event"] == "member-joined"
    } == want
    # dispatcher.remove of a member lasts until the next refresh: DNS owns it.
    f.rpc("dispatcher.remove", 1, f"sip:127.0.0.2:{a.port}")
    assert set(_targets(f)) == {f"sip:127.0.0.1:{a.port}"}
    fleet.wait_for("the member back", lambda: set(_targets(f)) == want, REFRESH + 15.0)


def _targets(proxy: DiscoveryFleet) -> dict[str, dict[str, Any]]:
    try:
        return proxy.targets()
    except fleet.RpcFault:  # "No Destination Sets" until the first answer
        return {}


def test_lookups_against_dnsmasq(dnsmasq):
    """What the resolver side makes of real answers: SRV with the addresses in the
    additional section, several A records, NXDOMAIN, REFUSED, a dead server."""
    import asyncio

    from sipfleet.aio.discovery import DnsClient, LookupFailed, lookup
    from sipfleet.config import DiscoveryConfig, DnsConfig
    from sipfleet.dispatch.discovery import SrvRecord

    dnsmasq.start(
        [("m1", 5070), ("m2", 5071)],
        [
            "--host-record=pool.fleet.test,127.0.0.3",
            "--host-record=pool.fleet.test,127.0.0.4",
            "--srv-host=_sip._tcp.ghost.fleet.test,nohost.fleet.test,5060,0,0",
        ],
    )
    client = DnsClient(DnsConfig(servers=[f"127.0.0.1:{dnsmasq.port}"], timeout=0.5))

    def run(**kw: Any) -> Any:
        return asyncio.run(
            lookup(client, DiscoveryConfig.model_validate({"set": 1, **kw}).to_settings())
        )

    records, addrs = run(srv=SRV)
    assert sorted(records) == [
        SrvRecord(10, 50, 5070, "m1.media.fleet.test"),
        SrvRecord(10, 50, 5071, "m2.media.fleet.test"),
    ]
    assert addrs == {"m1.media.fleet.test": ["127.0.0.1"], "m2.media.fleet.test": ["127.0.0.1"]}
    records, addrs = run(a="pool.fleet.test", port=5080)
    assert records == [SrvRecord(0, 0, 5080, "pool.fleet.test")]
    assert sorted(addrs["pool.fleet.test"]) == ["127.0.0.3", "127.0.0.4"]
    # a target that does not exist has no address (its member is left out)
    records, addrs = run(srv="_sip._tcp.ghost.fleet.test")
    assert addrs == {"nohost.fleet.test": []}
    with pytest.raises(LookupFailed, match="no records"):
        run(srv="_sip._udp.nothing.fleet.test")  # NXDOMAIN
    with pytest.raises(LookupFailed, match="REFUSED"):
        run(srv="_sip._udp.elsewhere.test")  # not dnsmasq's zone, nothing forwarded
    dnsmasq.stop()
    with pytest.raises(LookupFailed, match=r"timeout|refused"):
        run(srv=SRV)


def test_a_member_past_drain_timeout_is_removed_and_its_calls_still_end(sipp_env, dnsmasq):
    """A leaving member whose calls outlast ``drain_timeout`` is removed with them
    open; their BYEs still go through (in-dialog requests follow the Route set)."""
    m1, m2 = fleet.uas(sipp_env), fleet.uas(sipp_env)
    dnsmasq.start([("m1", m1.port)])
    proxy = start_fleet(sipp_env, dnsmasq.port, drain_timeout=1.0)
    fleet.wait_for("m1 in the set", lambda: m1.uri in _targets(proxy), 10.0)
    uac = fleet.uac(sipp_env, "uac_logged.xml", proxy, calls=5, rate=10, duration_ms=4000)
    fleet.wait_for("5 calls on m1", lambda: len(m1.invites()) == 5, 15.0)
    dnsmasq.start([("m2", m2.port)])
    fleet.wait_for("m1 removed", lambda: events(proxy, "member-removed"), REFRESH + 15.0)
    (removed,) = events(proxy, "member-removed")
    assert removed["reason"] == "drain timeout" and removed["calls"] == 5, removed
    assert set(_targets(proxy)) == {m2.uri}
    result = uac.wait()
    assert (result.successful, result.failed) == (5, 0), result.summary()
    assert len(m1.log("BYE")) == 5 and m2.invites() == []
