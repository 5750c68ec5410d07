"""A TCP proxy on 127.0.0.1 that can fail the connections through it on demand.

Puts real network faults between the SDK and the core without touching either: a link that
goes silent without closing (``blackhole``), a link that is reset (``cut``), and a proxy that
refuses new connections (``refuse``).
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field


@dataclass(eq=False)
class _Link:
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter
    silent: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


class FaultProxy:
    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.refuse = False
        self.accepted = 0
        self._links: list[_Link] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
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
        """Every open connection stops carrying bytes both ways but stays open."""
        for link in self._links:
            link.silent = True

    def cut(self) -> None:
        """Reset every open connection (new ones still pass)."""
        for link in self._links:
            for writer in (link.client, link.upstream):
                writer.transport.abort()

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
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self.accepted += 1
        link = _Link(writer, up_writer)
        self._links.append(link)
        loop = asyncio.get_running_loop()
        link.tasks = [
            loop.create_task(self._pump(reader, up_writer, link)),
            loop.create_task(self._pump(up_reader, writer, link)),
        ]

    @staticmethod
    async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter, link: _Link) -> None:
        try:
            while data := await source.read(65536):
                if link.silent:
                    continue  # swallowed: the peer hears nothing, and no close either
                sink.write(data)
                await sink.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            if not link.silent:
                sink.transport.abort()
