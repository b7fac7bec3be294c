"""JSON-RPC over a FIFO, as jsonrpcs does it, so ``kamctl rpc`` works.

A client makes its own FIFO in the reply directory (kamctl:
``/tmp/kamailio_receiver_<pid>``), writes one JSON document naming it in
``reply_name`` into our FIFO, and reads the reply from its own. Requests are
served one at a time, in order, as Kamailio's single FIFO process does.

Before writing a reply, the reply path is checked as jsonrpcs checks it: the
name has no '.', '/' or '\\'; the file is a FIFO, not a symlink, not
hard-linked, and still the file that was opened. A client that is not yet
reading gets four more tries 80 ms apart; a reply write is bounded in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import inspect
import logging
import os
import stat
import time
from pathlib import Path

from sipfleet.aio.rpc_unix import OwnedPath, Perms, make_fifo
from sipfleet.control.jsonrpc import (
    DocumentTooLarge,
    JsonRpcHandler,
    JsonRpcReply,
    JsonStreamReader,
)
from sipfleet.control.methods import RPC_CALLER
from sipfleet.ratelog import RateLimitedLog

__all__ = ["FifoServer"]

log = logging.getLogger(__name__)
_peer_log = RateLimitedLog(log)  # whoever may write to the FIFO can trigger these

_OPEN_RETRIES = 4  # jsonrpcs: JSONRPC_REPLY_RETRIES
_OPEN_RETRY_DELAY = 0.08
_WRITE_TIMEOUT = 10.0  # a client that stops reading must not wedge the FIFO
_QUEUE = 64  # documents waiting; past this we stop reading and the pipe pushes back


class FifoServer:
    def __init__(
        self,
        handler: JsonRpcHandler,
        path: Path,
        reply_dir: Path,
        perms: Perms,
        *,
        max_request_bytes: int = 1 << 20,
    ) -> None:
        self.handler = handler
        self.path = path
        self.reply_dir = reply_dir
        self.perms = perms
        self._reader = JsonStreamReader(max_request_bytes)
        self._queue: asyncio.Queue[bytes] = asyncio.Queue()
        self._rfd = -1
        self._wfd = -1
        self._owned: OwnedPath | None = None
        self._worker: asyncio.Task[None] | None = None
        self._reading = False

    async def start(self) -> None:
        if not self.reply_dir.is_dir():
            raise NotADirectoryError(f"control.fifo.reply_dir {self.reply_dir} is not a directory")
        self._owned = make_fifo(self.path, self.perms)
        self._rfd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK)
        # Holding a writer open keeps reads from seeing EOF between clients.
        self._wfd = os.open(self.path, os.O_WRONLY | os.O_NONBLOCK)
        self._resume()
        self._worker = asyncio.create_task(self._serve(), name="rpc-fifo")

    def _resume(self) -> None:
        if not self._reading and self._rfd >= 0:
            asyncio.get_running_loop().add_reader(self._rfd, self._on_readable)
            self._reading = True

    def _pause(self) -> None:
        if self._reading:
            asyncio.get_running_loop().remove_reader(self._rfd)
            self._reading = False

    def _on_readable(self) -> None:
        while self._queue.qsize() < _QUEUE:
            try:
                data = os.read(self._rfd, 65536)
            except BlockingIOError:
                return
            if not data:
                return
            try:
                docs = self._reader.feed(data)
            except DocumentTooLarge as e:
                _peer_log.warning(time.monotonic(), "rpc fifo %s: %s; dropped", self.path, e)
                continue
            for doc in docs:
                self._queue.put_nowait(doc)  # may pass _QUEUE by one read's worth
        self._pause()

    async def _serve(self) -> None:
        RPC_CALLER.set("fifo")
        while True:
            doc = await self._queue.get()
            if self._queue.qsize() < _QUEUE:
                self._resume()
            try:
                outcome = self.handler.handle(doc, fifo=True)
                reply = await outcome if inspect.isawaitable(outcome) else outcome
                if reply is not None:
                    await self._send(reply)
            except Exception:
                _peer_log.exception(time.monotonic(), "rpc fifo %s: request failed", self.path)

    async def _send(self, reply: JsonRpcReply) -> None:
        assert reply.reply_name is not None
        target = self.reply_dir / reply.reply_name
        fd = await self._open_reply(target)
        if fd < 0:
            return
        try:
            await _write_all(fd, reply.body, _WRITE_TIMEOUT)
        except (OSError, TimeoutError) as e:
            _peer_log.warning(time.monotonic(), "rpc fifo: reply to %s not written: %s", target, e)
        finally:
            os.close(fd)

    async def _open_reply(self, target: Path) -> int:
        for attempt in range(_OPEN_RETRIES + 1):
            try:
                fd = os.open(target, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as e:
                if e.errno == errno.ENXIO and attempt < _OPEN_RETRIES:
                    await asyncio.sleep(_OPEN_RETRY_DELAY)  # the client is not reading yet
                    continue
                _peer_log.warning(
                    time.monotonic(), "rpc fifo: cannot open reply fifo %s: %s", target, e.strerror
                )
                return -1
            problem = _check_reply_fifo(fd, target)
            if problem is None:
                return fd
            os.close(fd)
            _peer_log.warning(
                time.monotonic(), "rpc fifo: refusing reply fifo %s: %s", target, problem
            )
            return -1
        return -1

    async def close(self) -> None:
        self._pause()
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        for fd in (self._rfd, self._wfd):
            if fd >= 0:
                os.close(fd)
        self._rfd = self._wfd = -1
        if self._owned is not None:
            self._owned.remove()
            self._owned = None


def _check_reply_fifo(fd: int, path: Path) -> str | None:
    fst = os.fstat(fd)
    if not stat.S_ISFIFO(fst.st_mode):
        return "not a FIFO"
    if fst.st_nlink > 1:
        return f"hard-linked {fst.st_nlink} times"
    try:
        lst = path.lstat()
    except OSError as e:
        return f"lstat failed: {e.strerror}"
    if stat.S_ISLNK(lst.st_mode):
        return "a symbolic link"
    if (lst.st_dev, lst.st_ino) != (fst.st_dev, fst.st_ino):
        return "replaced while opening"
    return None


async def _write_all(fd: int, data: bytes, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    view = memoryview(data)
    deadline = loop.time() + timeout
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            ready = loop.create_future()

            def wake(fut: asyncio.Future[None] = ready) -> None:
                if not fut.done():
                    fut.set_result(None)

            loop.add_writer(fd, wake)
            try:
                await asyncio.wait_for(ready, max(0.0, deadline - loop.time()))
            finally:
                loop.remove_writer(fd)
            continue
        view = view[n:]
