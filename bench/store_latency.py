#!/usr/bin/env python3
"""What the stores cost the running process, on SQLite and on private PostgreSQL
and MariaDB servers (started here as the tests start them: tests/e2e/dbservers.py).

    .venv/bin/python bench/store_latency.py [--rows 1000] [--tries 20]

Per store: reading ``--rows`` destinations (a reload's read), one admin-state
write (a drain: p50/p99 of 200), one 200-dialog batch (what 1,000 calls/s
confirm in one 200 ms persistence period), and on the servers the time from a
row written by another client to ``changes()`` telling (NOTIFY on PostgreSQL;
the checksum every ``check_interval`` = 1 s on MariaDB).
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))

import dbservers

from sipfleet.dispatch.destination import DestinationSpec
from sipfleet.dispatch.state import AdminState
from sipfleet.store.base import AsyncStore
from sipfleet.store.dialogs import DialogRecord
from sipfleet.store.open import open_location
from sipfleet.store.url import parse_location


def ms(xs: list[float]) -> str:
    xs = sorted(xs)
    p99 = xs[min(len(xs) - 1, int(len(xs) * 0.99))]
    return f"p50 {statistics.median(xs) * 1000:7.2f} ms  p99 {p99 * 1000:7.2f} ms"


def record(n: int, now: float) -> DialogRecord:
    return DialogRecord(
        b"bench-%d@h" % n, b"ft%d" % n, b"tt", n, 1, "sip:10.0.0.1", "sip:10.0.0.1",
        now, now + 3600, b"From: <sip:a@h>;tag=x", b"To: <sip:b@h>;tag=y",
        b"<sip:a@10.0.0.9:5060>", b"<sip:b@10.0.0.1>", b"<sip:lb;lr>", 1, 1,
        "0|10.0.0.9|5060", "0|10.0.0.1|5060",
    )  # fmt: skip


async def measure(name: str, url: str, rows: int, tries: int) -> None:
    loc = parse_location(url)
    store = await open_location(loc, persist_dialogs=True)
    try:
        specs = [DestinationSpec(1 + i % 10, f"sip:10.1.{i // 250}.{i % 250}:5060", 0, 0,
                                 f"duid=d{i};weight=10") for i in range(rows)]  # fmt: skip
        await store.replace(specs)
        loads = []
        for _ in range(5):
            t0 = time.perf_counter()
            assert len(await store.load()) == rows
            loads.append(time.perf_counter() - t0)
        admin = []
        for i in range(200):
            t0 = time.perf_counter()
            await store.save_admin_state(
                (1, f"sip:10.1.0.{i % 50}:5060"), AdminState.DRAINING, time.time(), "bench"
            )
            admin.append(time.perf_counter() - t0)
        batches = []
        now = time.time()
        for b in range(10):
            batch = [record(b * 200 + i, now) for i in range(200)]
            t0 = time.perf_counter()
            await store.apply_dialogs(batch, [])
            batches.append(time.perf_counter() - t0)
        print(f"{name:10s} load {rows} rows      {ms(loads)}")
        print(f"{name:10s} admin state write   {ms(admin)}")
        print(f"{name:10s} 200-dialog batch    {ms(batches)}")
        if loc.server is not None:
            await propagation(name, loc, store, tries)
    finally:
        await store.close()


async def propagation(name: str, loc: object, reader: AsyncStore, tries: int) -> None:
    writer = await open_location(loc, check_interval=0)  # type: ignore[arg-type]
    changes = reader.changes().__aiter__()
    lat = []
    try:
        for i in range(tries):
            await asyncio.sleep(0.05)
            t0 = time.perf_counter()
            await writer.add(DestinationSpec(99, f"sip:10.9.9.{i}:5060", 0, 0))
            await asyncio.wait_for(changes.__anext__(), 10)
            lat.append(time.perf_counter() - t0)
    finally:
        await writer.close()
    print(f"{name:10s} change seen by node  {ms(lat)}  ({tries} writes by another client)")


async def main(rows: int, tries: int) -> None:
    tmp = Path(tempfile.mkdtemp(prefix="sipfleet-bench-"))
    pg_base = Path(tempfile.mkdtemp(prefix="sipfleet-pg-"))
    (tmp / "my").mkdir()
    pg, my = dbservers.PgServer(pg_base), dbservers.MariaDbServer(tmp / "my")
    try:
        await measure("sqlite", str(tmp / "bench.db"), rows, tries)
        pg.start()
        await measure("postgresql", pg.create_db(), rows, tries)
        my.start()
        await measure("mariadb", my.create_db(), rows, tries)
    finally:
        pg.stop()
        my.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(pg_base, ignore_errors=True)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--tries", type=int, default=20)
    a = ap.parse_args()
    asyncio.run(main(a.rows, a.tries))
