"""``[[webhook]]``: where events are POSTed (``sipfleet.aio.webhooks`` sends them)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["WebhookConfig"]


class WebhookConfig(BaseModel):
    """``[[webhook]]``: where events go."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(pattern=r"^https?://", description="POST target")
    events: list[str] = Field(
        default_factory=list,
        description="event kinds to send (dst-up, dst-down, drained, state-changed ...); "
        "empty = all",
    )
    token: str = Field("", description="sent as 'Authorization: Bearer <token>'")
    timeout: float = Field(5.0, gt=0, le=60)
    retries: int = Field(5, ge=0, le=20)
    backoff: float = Field(0.5, gt=0, le=60, description="first retry delay, doubled each time")
    queue: int = Field(1000, ge=1, le=100_000, description="events kept while the target lags")
