"""Kamailio's dispatcher list file: ``setid destination [flags] [priority] [attrs]``.

Reading follows ``ds_load_list`` (dispatch.c): blank lines and lines starting
with ``#`` are skipped; ``#`` ends the set id, URI, flags and priority
fields; attrs run to the next white space. Flags are decimal or ``0x`` hex
(6.1). Where Kamailio silently misreads a malformed line (a set id that is
not a number, flags with letters), sipfleet refuses it with ``path:line``
and the reason.

sipfleet extension, compatible both ways: a ``# comment`` after the fields
of a line is the destination's description (the ``description`` column of
the database table). Text after the attrs without ``#`` is read the same
way (Kamailio ignores it).
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path

from sipfleet.dispatch._gc import gc_paused
from sipfleet.dispatch.destination import CACHE_LIMIT, DestinationSpec, check_uri_attrs
from sipfleet.dispatch.errors import ListFileError

__all__ = ["format_list", "parse_list", "read_list_file", "write_list_file"]

_TOKEN = re.compile(r"\S+")
#: Validated lines already read, bounded like the URI cache.
_line_cache: dict[str, DestinationSpec] = {}
_tuple_new = tuple.__new__
_MAX_INT = (1 << 31) - 1


def _int_field(tok: str, what: str, path: str, lineno: int, *, hex_ok: bool, signed: bool) -> int:
    negative = signed and tok.startswith("-")
    body = tok[1:] if negative else tok
    try:
        if hex_ok and body[:2].lower() == "0x":
            value = int(body[2:], 16)
        elif body.isdecimal():
            value = int(body, 10)
        else:
            raise ValueError
    except ValueError:
        kind = "a decimal or 0x-hex integer" if hex_ok else "an integer"
        raise ListFileError(f"bad {what} {tok!r} (expected {kind})", path, lineno) from None
    if value > _MAX_INT:
        raise ListFileError(f"{what} {tok!r} out of range", path, lineno)
    return -value if negative else value


def _split_commented(s: str) -> tuple[list[str], str]:
    """Fields and trailing comment of a line holding ``#`` (the slow path)."""
    fields: list[str] = []
    for m in _TOKEN.finditer(s):
        tok = m.group()
        if len(fields) < 4:
            cut = tok.find("#")
            if cut >= 0:
                if cut:
                    fields.append(tok[:cut])
                return fields, s[m.start() + cut + 1 :].strip()
            fields.append(tok)
        elif len(fields) == 4:
            if tok.startswith("#"):
                return fields, s[m.start() + 1 :].strip()
            fields.append(tok)  # attrs keep an inner '#', as in Kamailio
        else:
            tail = s[m.start() :]
            return fields, (tail[1:] if tail.startswith("#") else tail).strip()
    return fields, ""


def parse_list(text: str, path: str = "<list>", *, validate: bool = True) -> list[DestinationSpec]:
    """Parse list-file text into specs in file order.

    With ``validate`` every URI and attrs string is checked here, so errors
    name ``path:line``; the parse results are cached, so building the
    snapshot afterwards parses nothing twice. Raises ListFileError.
    """
    with gc_paused():
        return _parse(text, path, validate)


def _parse(text: str, path: str, validate: bool) -> list[DestinationSpec]:
    specs: list[DestinationSpec] = []
    append = specs.append
    cached = _line_cache.get
    for lineno, line in enumerate(text.splitlines(), 1):
        hit = cached(line)
        if hit is not None:
            # A line is read the same wherever it stands: reloading an
            # unchanged list re-parses nothing.
            append(hit)
            continue
        s = line.strip()
        if not s or s[0] == "#":
            continue
        if "#" in s:
            fields, desc = _split_commented(s)
            if not fields:
                continue
        else:
            fields = s.split(None, 5)
            desc = ""
            if len(fields) == 6:
                desc = fields.pop().strip()
        tok = fields[0]
        if not tok.isdecimal():
            raise ListFileError(
                f"bad set id {tok!r} (expected a non-negative integer)", path, lineno
            )
        set_id = int(tok)
        if set_id > _MAX_INT:
            raise ListFileError(f"set id {tok!r} out of range", path, lineno)
        n = len(fields)
        if n < 2:
            raise ListFileError(f"missing destination URI after set id {set_id}", path, lineno)
        flags = priority = 0
        attrs = ""
        if n > 2:
            tok = fields[2]
            if tok.isdecimal() and len(tok) < 10:
                flags = int(tok)
            else:
                flags = _int_field(tok, "flags", path, lineno, hex_ok=True, signed=False)
            if n > 3:
                tok = fields[3]
                if tok.isdecimal() and len(tok) < 10:
                    priority = int(tok)
                else:
                    priority = _int_field(tok, "priority", path, lineno, hex_ok=False, signed=True)
                if n > 4:
                    attrs = fields[4]
        uri = fields[1]
        if validate:
            try:
                check_uri_attrs(uri, attrs)
            except ValueError as exc:
                raise ListFileError(str(exc), path, lineno) from None
        # tuple.__new__ skips the generated keyword __new__ (100k lines).
        spec = _tuple_new(DestinationSpec, (set_id, uri, flags, priority, attrs, desc))
        append(spec)
        if validate:
            if len(_line_cache) >= CACHE_LIMIT:
                _line_cache.clear()
            _line_cache[line] = spec
    return specs


def read_list_file(path: str | os.PathLike[str], *, validate: bool = True) -> list[DestinationSpec]:
    """Read and parse a list file; raise ListFileError (OSError when unreadable)."""
    p = Path(path)
    data = p.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ListFileError("not UTF-8 text", str(p), line) from None
    return parse_list(text, str(p), validate=validate)


def _check_token(value: str, what: str, spec: DestinationSpec) -> None:
    if not value or any(c.isspace() for c in value):
        raise ValueError(f"{what} {value!r} of set {spec.set_id} cannot be written to a list file")


def format_list(specs: Iterable[DestinationSpec], header: bool = True) -> str:
    """Write specs as list-file text that both Kamailio and sipfleet read back.

    Raises ValueError for a spec a list file cannot hold (white space in a
    URI or attrs, ``#`` in a URI, attrs starting with ``#``).
    """
    out: list[str] = []
    if header:
        out.append("# setid destination flags priority attrs # description\n")
    for spec in specs:
        _check_token(spec.uri, "destination", spec)
        if "#" in spec.uri:
            raise ValueError(f"destination {spec.uri!r} holds '#', which a list file cannot")
        line = f"{spec.set_id} {spec.uri} {spec.flags} {spec.priority}"
        if spec.attrs:
            _check_token(spec.attrs, "attrs", spec)
            if spec.attrs.startswith("#"):
                raise ValueError(f"attrs {spec.attrs!r} cannot start with '#' in a list file")
            line += " " + spec.attrs
        if spec.description:
            line += " # " + " ".join(spec.description.split())
        out.append(line + "\n")
    return "".join(out)


def write_list_file(path: str | os.PathLike[str], specs: Iterable[DestinationSpec]) -> None:
    """Write a list file atomically (a reader never sees half a file)."""
    p = Path(path)
    text = format_list(specs)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=str(p.parent) or ".")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, p)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
