"""Import a Kamailio list file into a store, export a store to one."""

from __future__ import annotations

import os

from sipfleet.dispatch.listfile import read_list_file, write_list_file
from sipfleet.store.base import DestinationStore, StoreError

__all__ = ["export_list_file", "import_list_file"]


def import_list_file(
    store: DestinationStore, path: str | os.PathLike[str], *, replace: bool = True
) -> int:
    """Load a list file into ``store`` (replacing its content unless
    ``replace`` is false, then appending); return how many destinations.

    Raises ListFileError naming path:line; nothing is written then.
    """
    try:
        specs = read_list_file(path)
    except FileNotFoundError as exc:
        raise StoreError(f"list file {path} does not exist") from exc
    if replace:
        store.replace(specs)
    else:
        for spec in specs:
            store.add(spec)
    return len(specs)


def export_list_file(store: DestinationStore, path: str | os.PathLike[str]) -> int:
    """Write every destination of ``store`` to a list file; return how many."""
    specs = store.load()
    try:
        write_list_file(path, specs)
    except ValueError as exc:
        raise StoreError(str(exc)) from exc
    return len(specs)
