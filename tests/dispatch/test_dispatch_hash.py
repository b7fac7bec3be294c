"""Kamailio's ds_get_hash, URI hash keys and dispatcher.hash."""

from __future__ import annotations

import pytest

from sipfleet.dispatch.hashing import ds_get_hash, hrw_key, hrw_score, rpc_hash, uri_hash_keys

# Computed with Kamailio's ds_get_hash (dispatch.c) compiled by gcc on
# x86-64, where char is signed; the first two are KAMAILIO.md's vectors.
C_VECTORS = [
    (("alice", "server.com"), 1412806172),
    (("abc",), 7167810),
    (("a84b4c76e66710@pc33.atlanta.com",), 2175018094),
    (("müller", "bücher.example:5070"), 1358810392),  # bytes >= 0x80: signed chars
    (("",), 1),  # h == 0 becomes 1
    (("ÿÿÿÿÿ", "€x"), 2476415095),
    (("3848276298220188511@atlanta.example.com",), 3416024093),
    (("+4930123456", "10.0.0.1:5080"), 87901687),
    (("bob", "[2001:db8::1]:5070"), 499091971),
]


@pytest.mark.parametrize(("keys", "expected"), C_VECTORS)
def test_ds_get_hash_matches_kamailio_c(keys: tuple[str, ...], expected: int) -> None:
    assert ds_get_hash(*keys) == expected


def test_ds_get_hash_null_keys() -> None:
    assert ds_get_hash(None, None) == 0
    assert ds_get_hash(None, "abc") == ds_get_hash("abc")
    assert ds_get_hash(b"abc") == 7167810


@pytest.mark.parametrize(
    ("uri", "user_only", "expected"),
    [
        ("sip:alice@server.com", False, ("alice", "server.com")),
        ("sip:alice@Server.COM:5060", False, ("alice", "Server.COM")),  # host as written
        ("sip:alice@server.com:5070;transport=tcp", False, ("alice", "server.com:5070")),
        ("sips:alice@server.com:5061", False, ("alice", "server.com")),
        ("sips:alice@server.com:5060", False, ("alice", "server.com:5060")),
        ("sip:server.com", False, (None, "server.com")),
        ("sip:bob@[2001:db8::1]:5070", False, ("bob", "[2001:db8::1]:5070")),
        ("sip:bob:secret@h.example?x=y", False, ("bob", "h.example")),
        ("  sip:alice@server.com  ", False, ("alice", "server.com")),
        ("sip:alice@server.com:5070", True, ("alice", None)),
    ],
)
def test_uri_hash_keys(uri: str, user_only: bool, expected: tuple[str | None, str | None]) -> None:
    assert uri_hash_keys(uri, user_only) == expected


@pytest.mark.parametrize("uri", ["", "alice", "sip:", "sip:a b@c", "tel:+123"])
def test_uri_hash_keys_rejects(uri: str) -> None:
    with pytest.raises(ValueError):
        uri_hash_keys(uri)


def test_uri_hash_matches_kamailio_vector() -> None:
    assert ds_get_hash(*uri_hash_keys("sip:alice@server.com:5060")) == 1412806172


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        ((7, "alice", "server.com"), {"hashid": 1412806172, "slot": 1412806172 % 7}),
        ((7, "alice", "server.com"), {"hashid": 1412806172, "slot": 1}),  # captured from Kamailio
        ((0, "abc"), {"hashid": 7167810, "slot": 0}),
        ((10, "abc", None), {"hashid": 7167810, "slot": 0}),
    ],
)
def test_rpc_hash(args: tuple[int, str, str | None], expected: dict[str, int]) -> None:
    assert rpc_hash(*args) == expected


def test_hrw_is_stable_across_processes() -> None:
    # blake2b + splitmix64: no dependence on PYTHONHASHSEED.
    assert hrw_key("abc") == hrw_key("abc", None)
    assert hrw_key("a", "b") != hrw_key("ab", None)
    assert hrw_score(hrw_key("call-1"), 12345) == hrw_score(hrw_key("call-1"), 12345)
