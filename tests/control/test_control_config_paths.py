"""``[control]`` validation, run-directory resolution, and the CLI's param parsing."""

from __future__ import annotations

import os
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from pydantic import ValidationError

from sipfleet.cli.rpc import parse_param, rpc_cmd
from sipfleet.config.control import ControlConfig, is_loopback, parse_hostport
from sipfleet.control import paths
from sipfleet.control.paths import (
    BINRPC_SOCKET,
    ENV_RUN_DIR,
    RunDirError,
    find_run_dir,
    prepare_run_dir,
    run_dir_candidates,
)

# -- config ------------------------------------------------------------------


def test_defaults_turn_every_transport_on_locally():
    c = ControlConfig()
    assert (c.http.enabled, c.http.host, c.http.port, c.http.path) == (
        True,
        "127.0.0.1",
        9060,
        "/RPC",
    )
    assert c.fifo.enabled and c.dgram.enabled and c.binrpc.enabled
    assert (c.dgram.udp, c.binrpc.tcp, c.binrpc.udp) == (None, None, None)
    assert c.fifo.reply_dir == Path("/tmp")
    assert c.socket.mode == 0o600
    assert c.max_request_bytes == 1 << 20


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            {"http": {"host": "0.0.0.0"}},
            "refusing to serve RPC on non-loopback address '0.0.0.0' without a token",
        ),
        ({"http": {"host": "10.1.2.3", "token": ""}}, "without a token"),
        ({"http": {"tls_cert": "/x.pem"}}, "set both tls_cert and tls_key"),
        ({"http": {"path": "RPC"}}, "must start with '/'"),
        ({"binrpc": {"tcp": "0.0.0.0:2049"}}, "not a loopback address"),
        ({"binrpc": {"udp": "192.0.2.1:2046"}}, "control.binrpc.udp"),
        ({"dgram": {"udp": "192.0.2.1:9062"}}, "not a loopback address"),
        ({"dgram": {"udp": "9062"}}, "expected HOST:PORT"),
        ({"http": {"port": 70000}}, "less than or equal to 65535"),
        ({"bogus": 1}, "Extra inputs are not permitted"),
        ({"http": {"token": "s3cret"}}, "6 characters is too short to be guess-proof"),
        ({"http": {"token": " " * 20}}, "must not contain whitespace"),
        ({"http": {"token": "\t\n"}}, "must not contain whitespace"),
        ({"http": {"token": "a" * 15}}, "15 characters is too short"),
        ({"http": {"token": "correct horse battery"}}, "must not contain whitespace"),
        ({"http": {"allowed_hosts": ["http://x.example"]}}, "is not HOST or HOST:PORT"),
        ({"http": {"allowed_hosts": ["x.example:99999"]}}, "is not HOST or HOST:PORT"),
    ],
)
def test_bad_configs_are_refused_clearly(data, message):
    with pytest.raises(ValidationError, match=message):
        ControlConfig.model_validate(data)


def test_remote_binds_with_a_token_or_explicit_consent():
    c = ControlConfig.model_validate({"http": {"host": "0.0.0.0", "token": "s3cret-s3cret-s3cret"}})
    assert c.http.token is not None and c.http.token.get_secret_value() == "s3cret-s3cret-s3cret"
    assert "s3cret" not in repr(c)
    ok = ControlConfig.model_validate(
        {"http": {"token": "x" * 16, "allowed_hosts": ["LB1.example.net", "[::1]:9060"]}}
    )
    assert ok.http.allowed_hosts == ["lb1.example.net", "[::1]:9060"]


def test_a_refused_token_is_not_echoed():
    with pytest.raises(ValidationError) as e:
        ControlConfig.model_validate({"http": {"token": "hunter2"}})
    assert "hunter2" not in str(e.value)
    ControlConfig.model_validate(
        {"binrpc": {"tcp": "0.0.0.0:2049"}, "allow_remote_unauthenticated": True}
    )
    # A disabled HTTP transport needs no token wherever it would bind.
    ControlConfig.model_validate({"http": {"enabled": False, "host": "0.0.0.0"}})


def test_empty_strings_mean_unset_and_modes_read_as_octal():
    c = ControlConfig.model_validate(
        {
            "run_dir": "",
            "http": {"token": "", "tls_cert": "", "tls_key": ""},
            "socket": {"mode": "0660", "group": ""},
        }
    )
    assert c.run_dir is None and c.http.token is None and c.http.tls_cert is None
    assert c.socket.mode == 0o660 and c.socket.group is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("127.0.0.1:9062", ("127.0.0.1", 9062)),
        ("[::1]:2049", ("::1", 2049)),
        ("localhost:1", ("localhost", 1)),
    ],
)
def test_hostport(text, expected):
    assert parse_hostport(text) == expected


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("[::1]", True), ("localhost", True),
     ("0.0.0.0", False), ("::", False), ("10.0.0.1", False), ("example.com", False)],
)  # fmt: skip
def test_loopback(host, loopback):
    assert is_loopback(host) is loopback


# -- run directory -------------------------------------------------------------


def test_candidates_in_order():
    env = {"XDG_RUNTIME_DIR": "/run/user/1000"}
    got = [(rd.path, rd.source) for rd in run_dir_candidates(None, env)]
    assert got == [
        (Path("/run/sipfleet"), "/run"),
        (Path("/run/user/1000/sipfleet"), "XDG_RUNTIME_DIR"),
        (Path(f"/tmp/sipfleet-{os.getuid()}"), "temp"),
    ]
    assert [rd.source for rd in run_dir_candidates("/x", {ENV_RUN_DIR: "/y"})] == ["--run-dir"]
    assert run_dir_candidates(None, {ENV_RUN_DIR: "/y"})[0].path == Path("/y")


def test_server_takes_the_first_usable_directory(tmp_path, monkeypatch):
    blocked = tmp_path / "file"
    blocked.write_text("not a dir")
    monkeypatch.setattr(paths, "SYSTEM_RUN_DIR", blocked / "sipfleet")
    xdg = tmp_path / "xdg"
    xdg.mkdir()
    rd = prepare_run_dir(None, {"XDG_RUNTIME_DIR": str(xdg)})
    assert (rd.path, rd.source) == (xdg / "sipfleet", "XDG_RUNTIME_DIR")
    assert rd.path.is_dir() and rd.path.stat().st_mode & 0o777 == 0o700

    explicit = prepare_run_dir(tmp_path / "a" / "b", {})
    assert explicit.path.is_dir() and explicit.source == "--run-dir"


def test_no_usable_directory_says_what_was_tried(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("x")
    with pytest.raises(RunDirError, match=r"no usable run directory: .*file/sub"):
        prepare_run_dir(blocked / "sub", {})


def test_client_finds_the_directory_holding_the_socket(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "SYSTEM_RUN_DIR", tmp_path / "system")
    monkeypatch.setattr(paths.tempfile, "gettempdir", lambda: str(tmp_path / "tmp"))
    xdg = tmp_path / "xdg"
    (xdg / "sipfleet").mkdir(parents=True)
    (xdg / "sipfleet" / BINRPC_SOCKET).touch()
    rd, tried = find_run_dir(BINRPC_SOCKET, None, {"XDG_RUNTIME_DIR": str(xdg)})
    assert rd.path == xdg / "sipfleet"
    assert tried[:2] == [tmp_path / "system" / BINRPC_SOCKET, xdg / "sipfleet" / BINRPC_SOCKET]
    # Nothing anywhere: the first candidate, so errors name where it would be.
    rd, tried = find_run_dir(BINRPC_SOCKET, None, {})
    assert rd.path == tmp_path / "system" and len(tried) == 2


# -- CLI ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", 1),
        ("-5", -5),
        ("2.5", 2.5),
        ("1e3", 1000.0),
        ("s:1", "1"),
        ("s:", ""),
        ("i:7", 7),
        ("i:-7", -7),
        ("sip:10.0.0.1:5060", "sip:10.0.0.1:5060"),
        ("ip", "ip"),
        ("0x10", "0x10"),
        ("", ""),
    ],
)
def test_params_as_kamcli_takes_them(text, value):
    got = parse_param(text)
    assert got == value and type(got) is type(value)


def test_i_prefix_needs_an_integer():
    with pytest.raises(click.BadParameter):
        parse_param("i:x")


def test_unreachable_server_names_the_address_and_the_fix(tmp_path):
    result = CliRunner().invoke(rpc_cmd, ["--run-dir", str(tmp_path), "core.version"])
    assert result.exit_code == 2
    assert f"cannot reach sipfleet at unix:{tmp_path}/{BINRPC_SOCKET}" in result.output
    assert "--run-dir DIR, --socket PATH or --url" in result.output


def test_usage_errors_exit_2():
    assert CliRunner().invoke(rpc_cmd, []).exit_code == 2
    assert CliRunner().invoke(rpc_cmd, ["--socket", "/nonexistent", "x.y", "i:zz"]).exit_code == 2


def test_socket_owner_and_group_by_name_or_id():
    from sipfleet.aio.rpc_unix import Perms
    from sipfleet.config.control import SocketConfig

    assert Perms.from_config(SocketConfig(owner="root", group="0")) == Perms(0o600, 0, 0)
    assert Perms.from_config(SocketConfig(owner=1000, mode=0o660)) == Perms(0o660, 1000, -1)
    with pytest.raises(ValueError, match="no user"):
        Perms.from_config(SocketConfig(owner="no-such-user-sipfleet"))
    with pytest.raises(ValueError, match="no group"):
        Perms.from_config(SocketConfig(group="no-such-group-sipfleet"))
