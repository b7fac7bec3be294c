"""ListFileStore: Kamailio list file plus a JSON sidecar for admin states."""

from __future__ import annotations

from pathlib import Path

import pytest

from sipfleet.dispatch import AdminState, DestinationSpec, ListFileError
from sipfleet.store import EXAMPLE_SPECS, ListFileStore, StoreError

S = DestinationSpec


def test_load_replace_round_trip(tmp_path: Path) -> None:
    store = ListFileStore(tmp_path / "dispatcher.list")
    store.replace(EXAMPLE_SPECS)
    assert store.load() == list(EXAMPLE_SPECS)


def test_add_and_remove_keep_other_lines(tmp_path: Path) -> None:
    p = tmp_path / "d.list"
    p.write_text(
        "# my sets\n1 sip:a.example 0 0 duid=A # primary\n\n# backups\n2 sip:b.example\n2 SIP:A.example"
    )
    store = ListFileStore(p)
    store.add(S(3, "sip:c.example", 8, 1, "duid=C", "third"))
    assert p.read_text().endswith("2 SIP:A.example\n3 sip:c.example 8 1 duid=C # third\n")
    assert store.remove(2, "a.example") == 1  # case-insensitive, sip: added
    assert store.remove(2, "sip:zzz") == 0
    text = p.read_text()
    assert "# my sets\n" in text and "# backups\n" in text and "# primary" in text
    assert [s.uri for s in store.load()] == ["sip:a.example", "sip:b.example", "sip:c.example"]


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="does not exist"):
        ListFileStore(tmp_path / "none.list").load()
    p = tmp_path / "bad.list"
    p.write_text("1 sip:a\n1 sip:b 0 0 weight=500\n")
    with pytest.raises(ListFileError) as info:
        ListFileStore(p).load()
    assert str(info.value).startswith(f"{p}:2: ")


def test_write_refuses_bad_specs(tmp_path: Path) -> None:
    store = ListFileStore(tmp_path / "d.list")
    with pytest.raises(StoreError, match="set 1 destination 'sip:a b'"):
        store.add(S(1, "sip:a b"))
    with pytest.raises(StoreError):
        store.replace([S(1, "sip:ok"), S(1, "sip:x", 0, 0, "weight=x")])
    assert not (tmp_path / "d.list").exists()


def test_admin_state_sidecar(tmp_path: Path) -> None:
    store = ListFileStore(tmp_path / "d.list")
    assert store.load_admin_states() == {}
    store.save_admin_state((1, "sip:a"), AdminState.DISABLED)
    store.save_admin_state((2, "SIP:B"), AdminState.DISABLED)
    assert store.state_path == tmp_path / "d.list.state.json"
    assert ListFileStore(tmp_path / "d.list").load_admin_states() == {
        (1, "sip:a"): AdminState.DISABLED,
        (2, "sip:b"): AdminState.DISABLED,
    }
    store.save_admin_state((1, "sip:a"), AdminState.ENABLED)
    store.save_admin_state((7, "sip:never"), None)
    assert store.load_admin_states() == {(2, "sip:b"): AdminState.DISABLED}


def test_bad_sidecar(tmp_path: Path) -> None:
    store = ListFileStore(tmp_path / "d.list", tmp_path / "state.json")
    (tmp_path / "state.json").write_text(
        '{"version": 1, "admin": [{"set": 1, "uri": "sip:a", "state": "asleep"}]}'
    )
    with pytest.raises(StoreError, match="not valid"):
        store.load_admin_states()
