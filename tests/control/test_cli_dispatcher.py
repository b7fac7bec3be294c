"""``sipfleet dispatcher ...`` against a live control plane, and ``sipfleet db ...``.

The control plane is the real one (``start_control`` on unix sockets and
HTTP in a temp dir, via tests/e2e/kamailio_ref.py's ``SipfleetControl``)
serving the real methods over the core test_methods.py builds (the server's factory).
"""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from test_methods import LIST, Clock, FakeStore, Sink, build_test_core

from sipfleet.cli.db import db_group
from sipfleet.cli.dispatcher import dispatcher_group, flatten_list
from sipfleet.cli.main import cli
from sipfleet.core.node import Core
from sipfleet.core.rpc import register_rpc
from sipfleet.dispatch import parse_list
from sipfleet.store.sqlite import SqliteStore


def _load_harness() -> Any:
    if "kamailio_ref" not in sys.modules:
        path = Path(__file__).parent.parent / "e2e" / "kamailio_ref.py"
        spec = importlib.util.spec_from_file_location("kamailio_ref", path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules["kamailio_ref"] = module
        spec.loader.exec_module(module)
    return sys.modules["kamailio_ref"]


ref = _load_harness()
pytestmark = pytest.mark.timeout(60)


class Server:
    def __init__(self, control: Any, core: Core, store: FakeStore) -> None:
        self.control = control
        self.core = core
        self.store = store
        self.run_dir = str(control.run_dir)
        self.url = f"http://127.0.0.1:{control.http_port}/RPC"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    store = FakeStore(tmp_path / "sipfleet.db")
    store.init()
    store.replace(parse_list(LIST, "test.list"))
    core = build_test_core(store, Clock(), Sink(), reload_delta=0)

    def build(registry: Any) -> None:
        register_rpc(registry, core)

    with ref.sipfleet_running(tmp_path / "run", build) as control:
        yield Server(control, core, store)
    store.close()


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(dispatcher_group, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_list_prints_kamailios_json_when_piped(server: Server) -> None:
    code, out, err = run("list", "--run-dir", server.run_dir)
    assert (code, err) == (0, "")
    doc = json.loads(out)
    assert doc["NRSETS"] == 2 and out.count("\n") == 1  # compact, one line
    code, out, _ = run("list", "--set", "2", "-o", "json", "--run-dir", server.run_dir)
    assert json.loads(out) == {"NRSETS": 1, "RECORDS": [doc["RECORDS"][0]]}
    code, out, err = run("list", "--set", "9", "--run-dir", server.run_dir)
    assert (code, err) == (1, "error: destination set 9 not found\n")
    code, out, _ = run("list", "--full", "--url", server.url)
    assert json.loads(out)["RECORDS"][0]["SET"]["TARGETS"][0]["DEST"]["PORT"] == 5072


def test_list_as_a_table(server: Server) -> None:
    run("set-state", "ip", "1", "sip:127.0.0.1:5070", "--run-dir", server.run_dir)
    code, out, _ = run("list", "-o", "table", "--run-dir", server.run_dir)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == [
        "SET", "URI", "STATE", "PRIO", "DUID", "WEIGHT", "LOAD", "MAXLOAD", "LAT", "ms", "ATTRS",
    ]  # fmt: skip
    row = next(line for line in lines if "5070" in line)
    assert "IP inactive, probing" in row and "media-1" in row and "duid=media-1;weight=50" in row
    assert "AX active" in next(line for line in lines if "5072" in line)


def test_flatten_list_reads_what_it_can() -> None:
    assert flatten_list(None) == [] and flatten_list({"RECORDS": None}) == []
    rows = flatten_list(
        {"RECORDS": [{"SET": {"ID": 3, "TARGETS": [{"DEST": {"URI": "sip:a", "FLAGS": "AX"}}]}}]}
    )
    assert rows[0]["set"] == 3 and rows[0]["uri"] == "sip:a" and rows[0]["load"] is None


def test_list_as_yaml(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    code, _, err = run("list", "-o", "yaml", "--run-dir", server.run_dir)
    if "yaml" not in sys.modules:
        try:
            import yaml  # noqa: F401
        except ImportError:
            assert code == 2 and "needs PyYAML" in err
    fake = types.ModuleType("yaml")
    fake.safe_dump = lambda data, **kw: f"yaml of {sorted(data)}\n"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "yaml", fake)
    assert run("list", "-o", "yaml", "--run-dir", server.run_dir)[:2] == (
        0,
        "yaml of ['NRSETS', 'RECORDS']\n",
    )


def test_set_state_by_uri_and_by_duid(server: Server) -> None:
    rd = ["--run-dir", server.run_dir]
    assert run("set-state", "d", "1", "sip:127.0.0.1:5071", *rd) == (
        0,
        "Ok. Dispatcher state updated.\n",
        "",
    )
    assert run("set-state", "disabled", "1", "--duid", "media-1", *rd)[0] == 0
    flags = [r["flags"] for r in flatten_list(json.loads(run("list", *rd)[1]))]
    assert flags == ["AX", "DX", "DX"]
    assert len(server.store.load_admin_states()) == 2
    assert run("set-state", "x", "1", "all", *rd) == (1, "", "error: 500 - Unknown State Value\n")
    assert run("set-state", "a", "1", "sip:127.0.0.1:9", *rd)[2] == (
        "error: 500 - State Update Failed\n"
    )
    code, _, err = run("set-state", "a", "1", *rd)
    assert code == 2 and "either URI" in err
    code, _, err = run("set-state", "a", "1", "all", "--duid", "x", *rd)
    assert code == 2 and "either URI" in err


def test_reload_add_rm_hash(server: Server) -> None:
    rd = ["--run-dir", server.run_dir]
    assert run("reload", *rd)[:2] == (0, "Ok. Dispatcher successfully reloaded.\n")
    assert run("add", "1", "sip:127.0.0.1:5090", "--priority", "3", "--attrs", "duid=x", *rd)[
        :2
    ] == (0, "Ok. Dispatcher destination added.\n")
    rows = flatten_list(json.loads(run("list", *rd)[1]))
    assert {"uri": "sip:127.0.0.1:5090", "priority": 3, "duid": "x"}.items() <= next(
        r for r in rows if r["uri"] == "sip:127.0.0.1:5090"
    ).items()
    assert run("rm", "1", "sip:127.0.0.1:5090", *rd)[:2] == (
        0,
        "Ok. Dispatcher destination removed.\n",
    )
    assert "5090" not in run("list", *rd)[1]
    assert json.loads(run("hash", "7", "alice", "server.com", *rd)[1]) == {
        "hashid": 1412806172,
        "slot": 1,
    }
    assert run("hash", "7", "abc", "-o", "table", *rd)[1] == "hashid 7167810  slot 6\n"
    # Numeric-looking values stay strings: Kamailio's hash wants strings.
    assert run("hash", "7", "123", *rd)[0] == 0


def test_unreachable_says_where_it_looked(tmp_path: Path) -> None:
    code, out, err = run("list", "--socket", str(tmp_path / "nope"))
    assert (code, out) == (2, "")
    assert f"cannot reach sipfleet at unix:{tmp_path / 'nope'}" in err
    assert "--run-dir DIR, --socket PATH or --url" in err
    code, _, err = run("reload", "--url", "http://127.0.0.1:9/RPC", "--timeout", "2")
    assert code == 2 and "cannot reach sipfleet at http://127.0.0.1:9/RPC" in err


def test_the_main_command_has_the_groups() -> None:
    runner = CliRunner()
    out = runner.invoke(cli, ["--help"]).stdout
    assert "dispatcher" in out and "db" in out
    out = runner.invoke(cli, ["dispatcher", "--help"]).stdout
    for verb in ("list", "set-state", "reload", "add", "rm", "hash"):
        assert verb in out


# -- sipfleet db -----------------------------------------------------------------------


def db(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(db_group, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_db_init_import_export(tmp_path: Path) -> None:
    path = str(tmp_path / "x" / "sipfleet.db")
    assert db("init", "--db", path) == (
        0,
        f"{path}: dispatcher table version 4, 0 destinations\n",
        "",
    )
    assert db("init", "--db", path)[0] == 0  # idempotent
    listing = tmp_path / "d.list"
    listing.write_text(LIST)
    code, out, err = db("import", str(listing), "--db", path)
    assert (code, out) == (0, f"imported 3 destinations from {listing} into {path}\n")
    assert "sipfleet dispatcher reload" in err
    assert db("import", str(listing), "--append", "--db", path)[1].startswith("appended 3")
    with SqliteStore(path) as store:
        assert len(store.load()) == 6
    db("import", str(listing), "--db", path)
    code, out, _ = db("export", "--db", path)
    assert code == 0 and parse_list(out, "out") == parse_list(LIST, "in")
    target = tmp_path / "out.list"
    code, _, err = db("export", "--db", path, "-o", str(target))
    assert code == 0 and err == f"exported 3 destinations from {path} to {target}\n"
    assert parse_list(target.read_text(), "out") == parse_list(LIST, "in")


def test_db_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "bad.list"
    bad.write_text("1 sip:127.0.0.1:5070\nnot a line\n")
    path = str(tmp_path / "s.db")
    code, _, err = db("import", str(bad), "--db", path)
    assert code == 1 and f"{bad}:2" in err
    code, _, err = db("import", str(tmp_path / "missing.list"), "--db", path)
    assert code == 1 and "missing.list" in err
    code, _, err = db("export", "--db", str(tmp_path / "none.db"))
    assert code == 1 and "does not exist" in err and "sipfleet db init" in err
    monkeypatch.setenv("SIPFLEET_DB", path)  # the same variable `sipfleet run` reads
    assert db("init")[1].startswith(f"{path}: ")
