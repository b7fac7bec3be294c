"""What every config section shares: the model base and common field checks."""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel, ConfigDict

__all__ = ["Model", "check_cidrs"]


class Model(BaseModel):
    """A config section: unknown keys are an error, values never change after loading."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def check_cidrs(values: list[str]) -> list[str]:
    """A field validator's body: every entry is an address or a network (CIDR)."""
    for c in values:
        try:
            ipaddress.ip_network(c, strict=False)
        except ValueError:
            raise ValueError(f"bad CIDR {c!r}") from None
    return values
