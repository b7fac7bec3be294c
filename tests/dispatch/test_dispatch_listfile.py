"""Kamailio list files: parsing, errors with path:line, writing, round trip."""

from __future__ import annotations

from pathlib import Path

import pytest

from sipfleet.dispatch import DestinationSpec, ListFileError, format_list, parse_list
from sipfleet.dispatch.listfile import read_list_file, write_list_file

S = DestinationSpec


@pytest.mark.parametrize(
    ("line", "spec"),
    [
        ("1 sip:10.0.0.1", S(1, "sip:10.0.0.1")),
        ("1 sip:10.0.0.1 8", S(1, "sip:10.0.0.1", 8)),
        ("1 sip:10.0.0.1 0x18 5", S(1, "sip:10.0.0.1", 24, 5)),
        ("1\tsip:10.0.0.1\t0\t-3\tduid=a", S(1, "sip:10.0.0.1", 0, -3, "duid=a")),
        ("  2 10.0.0.1:5070 1 2 weight=5;duid=x  ", S(2, "10.0.0.1:5070", 1, 2, "weight=5;duid=x")),
        (
            "1 sip:a.example 0 0 duid=a # media one",
            S(1, "sip:a.example", 0, 0, "duid=a", "media one"),
        ),
        ("1 sip:a.example 0 0 # no attrs", S(1, "sip:a.example", 0, 0, "", "no attrs")),
        ("1 sip:a.example 0 #c", S(1, "sip:a.example", 0, 0, "", "c")),
        ("1 sip:a.example#c", S(1, "sip:a.example", 0, 0, "", "c")),
        ("1 sip:a.example 0 0 a=b#c", S(1, "sip:a.example", 0, 0, "a=b#c")),  # '#' in attrs kept
        (
            "1 sip:a.example 0 0 a=b trailing words",
            S(1, "sip:a.example", 0, 0, "a=b", "trailing words"),
        ),
    ],
)
def test_parse_line(line: str, spec: DestinationSpec) -> None:
    assert parse_list(line) == [spec]


def test_comments_and_blank_lines() -> None:
    text = "# header\n\n   \n\t# indented comment\n1 sip:h1\n#1 sip:h2\n"
    assert parse_list(text) == [S(1, "sip:h1")]


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("x sip:h", 1, "bad set id 'x'"),
        ("# c\n1 sip:h\n-1 sip:h", 3, "bad set id '-1'"),
        ("1", 1, "missing destination URI after set id 1"),
        ("1 sip:h zz", 1, "bad flags 'zz'"),
        ("1 sip:h -1", 1, "bad flags '-1'"),
        ("1 sip:h 0x", 1, "bad flags '0x'"),
        ("1 sip:h 0 p1", 1, "bad priority 'p1'"),
        ("1 sip:h 99999999999", 1, "out of range"),
        ("\n\n1 sip:a b@c", 3, "missing"),  # 'b@c' is read as flags
        ("1 sip:h:99999", 1, "bad destination URI"),
        ("1 tel:+123", 1, "tel: URI cannot be a destination"),
        ("1 sip:[::zz]", 1, "bad IPv6"),
        ("1 sip:h 0 0 weight=abc", 1, "attribute weight='abc' is not an integer"),
        ("1 sip:h 0 0 weight=101", 1, "attribute weight=101 out of range"),
        ("1 sip:h 0 0 maxload=-1", 1, "attribute maxload=-1 out of range"),
        ("1 sip:h 0 0 =x", 1, "attribute without name"),
    ],
)
def test_errors_name_path_line_and_reason(text: str, line: int, reason: str) -> None:
    with pytest.raises(ListFileError) as info:
        parse_list(text, "etc/dispatcher.list")
    err = info.value
    assert err.path == "etc/dispatcher.list"
    assert err.line == line
    assert str(err).startswith(f"etc/dispatcher.list:{line}: ")
    if reason != "missing":
        assert reason in str(err)


def test_validate_off_accepts_bad_uri() -> None:
    assert parse_list("1 sip:h:99999", validate=False) == [S(1, "sip:h:99999")]


def test_read_non_utf8(tmp_path: Path) -> None:
    p = tmp_path / "d.list"
    p.write_bytes(b"1 sip:a\n1 sip:\xff\n")
    with pytest.raises(ListFileError) as info:
        read_list_file(p)
    assert info.value.line == 2
    assert "not UTF-8" in str(info.value)


ROUND_TRIP = [
    S(1, "sip:10.0.0.11:5060", 0, 10, "duid=media-1;weight=50;maxload=200", "media one"),
    S(1, "sip:10.0.0.12:5060", 8, 10, "duid=media-2;weight=50;ping_from=sip:lb@edge.example"),
    S(2, "10.0.0.13", 0, -5, "", "backup, no scheme"),
    S(3, "sips:m.example;transport=tls", 36, 0, "x=1#2", ""),
]


def test_round_trip(tmp_path: Path) -> None:
    p = tmp_path / "d.list"
    write_list_file(p, ROUND_TRIP)
    assert read_list_file(p) == ROUND_TRIP
    assert p.read_text().startswith("# setid destination flags priority attrs")
    assert not list(tmp_path.glob(".d.list.*"))  # no temporary left behind


def test_format_is_kamailio_readable() -> None:
    text = format_list([S(1, "sip:a", 8, 2, "duid=x", "desc\nwith newline")], header=False)
    assert text == "1 sip:a 8 2 duid=x # desc with newline\n"


@pytest.mark.parametrize(
    "spec",
    [S(1, "sip:a b"), S(1, "sip:a#b"), S(1, "sip:a", 0, 0, "a=b c"), S(1, "sip:a", 0, 0, "#x")],
)
def test_format_refuses_unwritable(spec: DestinationSpec) -> None:
    with pytest.raises(ValueError):
        format_list([spec])
