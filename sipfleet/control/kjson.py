"""JSON text as Kamailio's jsonrpcs prints it (srjson, a cJSON fork).

Replies are pretty-printed by default in Kamailio 5.6: objects one member a
line, tab-indented, ``"key":<TAB>value``; arrays on one line, items joined
by ", ". Tools read this layout line by line (``kamctl``'s ``filter_json``
and its monitor do ``grep "result" | awk -F'"' '{print $4}'``), so the FIFO
and datagram transports keep it byte for byte. Numbers follow cJSON: an
integral value prints as an integer, others with ``%f`` (or ``%e`` when
tiny or huge).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from itertools import accumulate

import orjson

__all__ = ["MAX_DEPTH", "dumps_compact", "dumps_pretty", "loads_lenient", "nesting_depth"]

_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}
_NEEDS_ESCAPE = re.compile(r'["\\\x00-\x1f]')


def _escape_char(m: re.Match[str]) -> str:
    c = m.group()
    return _ESCAPES.get(c) or f"\\u{ord(c):04x}"


def _string(s: str) -> str:
    return '"' + _NEEDS_ESCAPE.sub(_escape_char, s) + '"'


def _number(value: int | float) -> str:
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return "null"  # cJSON has no spelling for these either
    if value == math.floor(value) and abs(value) < 1.0e60:
        return f"{value:.0f}"
    if abs(value) < 1.0e-6 or abs(value) > 1.0e9:
        return f"{value:e}"
    return f"{value:f}"


def _pretty(value: object, depth: int, out: list[str]) -> None:
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(_string(value))
    elif isinstance(value, int | float):
        out.append(_number(value))
    elif isinstance(value, bytes):
        out.append(_string(value.decode("utf-8", "replace")))
    elif isinstance(value, Mapping):
        depth += 1
        if not value:
            out.append("{\n" + "\t" * (depth - 1) + "}")
            return
        out.append("{\n")
        indent = "\t" * depth
        last = len(value) - 1
        for i, (key, item) in enumerate(value.items()):
            out.append(indent + _string(str(key)) + ":\t")
            _pretty(item, depth, out)
            out.append(",\n" if i < last else "\n")
        out.append("\t" * (depth - 1) + "}")
    elif isinstance(value, Sequence):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(", ")
            _pretty(item, depth + 1, out)
        out.append("]")
    else:
        raise TypeError(f"cannot render {type(value).__name__} as JSON")


def dumps_pretty(value: object) -> bytes:
    """Kamailio's pretty layout (no trailing newline, as Kamailio writes it)."""
    out: list[str] = []
    _pretty(value, 0, out)
    return "".join(out).encode("utf-8", "replace")


def _default(value: object) -> object:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, tuple):
        return list(value)
    raise TypeError


def dumps_compact(value: object) -> bytes:
    """One line of JSON (fast path for big replies when pretty is off)."""
    try:
        return orjson.dumps(value, default=_default, option=orjson.OPT_NON_STR_KEYS)
    except TypeError:
        # orjson stops at 64-bit ints; the pure printer has no such limit.
        return dumps_pretty(value).replace(b"\n", b"").replace(b"\t", b"")


MAX_DEPTH = 128
"""Deepest nesting of arrays and objects accepted. A request is a method name
and a few flat params; the bound keeps a hostile document from recursing the
parser into a RecursionError (srjson has none and recurses on the C stack)."""

# A string, or an unclosed one to the end: every quote starts a match, and the
# possessive loop never backtracks, so one pass is linear on any input.
_STRINGS = re.compile(rb'"(?:[^"\\]|\\.)*+(?:"|\\?\Z)', re.S)
_NOT_BRACKETS = bytes(c for c in range(256) if c not in b"[]{}")
_STEP = [0] * 256
for _c in b"[{":
    _STEP[_c] = 1
for _c in b"]}":
    _STEP[_c] = -1
_LENIENT = json.JSONDecoder(strict=False)


def nesting_depth(data: bytes) -> int:
    """How deep arrays and objects nest in ``data``, outside strings (linear,
    C-speed passes)."""
    brackets = _STRINGS.sub(b"", data).translate(None, _NOT_BRACKETS)
    if not brackets:
        return 0
    return max(0, *accumulate(map(_STEP.__getitem__, brackets)))


def loads_lenient(data: bytes) -> object:
    """Parse one JSON value as srjson (cJSON) does: what follows it is ignored,
    and raw control characters (CR, LF, TAB ...) inside strings are kept, as
    kamcli sends them in ``tm.t_uac_wait_block`` headers.

    Raises ValueError when no JSON value starts the input, or when it nests
    deeper than ``MAX_DEPTH``.
    """
    depth = nesting_depth(data)
    if depth > MAX_DEPTH:
        raise ValueError(f"JSON nested {depth} deep, over {MAX_DEPTH}")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    text = data.decode("utf-8", "replace").lstrip()
    try:
        value, _ = _LENIENT.raw_decode(text)
    except RecursionError:  # cannot happen under MAX_DEPTH; never a traceback if it does
        raise ValueError("JSON nested too deep") from None
    return value
