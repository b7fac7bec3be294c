"""Kamailio's dispatcher hash, its URI key extraction, and rendezvous hashing.

``ds_get_hash`` reproduces Kamailio's function bit for bit (dispatch.c),
including C's signed ``char`` on x86: the same key lands in the same slot as
on a Kamailio box. ``hrw_*`` is sipfleet's consistent-hash mode (rendezvous
or highest-random-weight hashing, Thaler & Ravishankar 1998): a destination
leaving moves only its own keys, spread evenly over the others.
"""

from __future__ import annotations

import math
import struct
from hashlib import blake2b

from sipfleet.sip.errors import BadMessage
from sipfleet.sip.uri import parse_uri

__all__ = [
    "ds_get_hash",
    "hrw_key",
    "hrw_score",
    "hrw_seed",
    "hrw_weighted_score",
    "rpc_hash",
    "uri_hash_keys",
]

_M32 = 0xFFFFFFFF
_M64 = 0xFFFFFFFFFFFFFFFF
# The high bit of bytes 1..3 of a big-endian word: where signed chars differ.
_SIGN_FIX = 0x00808080


def _accumulate(data: bytes, h: int) -> int:
    n = len(data)
    full = n - (n & 3)
    if full:
        for (u,) in struct.iter_unpack(">I", data[:full]):
            # (*p << 24) + (p[1] << 16) + (p[2] << 8) + p[3] with signed chars:
            # a negative byte at shift k costs 1 << (k + 8), i.e. its own high
            # bit shifted left once (the top byte's cost wraps out of 32 bits).
            v = (u - ((u & _SIGN_FIX) << 1)) & _M32
            h += v ^ (v >> 3)
    v = 0
    for b in data[full:]:
        v = ((v << 8) + (b - 256 if b > 127 else b)) & _M32
    h += v ^ (v >> 3)
    return h & _M32


def _bytes(key: str | bytes) -> bytes:
    return key if isinstance(key, bytes) else key.encode("utf-8")


def ds_get_hash(key1: str | bytes | None, key2: str | bytes | None = None) -> int:
    """Kamailio's ``ds_get_hash(x, y)``: a 32-bit value, never 0 for a key.

    ``None`` stands for Kamailio's NULL ``str`` (skipped); both None gives 0.
    """
    if key1 is None and key2 is None:
        return 0
    h = 0
    if key1 is not None:
        h = _accumulate(_bytes(key1), h)
    if key2 is not None:
        h = _accumulate(_bytes(key2), h)
    h = (h + (h >> 11) + (h >> 13) + (h >> 23)) & _M32
    return h or 1


def rpc_hash(nslots: int, val1: str, val2: str | None = None) -> dict[str, int]:
    """The result of ``dispatcher.hash``: ``{"hashid": h, "slot": h % nslots}``."""
    hashid = ds_get_hash(val1, val2)
    return {"hashid": hashid, "slot": hashid % nslots if nslots > 0 else 0}


def uri_hash_keys(uri: str, user_only: bool = False) -> tuple[str | None, str | None]:
    """The (key1, key2) Kamailio hashes for a URI (``get_uri_hash_keys``).

    key1 is the user part (None when absent); key2 the host as written, plus
    ``:port`` only when a port is given and differs from 5060 (5061 for
    sips); key2 is None with ``user_only`` (Kamailio's DS_HASH_USER_ONLY).
    Raises ValueError for a URI without host or one that does not parse.
    """
    text = uri.strip()
    try:
        parsed = parse_uri(text)
    except BadMessage as exc:
        raise ValueError(f"invalid uri {text!r}: {exc.reason}") from None
    if not parsed.host:
        raise ValueError(f"invalid uri, no host present: {text!r}")
    key1 = parsed.user
    if user_only:
        return key1, None
    # Kamailio hashes the host as written (case kept, IPv6 brackets kept):
    # slice it out of the raw text the same way parse_uri splits it.
    rest = text[text.find(":") + 1 :]
    q = rest.find("?")
    if q >= 0:
        rest = rest[:q]
    at = rest.rfind("@")
    if at >= 0:
        rest = rest[at + 1 :]
    hostport = rest.partition(";")[0]
    if parsed.port is None:
        return key1, hostport
    default = 5061 if parsed.scheme == "sips" else 5060
    if parsed.port == default:
        return key1, hostport[: hostport.rfind(":")]
    return key1, hostport


def _h64(data: bytes) -> int:
    return int.from_bytes(blake2b(data, digest_size=8).digest(), "big")


def hrw_key(key1: str | None, key2: str | None = None) -> int:
    """A stable 64-bit key for rendezvous hashing (same inputs as ds_get_hash)."""
    return _h64(b"%s\x00%s" % (_bytes(key1 or ""), _bytes(key2 or "")))


def hrw_seed(identity: str) -> int:
    """A destination's stable 64-bit seed (from its duid, else its URI)."""
    return _h64(_bytes(identity))


def hrw_score(key: int, seed: int) -> int:
    """Rendezvous score of ``key`` on a destination: splitmix64 of key ^ seed."""
    z = (key ^ seed) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def hrw_weighted_score(key: int, seed: int, weight: int) -> float:
    """Weighted rendezvous score ``-w / ln(u)`` (Schindelhauer & Schomaker 2005).

    ``u`` is the plain score mapped into (0, 1); a destination of weight
    ``w`` wins a share of keys proportional to ``w``.
    """
    u = ((hrw_score(key, seed) >> 11) + 0.5) / 9007199254740992.0
    return -weight / math.log(u)
