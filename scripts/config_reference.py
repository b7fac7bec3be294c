#!/usr/bin/env python3
"""Print the configuration reference (Markdown) from the typed config models.

The README's "Configuration reference" is this script's output;
``--write`` puts it between the README's config-reference markers:

    .venv/bin/python scripts/config_reference.py [--write]
"""

from __future__ import annotations

import json
import re
import sys
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from sipfleet.config import ENV_OVERRIDES, Config


def _type(ann: Any) -> str:
    text = str(ann).replace("typing.", "")
    if isinstance(ann, type):
        text = ann.__name__
    text = text.replace("<class '", "").replace("'>", "").replace("sipfleet.", "")
    # A model by its public name: config.ListenSpec, not config.proxy.ListenSpec.
    return re.sub(r"\bconfig\.[a-z_]+\.(?=[A-Z])", "config.", text)


def _default(field: FieldInfo) -> str:
    if field.is_required():
        return "required"
    if field.default_factory is not None:
        try:
            value = field.default_factory()  # type: ignore[call-arg]
        except TypeError:
            return ""
    else:
        value = field.default
    if isinstance(value, BaseModel):
        return ""
    if isinstance(value, list) and value and isinstance(value[0], BaseModel):
        return ", ".join(getattr(v, "text", None) or _short(v) for v in value)
    if hasattr(value, "get_secret_value"):
        return '""'
    return json.dumps(value, default=str)


def _short(v: BaseModel) -> str:
    d = v.model_dump()
    if {"proto", "host", "port"} <= d.keys():
        return f"{d['proto']}:{d['host']}:{d['port']}"
    return json.dumps(d, default=str)


def _is_model(ann: Any) -> type[BaseModel] | None:
    if isinstance(ann, type) and issubclass(ann, BaseModel):
        return ann
    for arg in typing.get_args(ann):
        m = _is_model(arg)
        if m is not None:
            return m
    return None


def section(name: str, model: type[BaseModel], out: list[str], array: bool = False) -> None:
    rows = []
    subs: list[tuple[str, type[BaseModel], bool]] = []
    for key, field in model.model_fields.items():
        sub = _is_model(field.annotation)
        if sub is not None and typing.get_origin(field.annotation) is not list:
            subs.append((f"{name}.{key}", sub, False))
            continue
        doc = (field.description or "").replace("|", "\\|").replace("\n", " ")
        kind = _type(field.annotation).replace("|", "or")
        default = _default(field).replace("|", "\\|")
        rows.append(f"| `{key}` | {kind} | `{default}` | {doc} |")
    title = f"[[{name}]]" if array else f"[{name}]"
    out.append(f"### `{title}`\n")
    if model.__doc__ and not model.__doc__.startswith(model.__name__ + "("):
        out.append(model.__doc__.strip().splitlines()[0] + "\n")
    out.append("| key | type | default | meaning |\n|---|---|---|---|")
    out.extend(rows)
    out.append("")
    for sub_name, sub, arr in subs:
        section(sub_name, sub, out, arr)


def main() -> None:
    out: list[str] = []
    for key, field in Config.model_fields.items():
        model = _is_model(field.annotation)
        assert model is not None
        section(key, model, out, array=typing.get_origin(field.annotation) is list)
    out.append("### Environment overrides\n")
    out.append("| variable | key |\n|---|---|")
    for var, key in ENV_OVERRIDES.items():
        out.append(f"| `{var}` | `{key}` |")
    text = "\n".join(out)
    if "--write" not in sys.argv[1:]:
        print(text)
        return
    readme = Path(__file__).resolve().parent.parent / "README.md"
    old = readme.read_text()
    new = re.sub(
        r"(<!-- config-reference:start -->\n).*(\n<!-- config-reference:end -->)",
        lambda m: m.group(1) + text + m.group(2),
        old,
        count=1,
        flags=re.S,
    )
    readme.write_text(new)


if __name__ == "__main__":
    main()
