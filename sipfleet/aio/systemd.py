"""sd_notify(3) for a ``Type=notify`` systemd unit, without a dependency.

systemd passes ``$NOTIFY_SOCKET`` (a unix datagram socket; a leading ``@``
names one in the abstract namespace) and, with ``WatchdogSec=``,
``$WATCHDOG_USEC``. The process says:

- ``READY=1`` once it serves (``systemctl start`` returns then);
- ``WATCHDOG=1`` every half watchdog period, sent *from the event loop*: a
  loop that stalls stops the pings and systemd restarts the unit;
- ``RELOADING=1`` ... ``READY=1`` around a SIGHUP reload;
- ``STOPPING=1`` (with ``EXTEND_TIMEOUT_USEC``: the graceful stop may take
  ``shutdown_timeout``) when it stops;
- ``STATUS=...``: one line for ``systemctl status``.

Outside systemd (no ``$NOTIFY_SOCKET``) every call does nothing. A lost
datagram is not an error: systemd may be restarting; the next one retries.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping

__all__ = ["Notifier"]

log = logging.getLogger(__name__)

# A STATUS= line is shown on one terminal line; longer text only clutters.
_MAX_STATUS = 200


def _monotonic_usec() -> int:
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Notifier:
    """The notification socket of the unit, if any; see the module docstring."""

    def __init__(self, address: str | None, watchdog_usec: int | None = None) -> None:
        self.address = address
        self.watchdog_interval = watchdog_usec / 2e6 if watchdog_usec else None
        self.sent = 0
        self.failed = 0
        self._sock: socket.socket | None = None
        self._watchdog: asyncio.TimerHandle | None = None
        self._describe: Callable[[], str] | None = None
        self._status = ""
        self._stopping = False
        self._warned = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Notifier:
        """From ``$NOTIFY_SOCKET`` and ``$WATCHDOG_USEC`` (for this pid only, as
        ``$WATCHDOG_PID`` says); a disabled notifier when they are absent or bad."""
        env = os.environ if env is None else env
        address = env.get("NOTIFY_SOCKET") or None
        if address is not None and not address.startswith(("/", "@")):
            log.warning("NOTIFY_SOCKET=%r is not a unix socket path: not notifying", address)
            address = None
        watchdog: int | None = None
        pid = env.get("WATCHDOG_PID", "")
        if env.get("WATCHDOG_USEC", "").isdigit() and pid in ("", str(os.getpid())):
            watchdog = int(env["WATCHDOG_USEC"]) or None
        return cls(address, watchdog)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def send(self, *fields: str) -> bool:
        """One datagram of ``KEY=VALUE`` lines; False when not sent."""
        if self.address is None:
            return False
        data = "\n".join(fields).encode("utf-8", "replace")
        try:
            if self._sock is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                sock.setblocking(False)
                self._sock = sock
            target = "\0" + self.address[1:] if self.address.startswith("@") else self.address
            self._sock.sendto(data, target)
        except OSError as e:
            self.failed += 1
            if not self._warned:  # once: the next datagram retries quietly
                self._warned = True
                log.warning("sd_notify to %s failed: %s", self.address, e)
            return False
        self.sent += 1
        return True

    # -- the lifecycle messages ----------------------------------------------------
    def ready(self, status: str) -> None:
        self._status = _line(status)
        self.send("READY=1", f"STATUS={self._status}")

    def reloading(self) -> None:
        self.send("RELOADING=1", f"MONOTONIC_USEC={_monotonic_usec()}", "STATUS=reloading")

    def stopping(self, status: str, timeout: float) -> None:
        """The graceful stop began; it may last ``timeout`` seconds."""
        if self._stopping:
            return
        self._stopping = True
        self._status = _line(status)
        extend = int((timeout + 30.0) * 1e6)
        self.send("STOPPING=1", f"EXTEND_TIMEOUT_USEC={extend}", f"STATUS={self._status}")

    def status(self, text: str) -> None:
        line = _line(text)
        if line != self._status:
            self._status = line
            self.send(f"STATUS={line}")

    # -- the watchdog ----------------------------------------------------------------
    def start_watchdog(
        self, loop: asyncio.AbstractEventLoop, describe: Callable[[], str] | None = None
    ) -> None:
        """Ping from ``loop`` every half period; ``describe()`` refreshes STATUS."""
        if self.address is None or self.watchdog_interval is None or self._watchdog is not None:
            return
        self._describe = describe
        self._ping(loop)

    def _ping(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self.watchdog_interval is not None
        self.send("WATCHDOG=1")
        if self._describe is not None and not self._stopping:
            self.status(self._describe())
        self._watchdog = loop.call_later(self.watchdog_interval, self._ping, loop)

    def close(self) -> None:
        """Stop the pings (say STOPPING=1 if not said) and close the socket."""
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        if not self._stopping:
            self._stopping = True
            self.send("STOPPING=1")
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def _line(text: str) -> str:
    return " ".join(text.split())[:_MAX_STATUS]
