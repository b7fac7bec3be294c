"""Issue 13's metrics acceptance: a real Prometheus (Debian's ``prometheus``) scrapes
``GET /metrics`` of a ``sipfleet run`` every second while SIPp holds calls through it.

Prometheus runs on a free loopback port with a temporary config and TSDB; what it saw
is read back through its HTTP API (``/api/v1/query``), as a Grafana panel would.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fleet
import pytest
import sipp as harness

sipp_env = harness.sipp_env
Dest = fleet.Dest
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(90)]

PROMETHEUS = shutil.which("prometheus")
HELD = 12  # calls held up while Prometheus looks
GRAFANA = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "sipfleet.json"


class Prometheus:
    """``prometheus`` scraping one target every second, on its own port and storage."""

    def __init__(self, workdir: Path, target: str, *, token: str | None = None) -> None:
        assert PROMETHEUS is not None
        self.workdir = workdir
        self.port = harness.free_port()
        auth = f"    authorization:\n      credentials: {token}\n" if token else ""
        config = workdir / "prometheus.yml"
        config.write_text(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n"
            "scrape_configs:\n  - job_name: sipfleet\n"
            f"    static_configs:\n      - targets: ['{target}']\n{auth}"
        )
        self.log_path = workdir / "prometheus.log"
        with open(self.log_path, "wb") as log:
            self.popen = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={workdir / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The result vector of an instant query (empty when Prometheus is not up yet)."""
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": expr}
        )
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                doc = json.loads(resp.read())
        except urllib.error.HTTPError as e:  # a bad query: Prometheus says why
            with e:
                raise AssertionError(f"{expr}: {e.read().decode()}") from None
        except OSError:
            if self.popen.poll() is not None:
                raise AssertionError(f"prometheus exited:\n{self.log()}") from None
            return []
        assert doc["status"] == "success", doc
        result: list[dict[str, Any]] = doc["data"]["result"]
        return result

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def targets(self) -> list[dict[str, Any]]:
        url = f"http://127.0.0.1:{self.port}/api/v1/targets"
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                active: list[dict[str, Any]] = json.loads(resp.read())["data"]["activeTargets"]
                return active
        except OSError:
            return []

    def log(self) -> str:
        return self.log_path.read_text("utf-8", "replace")[-3000:]

    def close(self) -> None:
        self.popen.terminate()
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=5)


@pytest.fixture
def prometheus_factory(tmp_path: Path) -> Iterator[Any]:
    if PROMETHEUS is None:
        pytest.skip("prometheus is not installed (Debian package prometheus)")
    started: list[Prometheus] = []

    def start(target: str, **kw: Any) -> Prometheus:
        work = tmp_path / f"prometheus{len(started) + 1}"
        work.mkdir()
        p = Prometheus(work, target, **kw)
        started.append(p)
        return p

    try:
        yield start
    finally:
        for p in started:
            p.close()
            print(f"[prometheus log]\n{p.log()}")


def test_prometheus_sees_the_calls_held(sipp_env, prometheus_factory):
    """Three UAS (one disabled from the start), SIPp holding 12 calls: Prometheus has
    the target up, ``sum(sipfleet_destination_active_calls)`` equal to the calls held,
    every destination exported (the disabled one too, with its state), the INVITEs
    counted by method, and the sum back at 0 once the calls hung up."""
    a, b, c = (fleet.uas(sipp_env) for _ in range(3))
    dests = [
        Dest(a, attrs="duid=a"),
        Dest(b, attrs="duid=b"),
        Dest(c, flags=4, attrs="duid=c"),  # 4 = disabled (Kamailio's D flag)
    ]
    proxy = fleet.proxy(sipp_env, dests, dispatcher={"algorithm": 4})
    prom = prometheus_factory(f"127.0.0.1:{proxy.http_port}")
    fleet.wait_for("the sipfleet target up", lambda: prom.value('up{job="sipfleet"}') == 1, 30, 0.2)

    uac = fleet.uac(sipp_env, "uac_logged.xml", proxy, calls=HELD, rate=40, duration_ms=6000)
    fleet.wait_for(f"{HELD} calls up", lambda: proxy.rpc("dlg.stats_active")["ongoing"] == HELD, 10)
    fleet.wait_for(
        f"Prometheus to see {HELD} calls",
        lambda: prom.value("sum(sipfleet_destination_active_calls)") == HELD,
        10,
        0.2,
    )
    per_dest = {
        r["metric"]["duid"]: float(r["value"][1])
        for r in prom.query("sipfleet_destination_active_calls")
    }
    assert per_dest == {"a": HELD / 2, "b": HELD / 2, "c": 0.0}
    states = {
        r["metric"]["duid"]: r["metric"]["state"]
        for r in prom.query("sipfleet_destination_state == 1")
    }
    assert states == {"a": "active", "b": "active", "c": "disabled"}
    assert prom.value('sipfleet_destination_up{duid="c"}') == 0
    assert prom.value('sipfleet_requests_received_total{method="INVITE"}') == HELD
    assert prom.value("sum(sipfleet_destination_routed_total)") == HELD
    (target,) = prom.targets()
    assert target["health"] == "up" and target["lastError"] == ""

    assert uac.wait().failed == 0
    fleet.wait_for(
        "the calls gone in Prometheus",
        lambda: prom.value("sum(sipfleet_destination_active_calls)") == 0,
        10,
        0.2,
    )
    assert prom.value('sipfleet_destination_replies_total{duid="a",class="2xx"}') == HELD / 2
    assert prom.value('sipfleet_dialogs_ended_total{reason="bye"}') == HELD
    assert prom.value('sipfleet_rpc_calls_total{method="dlg.stats_active",transport="http"}')


def test_the_grafana_dashboard_queries_what_sipfleet_exports(sipp_env, prometheus_factory):
    """Every query of deploy/grafana/sipfleet.json runs in the real Prometheus against a
    scraped sipfleet (its variables at "All"), and every sipfleet_* name it uses exists."""
    a = fleet.uas(sipp_env, probe=True)
    dispatcher = {"ping_interval": 1, "probing_mode": 1}
    proxy = fleet.proxy(sipp_env, [Dest(a, attrs="duid=a")], dispatcher=dispatcher)
    prom = prometheus_factory(f"127.0.0.1:{proxy.http_port}")
    fleet.uac(sipp_env, "uac_logged.xml", proxy, calls=10, rate=20).wait()
    fleet.wait_for(
        "two scrapes after the calls",
        lambda: (prom.value("count_over_time(sipfleet_accepting[1m])") or 0) >= 3,
        30,
        0.2,
    )
    fleet.wait_for(
        "the calls counted",
        lambda: prom.value('sipfleet_requests_received_total{method="INVITE"}') == 10,
        10,
        0.2,
    )
    dash = json.loads(GRAFANA.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert len(exprs) >= 20
    names: set[str] = set()
    for expr in exprs:
        concrete = expr.replace("$instance", ".*").replace("$set", ".*")
        prom.query(concrete)  # raises with Prometheus's reason when the query is bad
        names.update(re.findall(r"\b(sipfleet_[a-z_]+)\b", expr))
    for var in dash["templating"]["list"]:
        if var["type"] == "query":
            names.update(re.findall(r"\b(sipfleet_[a-z_]+)\b", var["query"]["query"]))
    missing = sorted(n for n in names if not prom.query(f'count({{__name__="{n}"}})'))
    assert missing == []
    assert prom.query('sipfleet_destination_probe_latency_seconds_bucket{le="+Inf"} > 0')
