"""A TCP proxy on 127.0.0.1 that injects network faults between the SDK and the core.

Faults, applied to every open connection (``cut``, ``blackhole``, ``half_open``, ``stall``)
or to the proxy as a whole (``refuse``, ``delay``, ``throttle``):

* ``cut()``: reset every connection (both sides see the loss at once);
* ``blackhole()``: connections stay open but carry nothing either way, and never close;
* ``half_open()``: the core's side is closed, the client's side stays open and hears
  nothing (a peer that vanished without a FIN reaching the client);
* ``stall(seconds)``: nothing is forwarded for a while, then everything buffered flows;
* ``refuse = True``: new connections are reset at once (a core that is down);
* ``delay = seconds``: every chunk is held this long each way (latency);
* ``throttle = bytes_per_second``: each direction is limited to this rate.

The core and the SDK are not touched: the faults are real TCP behaviour on loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field


@dataclass(eq=False)
class _Link:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    silent: bool = False
    resume: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.resume.set()


class FaultProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.refuse = False
        self.delay = 0.0
        self.throttle: float | None = None
        self.accepted = 0
        self.refused = 0
        self._links: list[_Link] = []
        self._server: asyncio.Server | None = None

    async def start(self, port: int = 0) -> FaultProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", port)
        return self

    @property
    def port(self) -> int:
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def open_links(self) -> int:
        return sum(1 for link in self._links if not link.client.is_closing())

    def blackhole(self) -> None:
        for link in self._links:
            link.silent = True

    def cut(self) -> None:
        for link in self._links:
            for writer in (link.client, link.upstream):
                writer.transport.abort()

    def half_open(self) -> None:
        for link in self._links:
            link.silent = True
            link.upstream.transport.abort()

    @property
    def stalled(self) -> bool:
        """Whether a stall is holding some connection's bytes now."""
        return any(not link.resume.is_set() for link in self._links)

    def stall(self, seconds: float) -> None:
        for link in self._links:
            link.resume.clear()
            asyncio.get_running_loop().call_later(seconds, link.resume.set)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.cut()
        for link in self._links:
            for task in link.tasks:
                task.cancel()
            for task in link.tasks:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        if self._server is not None:
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refuse:
            self.refused += 1
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            self.refused += 1
            writer.transport.abort()
            return
        self.accepted += 1
        link = _Link(writer, up_writer)
        self._links.append(link)
        loop = asyncio.get_running_loop()
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
            link.tasks.append(loop.create_task(self._read(source, queue, link)))
            link.tasks.append(loop.create_task(self._write(queue, sink, link)))

    async def _read(
        self,
        source: asyncio.StreamReader,
        queue: asyncio.Queue[tuple[float, bytes] | None],
        link: _Link,
    ) -> None:
        """Timestamp what arrives; the writer delivers it ``delay`` later (pipelined)."""
        try:
            while data := await source.read(65536):
                if not link.silent:  # a blackholed link swallows what it gets
                    queue.put_nowait((time.monotonic() + self.delay, data))
        except (ConnectionError, OSError):
            pass
        finally:
            queue.put_nowait(None)

    async def _write(
        self,
        queue: asyncio.Queue[tuple[float, bytes] | None],
        sink: asyncio.StreamWriter,
        link: _Link,
    ) -> None:
        budget_at = time.monotonic()
        try:
            while (item := await queue.get()) is not None:
                deliver_at, data = item
                await link.resume.wait()  # stalled: hold everything, in order
                await asyncio.sleep(max(0.0, deliver_at - time.monotonic()))
                if self.throttle:
                    budget_at = max(budget_at, time.monotonic()) + len(data) / self.throttle
                    await asyncio.sleep(max(0.0, budget_at - time.monotonic()))
                if link.silent:
                    continue
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if not link.silent:  # the other side closed: pass the close on
                sink.transport.abort()
