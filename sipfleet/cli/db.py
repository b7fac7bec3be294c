"""``sipfleet db ...``: the destination store, directly (no sipfleet running).

``--db`` is an SQLite file (the default) or a database URL
(``postgresql://...``, ``mysql://...``): every one holds Kamailio's
``dispatcher`` table (version 4), so Kamailio's own tools can read it too.
A running sipfleet sees changes made here at its next ``sipfleet dispatcher
reload`` (or SIGHUP); on PostgreSQL at once (NOTIFY), on MySQL within
``[store] check_interval``.

Exit codes: 0 done, 1 the store or the list file refused, 2 bad usage.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import NoReturn, TypeVar

import click

from sipfleet.dispatch.errors import ListFileError
from sipfleet.dispatch.listfile import format_list, read_list_file, write_list_file
from sipfleet.store.base import AsyncStore, StoreError
from sipfleet.store.sqlite import DISPATCHER_TABLE_VERSION, SqliteStore
from sipfleet.store.transfer import export_list_file, import_list_file
from sipfleet.store.url import StoreLocation, parse_location

__all__ = ["db_group"]

T = TypeVar("T")

_DB_OPTION = click.option(
    "--db",
    "db_path",
    envvar="SIPFLEET_DB",
    default="sipfleet.db",
    show_default=True,
    help="The store: an SQLite file, sqlite:///PATH, postgresql://USER:PASS@HOST:PORT/DB or "
    "mysql://... ($SIPFLEET_DB; what `sipfleet run --db` serves).",
)


def _fail(e: Exception) -> NoReturn:
    click.echo(f"sipfleet db: {e}", err=True)
    sys.exit(1)


def _server(db: str) -> StoreLocation | None:
    """The database server ``--db`` names, None for an SQLite file (exit 2 if unusable)."""
    try:
        loc = parse_location(db)
    except ValueError as e:
        click.echo(f"sipfleet db: {e}", err=True)
        sys.exit(2)
    return loc if loc.server is not None else None


def _sqlite_path(db: str) -> str:
    return parse_location(db).path


def _on_server(loc: StoreLocation, fn: Callable[[AsyncStore], Awaitable[T]]) -> T:
    """Open the server's store (creating missing tables), run ``fn``, close."""
    from sipfleet.store.open import open_location

    async def go() -> T:
        store = await open_location(loc, check_interval=0)
        try:
            return await fn(store)
        finally:
            await store.close()

    try:
        return asyncio.run(go())
    except StoreError as e:
        _fail(e)


@click.group("db", context_settings={"help_option_names": ["-h", "--help"]})
def db_group() -> None:
    """The destination store: create it, import and export Kamailio list files."""


@db_group.command("init")
@_DB_OPTION
def init_cmd(db_path: str) -> None:
    """Create the tables (Kamailio's dispatcher table, version 4) unless present."""
    server = _server(db_path)
    if server is not None:

        async def count_rows(store: AsyncStore) -> int:
            return len(await store.load())

        n = _on_server(server, count_rows)
        click.echo(
            f"{server.describe()}: dispatcher table version {DISPATCHER_TABLE_VERSION}, "
            f"{n} destinations"
        )
        return
    db_path = _sqlite_path(db_path)
    try:
        with SqliteStore(db_path) as store:
            store.init()
            count = len(store.load())
    except StoreError as e:
        _fail(e)
    click.echo(
        f"{db_path}: dispatcher table version {DISPATCHER_TABLE_VERSION}, {count} destinations"
    )


@db_group.command("import")
@click.argument("list_file", type=click.Path(dir_okay=False))
@click.option("--append", is_flag=True, help="Add to the destinations instead of replacing them.")
@_DB_OPTION
def import_cmd(list_file: str, append: bool, db_path: str) -> None:
    """Load a Kamailio dispatcher list file into the store (replacing its content)."""
    verb = "appended" if append else "imported"
    server = _server(db_path)
    if server is not None:
        try:
            specs = read_list_file(list_file)
        except FileNotFoundError:
            _fail(StoreError(f"list file {list_file} does not exist"))
        except ListFileError as e:
            _fail(e)
        except OSError as e:
            _fail(OSError(f"cannot read {list_file}: {e.strerror or e}"))

        async def load(store: AsyncStore) -> None:
            if append:
                for spec in specs:
                    await store.add(spec)
            else:
                await store.replace(specs)

        _on_server(server, load)
        click.echo(f"{verb} {len(specs)} destinations from {list_file} into {server.describe()}")
        click.echo("  a running sipfleet picks them up by itself (or at a reload)", err=True)
        return
    db_path = _sqlite_path(db_path)
    try:
        with SqliteStore(db_path) as store:
            store.init()
            count = import_list_file(store, list_file, replace=not append)
    except (StoreError, ListFileError) as e:
        _fail(e)
    except OSError as e:
        _fail(OSError(f"cannot read {list_file}: {e.strerror or e}"))
    click.echo(f"{verb} {count} destinations from {list_file} into {db_path}")
    click.echo("  a running sipfleet picks them up at `sipfleet dispatcher reload`", err=True)


@db_group.command("export")
@_DB_OPTION
@click.option(
    "-o", "--output", "out_path", type=click.Path(dir_okay=False), help="File (default: stdout)."
)
def export_cmd(db_path: str, out_path: str | None) -> None:
    """Write the store's destinations as a Kamailio list file."""
    server = _server(db_path)
    if server is not None:
        specs = _on_server(server, lambda store: store.load())
        try:
            if out_path:
                write_list_file(out_path, specs)
            else:
                text = format_list(specs)
        except ValueError as e:
            _fail(e)
        except OSError as e:
            _fail(OSError(f"cannot write {out_path}: {e.strerror or e}"))
        if out_path:
            click.echo(
                f"exported {len(specs)} destinations from {server.describe()} to {out_path}",
                err=True,
            )
        else:
            sys.stdout.write(text)
        return
    db_path = _sqlite_path(db_path)
    if not Path(db_path).exists():
        _fail(StoreError(f"{db_path} does not exist (create it with `sipfleet db init`)"))
    text = ""
    count = 0
    try:
        with SqliteStore(db_path) as store:
            if out_path:
                count = export_list_file(store, out_path)
            else:
                text = format_list(store.load())
    except (StoreError, ValueError) as e:
        _fail(e)
    except OSError as e:
        _fail(OSError(f"cannot write {out_path}: {e.strerror or e}"))
    if out_path:
        click.echo(f"exported {count} destinations from {db_path} to {out_path}", err=True)
    else:
        sys.stdout.write(text)
