"""The database-server stores (PostgreSQL, MariaDB) against real private servers
(tests/e2e/dbservers.py): Kamailio's schema as Kamailio's own files make it,
sipfleet's tables beside it, change feeds, and what happens while the server
cannot be reached (a TCP relay in between is cut and restored)."""

from __future__ import annotations

import asyncio
import contextlib
import filecmp
import time
from collections.abc import Awaitable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from dbservers import (  # noqa: F401  (fixtures)
    MariaDbServer,
    PgServer,
    Relay,
    kamailio_schema,
    mariadb_server_fixture,
    pg_server_fixture,
)
from waits import wait_for_async

from sipfleet.dispatch import parse_list
from sipfleet.dispatch.destination import DestinationSpec
from sipfleet.dispatch.state import AdminState
from sipfleet.store.base import StoreError
from sipfleet.store.dialogs import DialogRecord
from sipfleet.store.open import open_location
from sipfleet.store.sql import SqlStore
from sipfleet.store.url import parse_location

T = TypeVar("T")
Server = PgServer | MariaDbServer


@pytest.fixture(params=["postgresql", "mariadb"])
def server(request: pytest.FixtureRequest) -> Server:
    name = "pg_server" if request.param == "postgresql" else "mariadb_server"
    srv: Server = request.getfixturevalue(name)
    return srv


def run(coro: Awaitable[T], timeout: float = 30.0) -> T:
    async def bounded() -> T:
        return await asyncio.wait_for(coro, timeout)

    return asyncio.run(bounded())


async def open_sql(url: str, **kw: Any) -> SqlStore:
    store = await open_location(
        parse_location(url), persist_dialogs=True, **{"timeout": 2.0, "check_interval": 0.2, **kw}
    )
    assert isinstance(store, SqlStore)
    return store


async def next_change(store: SqlStore, timeout: float) -> bool:
    """True if changes() yields within ``timeout``."""
    it = store.changes().__aiter__()
    try:
        await asyncio.wait_for(it.__anext__(), timeout)
    except TimeoutError:
        return False
    finally:
        with contextlib.suppress(Exception):
            await it.aclose()  # type: ignore[attr-defined]
    return True


def dialog(n: int, expires: float) -> DialogRecord:
    return DialogRecord(
        b"call-%d@h" % n, b"ft%d" % n, b"tt", n, 1, "sip:127.0.0.1:5070", "sip:127.0.0.1:5070",
        expires - 60, expires, b"From: <sip:a@h>;tag=x", b"To: <sip:b@h>",
        b"<sip:a@127.0.0.1:5080>", b"<sip:b@127.0.0.1:5070>", b"<sip:lb;lr>\n<sip:x;lr>",
        1, 2, "0|127.0.0.1|5080", None,
    )  # fmt: skip


def test_the_copied_kamailio_schema_is_kamailios() -> None:
    here = Path(__file__).parents[2] / "sipfleet" / "store" / "kamailio"
    for engine in ("postgres", "mysql"):
        for f in kamailio_schema(engine):
            assert filecmp.cmp(f, here / f"{engine}-{f.name}", shallow=False), f


def test_a_kamailio_made_database_as_it_is(server: Server) -> None:
    url = server.kamailio_db()
    server.sql(
        url,
        "INSERT INTO dispatcher (setid, destination, flags, priority, attrs, description) "
        "VALUES (1, 'sip:10.0.0.1:5060', 0, 5, 'duid=a;weight=50', 'made by SQL')",
    )
    server.sql(url, "INSERT INTO dispatcher (setid, destination) VALUES (2, 'sip:10.0.0.2')")

    async def go() -> None:
        store = await open_sql(url)
        try:
            assert await store.load() == [
                DestinationSpec(1, "sip:10.0.0.1:5060", 0, 5, "duid=a;weight=50", "made by SQL"),
                DestinationSpec(2, "sip:10.0.0.2", 0, 0, "", ""),
            ]
            await store.add(DestinationSpec(2, "sip:10.0.0.3:5080", 1, 2, "duid=c"))
            assert await store.remove(2, "SIP:10.0.0.2") == 1
            assert [s.uri for s in await store.load()] == ["sip:10.0.0.1:5060", "sip:10.0.0.3:5080"]
            with pytest.raises(StoreError, match="longer than 192"):
                await store.add(DestinationSpec(1, "sip:" + "a" * 200, 0, 0))
        finally:
            await store.close()

    run(go())
    # Kamailio reads the same rows: nothing but its own columns were touched.
    rows = server.sql(url, "SELECT setid, destination, flags, priority, attrs FROM dispatcher "
                      "ORDER BY id")  # fmt: skip
    assert rows == [["1", "sip:10.0.0.1:5060", "0", "5", "duid=a;weight=50"],
                    ["2", "sip:10.0.0.3:5080", "1", "2", "duid=c"]]  # fmt: skip
    assert server.sql(url, "SELECT table_version FROM version WHERE table_name='dispatcher'") == [
        ["4"]
    ]


def test_an_empty_database_gets_kamailios_tables_and_sipfleets(server: Server) -> None:
    url = server.create_db()

    async def go() -> None:
        store = await open_sql(url)
        try:
            await store.replace([DestinationSpec(1, "sip:10.0.0.9", 0, 0, "duid=z")])
        finally:
            await store.close()
        again = await open_sql(url)  # idempotent: a second open changes nothing
        try:
            assert [s.uri for s in await again.load()] == ["sip:10.0.0.9"]
        finally:
            await again.close()

    run(go())
    versions = dict(map(tuple, server.sql(url, "SELECT table_name, table_version FROM version")))
    assert versions == {"version": "1", "dispatcher": "4"}
    if isinstance(server, PgServer):
        tables = server.sql(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    else:
        tables = server.sql(url, "SHOW TABLES")
    assert sorted(t[0] for t in tables) == [
        "dispatcher", "sipfleet_admin_audit", "sipfleet_dialogs", "sipfleet_dispatcher_state",
        "version",
    ]  # fmt: skip


def test_a_wrong_table_version_is_refused(server: Server) -> None:
    url = server.kamailio_db()

    async def go() -> None:
        store = await open_sql(url)
        try:
            await asyncio.to_thread(server.sql, url, "UPDATE version SET table_version = 3 "
                                    "WHERE table_name = 'dispatcher'")  # fmt: skip
            with pytest.raises(StoreError, match="dispatcher table version 3, expected 4"):
                await store.load()
            with pytest.raises(StoreError, match="dispatcher"):
                await store.add(DestinationSpec(1, "sip:10.0.0.1", 0, 0))
            assert store.status()["ok"] is True  # the server answered: not "unreachable"
        finally:
            await store.close()

    run(go())
    with pytest.raises(StoreError, match="dispatcher table version 3, expected 4"):
        run(open_sql(url))


def test_admin_states_with_when_and_by_whom_and_an_audit(server: Server) -> None:
    url = server.kamailio_db()

    async def go() -> None:
        store = await open_sql(url)
        try:
            await store.save_admin_state((1, "SIP:10.0.0.1"), AdminState.DRAINING, 1000.5, "ops")
            await store.save_admin_state((1, "sip:10.0.0.2"), AdminState.DISABLED, 1001.0, "x")
            await store.save_admin_state((1, "sip:10.0.0.2"), AdminState.ENABLED, 1002.0, "y")
            assert await store.load_admin_details() == {
                (1, "sip:10.0.0.1"): (AdminState.DRAINING, 1000.5, "ops")
            }
            audit = await store.audit()
            assert [(a[2], a[3], a[4]) for a in audit] == [
                ("sip:10.0.0.2", "enabled", "y"),
                ("sip:10.0.0.2", "disabled", "x"),
                ("sip:10.0.0.1", "draining", "ops"),
            ]
        finally:
            await store.close()

    run(go())


def test_dialogs_round_trip_and_expire(server: Server) -> None:
    url = server.kamailio_db()
    now = time.time()
    long_call_id = dialog(3, now + 100)._replace(call_id=b"x" * 2000)  # no key length limit

    async def go() -> None:
        store = await open_sql(url)
        try:
            await store.apply_dialogs([dialog(1, now + 100), dialog(2, now - 1), long_call_id], [])
            await store.apply_dialogs([dialog(4, now + 100)], [(b"call-1@h", b"ft1")])
            got = await store.load_dialogs(now)
            assert sorted(got) == sorted([long_call_id, dialog(4, now + 100)])
            assert store.status()["pending_dialog_writes"] == 0
        finally:
            await store.close()

    run(go())


def test_changes_are_seen_once_each(server: Server) -> None:
    url = server.kamailio_db()

    async def go() -> None:
        store = await open_sql(url, check_interval=0.2)
        try:
            feed = store.status()["changes"]
            assert feed.startswith("LISTEN" if isinstance(server, PgServer) else "checksum")
            await store.add(DestinationSpec(1, "sip:10.0.0.1", 0, 0))
            assert await next_change(store, 2.0)  # our own too: see sipfleet/store/pg.py
            assert not await next_change(store, 0.5)  # once
            await asyncio.to_thread(
                server.sql, url, "INSERT INTO dispatcher (setid, destination) VALUES (1, 'sip:b')"
            )
            t0 = time.monotonic()
            assert await next_change(store, 3.0)
            assert time.monotonic() - t0 < 1.5
            assert [s.uri for s in await store.load()] == ["sip:10.0.0.1", "sip:b"]
            assert not await next_change(store, 0.5)
        finally:
            await store.close()

    run(go())


def test_an_unreachable_server_keeps_writes_and_reconciles(server: Server) -> None:
    url = server.kamailio_db()
    now = time.time()

    async def go() -> None:
        relay = Relay(server.port)
        store = await open_sql(relay.url(url), timeout=1.0)
        try:
            relay.cut()
            with pytest.raises(StoreError):
                await store.load()
            status = store.status()
            assert status["ok"] is False and status["error"] and status["down_since"]
            with pytest.raises(StoreError):
                await store.save_admin_state((1, "sip:10.0.0.1"), AdminState.DRAINING, now, "ops")
            await store.apply_dialogs([dialog(1, now + 100)], [])  # kept, no raise
            assert store.status()["pending_admin_writes"] == 1
            assert store.status()["pending_dialog_writes"] == 1
            # What it reads back includes what waits: a restart would not lose it.
            relay.restore()
            assert await next_change(store, 10.0)  # back: reload, changes may be missed
            await wait_for_async(
                "the kept writes to land",
                lambda: (
                    store.status()["pending_admin_writes"] == 0
                    and store.status()["pending_dialog_writes"] == 0
                ),
                20.0,
                seen=store.status,
            )
            assert store.status()["ok"] is True
        finally:
            await store.close()
            relay.close()
        # In the database, as if it had never been away.
        again = await open_sql(url)
        try:
            details = await again.load_admin_details()
            assert details == {(1, "sip:10.0.0.1"): (AdminState.DRAINING, now, "ops")}
            assert [d.call_id for d in await again.load_dialogs(now)] == [b"call-1@h"]
        finally:
            await again.close()

    run(go(), timeout=60)


@pytest.fixture
def no_server_port() -> Iterator[int]:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


@pytest.mark.parametrize("scheme", ["postgresql", "mysql"])
def test_opening_an_unreachable_server_fails_fast_and_clearly(
    scheme: str, no_server_port: int
) -> None:
    url = f"{scheme}://u:pw@127.0.0.1:{no_server_port}/kamailio"
    t0 = time.monotonic()
    with pytest.raises(StoreError, match=f"cannot reach {scheme}://u@127.0.0.1"):
        run(open_sql(url))
    assert time.monotonic() - t0 < 5


def test_db_init_import_export_on_a_server(server: Server, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from sipfleet.cli.db import db_group

    url = server.create_db()
    listing = tmp_path / "d.list"
    listing.write_text(
        "1 sip:10.0.0.1:5060 0 0 duid=a;weight=50\n2 sip:10.0.0.2 8 5 duid=b desc of b\n"
    )

    def db(*args: str) -> tuple[int, str, str]:
        r = CliRunner().invoke(db_group, [*args, "--db", url])
        return r.exit_code, r.stdout, r.stderr

    redacted = parse_location(url).describe()
    assert db("init") == (0, f"{redacted}: dispatcher table version 4, 0 destinations\n", "")
    code, out, _ = db("import", str(listing))
    assert (code, out) == (0, f"imported 2 destinations from {listing} into {redacted}\n")
    assert db("import", str(listing), "--append")[:2] == (
        0,
        f"appended 2 destinations from {listing} into {redacted}\n",
    )
    want = parse_list(listing.read_text(), "in") * 2
    code, out, _ = db("export")
    assert code == 0 and parse_list(out, "out") == want
    target = tmp_path / "out.list"
    assert db("export", "-o", str(target))[0] == 0
    assert parse_list(target.read_text(), "out") == want
    assert "s3cret" not in out
    bad = tmp_path / "bad.list"
    bad.write_text("x sip:a\n")
    code, _, err = db("import", str(bad))
    assert code == 1 and "bad.list:1" in err
    assert db("init")[1].endswith("4 destinations\n")  # nothing was written
