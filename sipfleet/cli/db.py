"""``sipfleet db ...``: the embedded SQLite store, directly (no server needed).

The file holds Kamailio's ``dispatcher`` table (version 4), so Kamailio's
own tools can read it too. A running sipfleet sees changes made here at its
next ``sipfleet dispatcher reload`` (or SIGHUP).

Exit codes: 0 done, 1 the store or the list file refused, 2 bad usage.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

import click

from sipfleet.dispatch.errors import ListFileError
from sipfleet.dispatch.listfile import format_list
from sipfleet.store.base import StoreError
from sipfleet.store.sqlite import DISPATCHER_TABLE_VERSION, SqliteStore
from sipfleet.store.transfer import export_list_file, import_list_file

__all__ = ["db_group"]

_DB_OPTION = click.option(
    "--db",
    "db_path",
    envvar="SIPFLEET_DB",
    default="sipfleet.db",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="The SQLite store ($SIPFLEET_DB; what `sipfleet run --db` serves).",
)


def _fail(e: Exception) -> NoReturn:
    click.echo(f"sipfleet db: {e}", err=True)
    sys.exit(1)


@click.group("db", context_settings={"help_option_names": ["-h", "--help"]})
def db_group() -> None:
    """The SQLite destination store: create it, import and export Kamailio list files."""


@db_group.command("init")
@_DB_OPTION
def init_cmd(db_path: str) -> None:
    """Create the tables (Kamailio's dispatcher table, version 4) unless present."""
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
    try:
        with SqliteStore(db_path) as store:
            store.init()
            count = import_list_file(store, list_file, replace=not append)
    except (StoreError, ListFileError) as e:
        _fail(e)
    except OSError as e:
        _fail(OSError(f"cannot read {list_file}: {e.strerror or e}"))
    verb = "appended" if append else "imported"
    click.echo(f"{verb} {count} destinations from {list_file} into {db_path}")
    click.echo("  a running sipfleet picks them up at `sipfleet dispatcher reload`", err=True)


@db_group.command("export")
@_DB_OPTION
@click.option(
    "-o", "--output", "out_path", type=click.Path(dir_okay=False), help="File (default: stdout)."
)
def export_cmd(db_path: str, out_path: str | None) -> None:
    """Write the store's destinations as a Kamailio list file."""
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
