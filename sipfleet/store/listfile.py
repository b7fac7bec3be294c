"""A Kamailio list file as a destination store.

Destinations are read and written in Kamailio's format, so the same file
can serve Kamailio and sipfleet. ``add`` appends a line and ``remove``
drops matching lines, leaving comments and every other line as written;
``replace`` rewrites the whole file. Every write is atomic (temporary file,
then rename).

Admin states cannot live in a list file (Kamailio would read them as
flags), so they go to a JSON sidecar next to it, ``<list>.state.json`` by
default: ``{"version": 1, "admin": [{"set": 1, "uri": "sip:...", "state":
"disabled"}]}``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from sipfleet.dispatch.destination import DestinationSpec, StateKey, validate_spec
from sipfleet.dispatch.listfile import format_list, parse_list, read_list_file
from sipfleet.dispatch.state import AdminState
from sipfleet.store._util import atomic_write, state_key
from sipfleet.store.base import AdminDetail, StoreError

__all__ = ["ListFileStore"]

_STATE_VERSION = 1


class ListFileStore:
    """Destinations in a Kamailio list file, admin states in a JSON sidecar."""

    def __init__(
        self, path: str | os.PathLike[str], state_path: str | os.PathLike[str] | None = None
    ) -> None:
        self.path = Path(path)
        self.state_path = (
            Path(state_path) if state_path is not None else Path(f"{self.path}.state.json")
        )

    def __repr__(self) -> str:
        return f"ListFileStore({str(self.path)!r})"

    def _read_text(self) -> str:
        try:
            return self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return ""
        except (OSError, UnicodeDecodeError) as exc:
            raise StoreError(f"cannot read list file {self.path}: {exc}") from exc

    def load(self) -> list[DestinationSpec]:
        """Parse the file; raise ListFileError naming path:line, StoreError on I/O."""
        try:
            return read_list_file(self.path)
        except FileNotFoundError as exc:
            raise StoreError(f"list file {self.path} does not exist") from exc
        except OSError as exc:
            raise StoreError(f"cannot read list file {self.path}: {exc}") from exc

    def replace(self, specs: Iterable[DestinationSpec]) -> None:
        items = list(specs)
        for spec in items:
            _check(spec)
        try:
            atomic_write(self.path, format_list(items))
        except ValueError as exc:
            raise StoreError(str(exc)) from exc
        except OSError as exc:
            raise StoreError(f"cannot write list file {self.path}: {exc}") from exc

    def add(self, spec: DestinationSpec) -> None:
        _check(spec)
        text = self._read_text()
        if text and not text.endswith("\n"):
            text += "\n"
        try:
            line = format_list([spec], header=False)
        except ValueError as exc:
            raise StoreError(str(exc)) from exc
        try:
            atomic_write(self.path, text + line)
        except OSError as exc:
            raise StoreError(f"cannot write list file {self.path}: {exc}") from exc

    def remove(self, set_id: int, uri: str) -> int:
        try:
            target = state_key(set_id, uri)
        except ValueError as exc:
            raise StoreError(str(exc)) from exc
        kept: list[str] = []
        removed = 0
        for line in self._read_text().splitlines(keepends=True):
            specs = parse_list(line, str(self.path), validate=False)
            if specs and _key_or_none(specs[0]) == target:
                removed += 1
                continue
            kept.append(line)
        if removed:
            try:
                atomic_write(self.path, "".join(kept))
            except OSError as exc:
                raise StoreError(f"cannot write list file {self.path}: {exc}") from exc
        return removed

    def load_admin_states(self) -> dict[StateKey, AdminState]:
        return {k: v[0] for k, v in self.load_admin_details().items()}

    def load_admin_details(self) -> dict[StateKey, AdminDetail]:
        try:
            raw = self.state_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        except (OSError, UnicodeDecodeError) as exc:
            raise StoreError(f"cannot read state file {self.state_path}: {exc}") from exc
        try:
            doc = json.loads(raw)
            if doc.get("version") != _STATE_VERSION:
                raise ValueError(f"unsupported version {doc.get('version')!r}")
            out: dict[StateKey, AdminDetail] = {}
            for item in doc["admin"]:
                since = item.get("since")
                out[(int(item["set"]), str(item["uri"]).lower())] = (
                    AdminState(item["state"]),
                    None if since is None else float(since),
                    str(item.get("by", "")),
                )
            return out
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StoreError(f"state file {self.state_path} is not valid: {exc}") from exc

    def save_admin_state(
        self, key: StateKey, state: AdminState | None, since: float | None = None, by: str = ""
    ) -> None:
        states = self.load_admin_details()
        if state is None or state is AdminState.ENABLED:
            if states.pop(key, None) is None:
                return
        else:
            states[key] = (state, since, by)
        doc: dict[str, Any] = {
            "version": _STATE_VERSION,
            "admin": [
                {"set": k[0], "uri": k[1], "state": v[0].value, "since": v[1], "by": v[2]}
                for k, v in sorted(states.items())
            ],
        }
        try:
            atomic_write(self.state_path, json.dumps(doc, indent=1) + "\n")
        except OSError as exc:
            raise StoreError(f"cannot write state file {self.state_path}: {exc}") from exc

    def close(self) -> None:
        """Nothing to release: every call opens and closes the file."""


def _check(spec: DestinationSpec) -> None:
    try:
        validate_spec(spec)
    except ValueError as exc:
        raise StoreError(f"set {spec.set_id} destination {spec.uri!r}: {exc}") from exc


def _key_or_none(spec: DestinationSpec) -> StateKey | None:
    try:
        return state_key(spec.set_id, spec.uri)
    except ValueError:
        return None
