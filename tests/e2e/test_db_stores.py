"""Issue 12, the database half: ``sipfleet run`` on a PostgreSQL or MariaDB database
made with Kamailio's own schema files, against private servers (dbservers.py).

Rows are listed; a row inserted by SQL appears after ``dispatcher.reload`` and by
itself (NOTIFY on PostgreSQL, the checksum check on MariaDB) within reload_delta +
1 s; a drain and a held call survive a restart; kamcli (Debian's, through
SQLAlchemy) adds and removes rows that a reload then serves; with the database
unreachable calls still route, the status says so, a drain still works, and it
lands in the database when the server is back; and Kamailio's own dispatcher
(db_postgres, db_mysql) serves a database sipfleet made and wrote.
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import fleet
import pytest
from dbservers import (  # noqa: F401  (fixtures)
    MariaDbServer,
    PgServer,
    Relay,
    mariadb_server_fixture,
    pg_server_fixture,
)

pytestmark = pytest.mark.e2e
sipp_env = fleet.harness.sipp_env

Server = PgServer | MariaDbServer
RELOAD_DELTA = 1.0


@pytest.fixture(params=["postgresql", "mariadb"])
def server(request: pytest.FixtureRequest) -> Server:
    srv: Server = request.getfixturevalue(
        "pg_server" if request.param == "postgresql" else "mariadb_server"
    )
    return srv


def db_fleet(env: Any, url: str, **dispatcher: Any) -> fleet.Fleet:
    """``sipfleet run`` with ``[store] url`` = the database (its list file unused)."""
    f = fleet.Fleet(
        env._dir("sipfleet"),
        [],
        {"first_response_timeout": 1.0},
        {"reload_delta": RELOAD_DELTA, **dispatcher},
    )
    f.sections["store"] = {"url": url, "check_interval": 0.3, "timeout": 1.0}
    env.procs.append(f)
    f.start()
    return f


def insert(server: Server, url: str, set_id: int, uri: str, attrs: str = "") -> None:
    server.sql(
        url,
        "INSERT INTO dispatcher (setid, destination, flags, priority, attrs, description) "
        f"VALUES ({set_id}, '{uri}', 0, 0, '{attrs}', 'by SQL')",
    )


def feed_reloads(proxy: fleet.Fleet) -> int:
    """Reloads the store's change feed made so far (its log lines)."""
    return proxy.stderr_path.read_text().count("reloaded by store-change")


def test_rows_listed_sql_insert_seen_by_reload_and_by_itself(sipp_env, server: Server) -> None:
    url = server.kamailio_db()
    insert(server, url, 1, "sip:127.0.0.1:5091", "duid=a;weight=60")
    insert(server, url, 2, "sip:127.0.0.1:5092", "duid=b")
    proxy = db_fleet(sipp_env, url)
    listing = proxy.rpc("dispatcher.list")
    assert listing["NRSETS"] == 2
    assert proxy.targets()["sip:127.0.0.1:5091"]["ATTRS"]["DUID"] == "a"
    status = proxy.rpc("sipfleet.status")["store"]
    assert status["ok"] is True and "s3cret" not in str(status)
    feed = "LISTEN" if isinstance(server, PgServer) else "checksum every 0.3 s"
    assert status["changes"].startswith(feed)

    # By itself: NOTIFY (PostgreSQL) or the checksum (MariaDB), within reload_delta + 1 s.
    insert(server, url, 1, "sip:127.0.0.1:5093")
    t0 = time.monotonic()  # committed (the SQL client's own start is not sipfleet's time)
    fleet.wait_for("the row inserted by SQL", lambda: "sip:127.0.0.1:5093" in proxy.targets(),
                   15, 0.02)  # fmt: skip
    took = time.monotonic() - t0
    print(f"{type(server).__name__}: a row inserted by SQL listed by itself after {took:.3f} s")
    assert took <= RELOAD_DELTA + 1.0, took

    # A burst of changes (one client each): at most one reload per reload_delta, one at
    # its end, and maybe one more that finds nothing new (a NOTIFY that came in while
    # the sleep before a reload ran: that reload read its row already); not one per change.
    time.sleep(RELOAD_DELTA)  # sleep-ok: the feed's reload_delta window must pass (a clock)
    before = feed_reloads(proxy)
    burst = [f"sip:127.0.0.1:{port}" for port in range(5100, 5110)]
    t0 = time.monotonic()
    for uri in burst:
        insert(server, url, 3, uri)
    spread = time.monotonic() - t0
    fleet.wait_for("the burst", lambda: set(burst) <= set(proxy.targets()), 15, 0.02)
    assert time.monotonic() - t0 - spread <= RELOAD_DELTA + 1.5  # after the last change
    # sleep-ok: a quiet window; a reload still due comes at the end of reload_delta
    time.sleep(RELOAD_DELTA + 0.3)
    reloads = feed_reloads(proxy) - before
    assert 1 <= reloads <= int(spread / RELOAD_DELTA) + 3 < len(burst), (reloads, spread)

    # By dispatcher.reload: listed as soon as the reload answers.
    insert(server, url, 2, "sip:127.0.0.1:5094")
    assert proxy.rpc("dispatcher.reload") == "Ok. Dispatcher successfully reloaded."
    assert "sip:127.0.0.1:5094" in proxy.targets()
    assert proxy.rpc("dispatcher.list")["NRSETS"] == 3
    # An operator's reload is never refused because of the feed's own reloads: one
    # right after the feed's reload of a change.
    time.sleep(RELOAD_DELTA)  # sleep-ok: our reload_delta window must pass (a clock)
    fed = feed_reloads(proxy)
    insert(server, url, 2, "sip:127.0.0.1:5095")
    fleet.wait_for(
        "the feed to reload the change",
        lambda: "sip:127.0.0.1:5095" in proxy.targets(),
        15,
        seen=lambda: feed_reloads(proxy) - fed,
    )
    assert proxy.rpc("dispatcher.reload") == "Ok. Dispatcher successfully reloaded."


def test_a_drain_and_a_held_call_survive_a_restart(sipp_env, server: Server) -> None:
    patient = ["-recv_timeout", "15000"]
    a, b = fleet.uas(sipp_env, extra=patient), fleet.uas(sipp_env, extra=patient)
    url = server.kamailio_db()
    insert(server, url, 1, a.uri, "duid=a")
    insert(server, url, 1, b.uri, "duid=b")
    proxy = db_fleet(sipp_env, url, algorithm=4)
    calls = fleet.uac(sipp_env, "uac_logged.xml", proxy, calls=2, rate=10, duration_ms=4000)
    fleet.wait_for("2 calls up", lambda: proxy.rpc("dlg.stats_active")["ongoing"] == 2, 15)
    drained = proxy.rpc("dispatcher.drain", 1, a.uri)
    assert drained[0]["STATE"] == "draining"
    fleet.wait_for(  # the dialogs' 200 ms persistence batch
        "the 2 dialogs in the database",
        lambda: server.sql(url, "SELECT COUNT(*) FROM sipfleet_dialogs") == [["2"]],
        15,
        0.1,
        seen=lambda: server.sql(url, "SELECT COUNT(*) FROM sipfleet_dialogs"),
    )

    down = proxy.restart()
    print(f"{type(server).__name__}: restart took {down:.2f} s")
    status = proxy.rpc("dispatcher.drain_status", 1, a.uri)[0]
    assert (status["STATE"], status["BY"]) == ("draining", "http 127.0.0.1")
    assert proxy.loads() == {a.uri: 1, b.uri: 1}  # the held calls came back from the database
    rows = server.sql(url, "SELECT admin_state FROM sipfleet_dispatcher_state")
    assert rows == [["draining"]]
    assert server.sql(url, "SELECT COUNT(*) FROM sipfleet_admin_audit") == [["1"]]
    r = calls.wait()
    assert (r.successful, r.failed) == (2, 0), r.summary()
    fleet.wait_for("loads back to 0", lambda: set(proxy.loads().values()) == {0}, 15)
    assert server.sql(url, "SELECT COUNT(*) FROM sipfleet_dialogs") == [["0"]]


def test_kamcli_add_and_rm_then_reload(sipp_env, server: Server, tmp_path) -> None:
    kamcli = shutil.which("kamcli")
    if kamcli is None:
        pytest.skip("kamcli is not installed (apt-get install kamcli)")
    url = server.kamailio_db()
    insert(server, url, 1, "sip:127.0.0.1:5091")
    proxy = db_fleet(sipp_env, url)
    ini = configparser.ConfigParser()
    driver = "postgresql+psycopg2" if isinstance(server, PgServer) else "mysql+pymysql"
    ini["db"] = {"rwurl": driver + url[url.index("://") :]}
    ini["db"]["rourl"] = ini["db"]["rwurl"]
    config = tmp_path / "kamcli.ini"
    with open(config, "w") as f:
        ini.write(f)

    def run_kamcli(*args: str) -> None:
        r = subprocess.run(
            [kamcli, "--no-default-configs", "-c", str(config), "dispatcher", *args],
            capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert r.returncode == 0, r.stderr

    run_kamcli("add", "--attrs", "duid=k;weight=10", "--desc", "by kamcli", "1",
               "sip:127.0.0.1:5099")  # fmt: skip
    assert proxy.rpc("dispatcher.reload") == "Ok. Dispatcher successfully reloaded."
    assert proxy.targets()["sip:127.0.0.1:5099"]["ATTRS"]["DUID"] == "k"
    time.sleep(RELOAD_DELTA)  # sleep-ok: reload_delta must pass before our next reload
    run_kamcli("rm", "1", "sip:127.0.0.1:5099")
    assert proxy.rpc("dispatcher.reload") == "Ok. Dispatcher successfully reloaded."
    assert set(proxy.targets()) == {"sip:127.0.0.1:5091"}
    # And what sipfleet writes, kamcli reads (Kamailio's table, Kamailio's columns).
    time.sleep(RELOAD_DELTA)  # sleep-ok: as above, a clock window (Kamailio's rule)
    proxy.rpc("dispatcher.add", 1, "sip:127.0.0.1:5098", 0, 0, "duid=s")
    r = subprocess.run(
        [kamcli, "--no-default-configs", "-c", str(config), "dispatcher", "showdb", "-F", "json"],
        capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert r.returncode == 0 and "sip:127.0.0.1:5098" in r.stdout, r.stderr


def test_database_unreachable_calls_route_and_the_drain_lands_later(
    sipp_env, server: Server
) -> None:
    a, b = fleet.uas(sipp_env), fleet.uas(sipp_env)
    url = server.kamailio_db()
    insert(server, url, 1, a.uri, "duid=a")
    insert(server, url, 1, b.uri, "duid=b")
    relay = Relay(server.port)
    try:
        proxy = db_fleet(sipp_env, relay.url(url), algorithm=4)
        relay.cut()
        with pytest.raises(fleet.RpcFault, match="Reload Failed"):
            proxy.rpc("dispatcher.reload")
        status = fleet.wait_for(
            "the status to say the store is down",
            lambda: (s := proxy.rpc("sipfleet.status")["store"])["ok"] is False and s,
            15,
        )
        assert status["error"]
        info = proxy.rpc("core.info")
        assert "unreachable" in info["store"]
        # Calls route on the last snapshot.
        r = fleet.uac(sipp_env, "uac_logged.xml", proxy, calls=10, rate=20).wait()
        assert (r.successful, r.failed) == (10, 0), r.summary()
        # A drain is made in memory at once, its write waits for the server.
        t0 = time.monotonic()
        assert proxy.rpc("dispatcher.drain", 1, a.uri)[0]["STATE"] == "draining"
        took = time.monotonic() - t0
        print(f"{type(server).__name__}: drain answered in {took:.3f} s with the database away")
        assert took < 2.5
        assert proxy.rpc("sipfleet.status")["store"]["pending_admin_writes"] == 1
        r = fleet.uac(sipp_env, "uac_logged.xml", proxy, calls=6, rate=20).wait()
        assert (r.successful, r.failed) == (6, 0), r.summary()
        assert len(a.invites()) == 5 and len(b.invites()) == 11  # none to the drained one
        relay.restore()
        fleet.wait_for(
            "the store back and the drain written",
            lambda: (
                (s := proxy.rpc("sipfleet.status")["store"])["ok"]
                and s["pending_admin_writes"] == 0
            ),
            10,
        )
        assert "store" not in proxy.rpc("core.info")
        assert server.sql(url, "SELECT admin_state FROM sipfleet_dispatcher_state") == [
            ["draining"]
        ]
        proxy.restart()
        assert proxy.rpc("dispatcher.drain_status", 1, a.uri)[0]["STATE"] == "draining"
    finally:
        relay.close()


def test_kamailio_serves_the_database_sipfleet_made(sipp_env, server: Server, tmp_path) -> None:
    """The other way round: a database made by ``sipfleet db init`` (sipfleet's copy of
    Kamailio's schema) and written by sipfleet is read by Kamailio's own dispatcher
    (db_postgres / db_mysql), which lists the same destinations."""
    import kamailio_ref as ref

    if not ref.kamailio_available():
        pytest.skip("kamailio is not installed")
    engine = "postgres" if isinstance(server, PgServer) else "mysql"
    if not (Path(ref._modules_dir() or "/") / f"db_{engine}.so").exists():
        pytest.skip(f"kamailio-{engine}-modules is not installed")
    url = server.create_db()
    listing = tmp_path / "d.list"
    listing.write_text(ref.DEFAULT_LIST)
    db = [*fleet.harness.sipfleet_command(), "db"]
    for args in (["init"], ["import", str(listing)]):
        r = subprocess.run([*db, *args, "--db", url], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
    proxy = db_fleet(sipp_env, url)
    proxy.rpc("dispatcher.add", 3, "sip:127.0.0.1:5079", 0, 0, "duid=added")
    kam_url = f"{engine}://{url.split('://', 1)[1]}"
    with ref.kamailio_running(
        tmp_path / "kamailio",
        modparams=[
            f'loadmodule "db_{engine}.so"',
            f'modparam("dispatcher", "db_url", "{kam_url}")',
        ],
    ) as kamailio:
        theirs = kamailio.rpc("dispatcher.list")["result"]
    ours = proxy.rpc("dispatcher.list")

    def dests(listing: dict[str, Any]) -> list[tuple[int, str, str, int]]:
        return sorted(
            (r["SET"]["ID"], t["DEST"]["URI"], t["DEST"]["FLAGS"], t["DEST"]["PRIORITY"])
            for r in listing["RECORDS"]
            for t in r["SET"]["TARGETS"]
        )

    assert dests(theirs) == dests(ours)
    assert len(dests(ours)) == 4
