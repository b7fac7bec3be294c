"""Events POSTed as JSON to operators' webhooks (``[[webhook]]`` tables,
``sipfleet.config.webhooks``).

Each webhook has its own bounded queue and one sender task: a slow or dead
endpoint delays nobody else and costs bounded memory (when the queue is
full the oldest event is dropped and counted). Failed POSTs are retried
with exponential backoff, then dropped and counted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson

from sipfleet.aio.events import Event, EventBus
from sipfleet.config.webhooks import WebhookConfig
from sipfleet.ratelog import RateLimitedLog

__all__ = ["Webhooks"]

log = logging.getLogger("sipfleet.webhooks")
_peer_log = RateLimitedLog(log)  # a dead endpoint fails every event


class _Hook:
    def __init__(self, cfg: WebhookConfig) -> None:
        self.cfg = cfg
        self.kinds = frozenset(cfg.events)
        self.queue: deque[Event] = deque(maxlen=cfg.queue)
        self.wake = asyncio.Event()
        self.sent = 0
        self.failed = 0
        self.dropped = 0
        self.claimed_elsewhere = 0  # [cluster]: posted by another node
        self.task: asyncio.Task[None] | None = None

    def offer(self, event: Event) -> None:
        if self.kinds and event["event"] not in self.kinds:
            return
        if len(self.queue) == self.queue.maxlen:
            self.dropped += 1
        self.queue.append(event)
        self.wake.set()


class Webhooks:
    """The configured webhooks, fed by the event bus."""

    def __init__(self, configs: list[WebhookConfig], bus: EventBus) -> None:
        self.hooks = [_Hook(c) for c in configs]
        self._session: aiohttp.ClientSession | None = None
        self._unsubscribe = bus.subscribe(self._offer) if self.hooks else None
        # [cluster]: (event, url) -> whether this node posts it (once per cluster)
        self.claim: Callable[[Event, str], Awaitable[bool]] | None = None

    def _offer(self, event: Event) -> None:
        for hook in self.hooks:
            hook.offer(event)

    async def start(self) -> None:
        if not self.hooks:
            return
        self._session = aiohttp.ClientSession(json_serialize=lambda o: orjson.dumps(o).decode())
        for hook in self.hooks:
            hook.task = asyncio.get_running_loop().create_task(self._run(hook))

    async def _run(self, hook: _Hook) -> None:
        assert self._session is not None
        cfg = hook.cfg
        headers = {"Content-Type": "application/json", "User-Agent": "sipfleet"}
        if cfg.token:
            headers["Authorization"] = f"Bearer {cfg.token}"
        timeout = aiohttp.ClientTimeout(total=cfg.timeout)
        while True:
            await hook.wake.wait()
            hook.wake.clear()
            while hook.queue:
                event = hook.queue[0]
                if self.claim is not None and not await self.claim(event, cfg.url):
                    hook.claimed_elsewhere += 1
                    if hook.queue and hook.queue[0] is event:
                        hook.queue.popleft()
                    continue
                delay = cfg.backoff
                for attempt in range(cfg.retries + 1):
                    try:
                        async with self._session.post(
                            cfg.url, data=orjson.dumps(event), headers=headers, timeout=timeout
                        ) as resp:
                            if resp.status < 300:
                                hook.sent += 1
                                break
                            reason = f"HTTP {resp.status}"
                    except (TimeoutError, aiohttp.ClientError, OSError) as e:
                        reason = str(e) or type(e).__name__
                    if attempt == cfg.retries:
                        hook.failed += 1
                        _peer_log.warning(
                            time.monotonic(),
                            "webhook %s: giving up on %s after %d tries: %s",
                            cfg.url,
                            event["event"],
                            attempt + 1,
                            reason,
                        )
                        break
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 60.0)
                if hook.queue and hook.queue[0] is event:
                    hook.queue.popleft()

    def stats(self) -> list[dict[str, Any]]:
        return [
            {
                "url": h.cfg.url,
                "sent": h.sent,
                "failed": h.failed,
                "dropped": h.dropped,
                "claimed_elsewhere": h.claimed_elsewhere,
                "queued": len(h.queue),
            }
            for h in self.hooks
        ]

    async def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        for hook in self.hooks:
            if hook.task is not None:
                hook.task.cancel()
        for hook in self.hooks:
            if hook.task is not None:
                try:
                    await hook.task
                except asyncio.CancelledError:
                    pass
        if self._session is not None:
            await self._session.close()
