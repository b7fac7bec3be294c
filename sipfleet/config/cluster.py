"""``[cluster]``: several sipfleet nodes sharing admin state and call-load
through Redis (sipfleet.aio.cluster does the I/O)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = ["ClusterConfig"]


class ClusterConfig(BaseModel):
    """``[cluster]``: off while ``redis`` is empty."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    redis: str = Field(
        "",
        description="redis://[:PASSWORD@]HOST:PORT/DB (rediss:// with TLS); empty = no cluster",
    )
    node: str = Field(
        "",
        max_length=128,
        description="this node's name in the cluster, unique; empty = host:port of the first "
        "listener (the host name for a wildcard address)",
    )
    advertise: str = Field(
        "",
        description="HOST[:PORT] (a DNS name or VIP every node answers for) put in Record-Route "
        "instead of this node's address, so any node can carry a dialog's later requests; "
        "it becomes an alias of this node; the port defaults to each listener's",
    )
    heartbeat: float = Field(
        1.0, gt=0, le=60, description="seconds between this node's load and liveness reports"
    )
    load_ttl: float = Field(
        5.0,
        gt=0,
        le=600,
        description="seconds after a node's last report that its calls stop counting "
        "(a dead node's load expires then)",
    )
    publish_interval: float = Field(
        0.05,
        ge=0.005,
        le=5,
        description="load changes are published at most this often (coalesced)",
    )
    timeout: float = Field(
        0.5, gt=0, le=30, description="seconds a Redis command or connect may take"
    )
    key_prefix: str = Field(
        "sipfleet:",
        max_length=64,
        pattern=r"^[A-Za-z0-9:_.\-]*$",
        description="prefix of every Redis key and channel (letters, digits, : _ . -)",
    )
    event_window: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="seconds a webhook event claimed by one node is not sent by another "
        "(the same kind, set and URI)",
    )

    @field_validator("redis")
    @classmethod
    def _url(cls, v: str) -> str:
        v = v.strip()
        if v and not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("redis must be a redis://, rediss:// or unix:// URL")
        return v

    @model_validator(mode="after")
    def _ttl(self) -> ClusterConfig:
        if self.redis and self.load_ttl <= self.heartbeat:
            raise ValueError("load_ttl must be longer than heartbeat")
        try:
            hp = self.advertise_hostport(5060)
        except ValueError:
            hp = ("", 0)
        if hp is not None and (not hp[0] or not 0 < hp[1] < 65536):
            raise ValueError(f"advertise {self.advertise!r} is not HOST[:PORT]")
        return self

    @property
    def enabled(self) -> bool:
        return bool(self.redis)

    def advertise_hostport(self, port: int) -> tuple[str, int] | None:
        """(host, port) of ``advertise`` for a listener on ``port``; None when unset."""
        a = self.advertise.strip()
        if not a:
            return None
        if a.startswith("["):
            host, _, rest = a[1:].partition("]")
            return host, int(rest[1:]) if rest.startswith(":") else port
        if a.count(":") == 1:
            host, _, p = a.partition(":")
            return host, int(p)
        return a, port
