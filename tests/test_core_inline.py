"""The relay's fast path: binary WebSocket messages handled as aiohttp parses them
(softphone.server.inline_ws), audio written without waiting (WsPeer.send_audio), and the
media leg's rules kept on that path (invalid frames reported, 20 invalid in a row close)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from websockets.exceptions import ConnectionClosed

from softphone.protocol import Channel, CloseCode, encode_audio_frame
from softphone.server import CoreServer
from softphone.server.app import AUDIO_SEND_BUFFER, MAX_CONSECUTIVE_ERRORS, WsPeer
from softphone.server.inline_ws import (
    INLINE_AVAILABLE,
    InlineWebSocketResponse,
    inline_handler_failures,
    set_inline_handler,
)

from .conftest import wait_until
from .test_security import echo_media_leg, presence, recv_text_json

TIMEOUT = 5.0


def test_the_pinned_aiohttp_offers_the_inline_hook() -> None:
    # If an aiohttp upgrade removes the internals the fast path uses, the core still works
    # (every message through ws.receive()) but at about two thirds of its capacity: this
    # test makes that visible.
    assert INLINE_AVAILABLE


@contextlib.asynccontextmanager
async def serve(route: Any) -> AsyncIterator[str]:
    """A one-route aiohttp server on loopback; yields the route's URL."""
    app = web.Application()
    app.router.add_get("/ws", route)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server = site._server
    assert isinstance(server, asyncio.base_events.Server)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/ws"
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def inline_server(
    handler: Any,
) -> AsyncIterator[tuple[str, list[Any], list[InlineWebSocketResponse]]]:
    """Binary messages go to ``handler`` inline, whatever is left reaches ``ws.receive()``
    and is recorded as (type, data)."""
    received: list[Any] = []
    sockets: list[InlineWebSocketResponse] = []

    async def route(request: web.Request) -> web.StreamResponse:
        ws = InlineWebSocketResponse()
        await ws.prepare(request)
        sockets.append(ws)
        assert set_inline_handler(ws, handler)
        async for msg in ws:
            received.append((msg.type, msg.data))
            if msg.type == aiohttp.WSMsgType.TEXT and msg.data == "bye":
                await ws.close()
        return ws

    async with serve(route) as url:
        yield url, received, sockets


async def test_binary_messages_reach_the_handler_inline_and_the_rest_the_queue() -> None:
    taken: list[bytes] = []

    def handler(data: bytes) -> bool:
        if data.startswith(b"no"):
            return False  # declined: goes to ws.receive()
        taken.append(bytes(data))
        return True

    async with (
        inline_server(handler) as (url, received, _),
        aiohttp.ClientSession() as session,
        session.ws_connect(url) as ws,
    ):
        await ws.send_str("first")
        for i in range(50):
            await ws.send_bytes(b"frame%02d" % i)
        await ws.send_bytes(b"no, queue me")
        await ws.send_str("bye")
        await asyncio.wait_for(ws.receive(), TIMEOUT)  # the server's close
        await wait_until(lambda: len(received) >= 3, TIMEOUT)
    assert taken == [b"frame%02d" % i for i in range(50)]  # in order, none queued
    assert received[:3] == [
        (aiohttp.WSMsgType.TEXT, "first"),
        (aiohttp.WSMsgType.BINARY, b"no, queue me"),
        (aiohttp.WSMsgType.TEXT, "bye"),
    ]


async def test_a_failing_handler_is_dropped_and_its_message_still_delivered() -> None:
    calls = 0

    def handler(data: bytes) -> bool:
        nonlocal calls
        calls += 1
        raise RuntimeError("bug in a handler")

    async with (
        inline_server(handler) as (url, received, sockets),
        aiohttp.ClientSession() as session,
        session.ws_connect(url) as ws,
    ):
        await ws.send_bytes(b"one")
        await ws.send_bytes(b"two")
        await ws.send_str("bye")
        await asyncio.wait_for(ws.receive(), TIMEOUT)
        await wait_until(lambda: len(received) >= 3, TIMEOUT)
        assert inline_handler_failures(sockets[0]) == 1
    assert calls == 1  # not called again after it failed
    assert received[:3] == [
        (aiohttp.WSMsgType.BINARY, b"one"),
        (aiohttp.WSMsgType.BINARY, b"two"),
        (aiohttp.WSMsgType.TEXT, "bye"),
    ]


async def test_a_plain_websocket_response_has_no_inline_hook() -> None:
    refused: list[bool] = []

    async def route(request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        refused.append(set_inline_handler(ws, lambda data: True))
        await ws.close()
        return ws

    async with (
        serve(route) as url,
        aiohttp.ClientSession() as session,
        session.ws_connect(url) as ws,
    ):
        await asyncio.wait_for(ws.receive(), TIMEOUT)
    assert refused == [False]


# --------------------------------------------------------------------------- WsPeer


class _Transport(asyncio.Transport):
    def __init__(self, buffered: int) -> None:
        super().__init__()
        self.buffered = buffered
        self.written: list[bytes] = []

    def get_write_buffer_size(self) -> int:
        return self.buffered

    def is_closing(self) -> bool:
        return False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written.append(bytes(data))


class _OpenWs:
    closed = False


def test_send_audio_frames_a_binary_message_and_drops_past_the_buffer_limit() -> None:
    transport = _Transport(buffered=0)
    peer = WsPeer(_OpenWs(), Channel.MEDIA, transport)  # type: ignore[arg-type]
    frame = encode_audio_frame(7, 1120, b"\x55" * 160)
    assert peer.send_audio(frame)
    assert transport.written == [b"\x82\x7e\x00\xa8" + frame]  # FIN|binary, 16-bit length 168
    assert peer.send_audio(b"x" * 10)
    assert transport.written[-1] == b"\x82\x0a" + b"x" * 10  # 7-bit length
    transport.buffered = AUDIO_SEND_BUFFER + 1  # a peer that stopped reading
    assert not peer.send_audio(frame)
    assert not peer.send_audio(frame)
    assert peer.audio_dropped == 2
    assert len(transport.written) == 2
    closed = WsPeer(_OpenWs(), Channel.MEDIA, None)  # type: ignore[arg-type]
    assert not closed.send_audio(frame)


# --------------------------------------------------------------------------- the core


async def drain(ws: Any) -> None:
    """Read until the connection closes (raises ConnectionClosed)."""
    while True:
        await asyncio.wait_for(ws.recv(), TIMEOUT)


async def test_the_core_relays_on_the_fast_path_and_keeps_the_error_rules(
    core: CoreServer,
) -> None:
    async with presence(core, "op-1") as one, echo_media_leg(core, one) as (sid, media):
        await wait_until(lambda: core.core.calls[sid].status == "in_progress", 3)
        # Valid frames come straight back from the echo line.
        for seq in range(5):
            await media.send(encode_audio_frame(seq, seq * 160, bytes([seq]) * 160))
        echoed = [await asyncio.wait_for(media.recv(), TIMEOUT) for _ in range(5)]
        assert [bytes(e)[8:] for e in echoed] == [bytes([s]) * 160 for s in range(5)]
        # An invalid frame is still reported, from the queue's side.
        await media.send(b"\x01" * 10)
        error = await recv_text_json(media)
        assert (error["type"], error["code"]) == ("error", "MALFORMED_FRAME")
        # Invalid messages in a row are counted across the fast path: a valid frame
        # between them starts the count again...
        for _ in range(MAX_CONSECUTIVE_ERRORS - 2):
            await media.send(b"\x01" * 10)
        await media.send(encode_audio_frame(9, 9 * 160, b"\x09" * 160))
        for _ in range(MAX_CONSECUTIVE_ERRORS - 1):
            await media.send(b"\x01" * 10)
        await media.send(encode_audio_frame(10, 10 * 160, b"\x0a" * 160))
        frames: list[bytes] = []
        while len(frames) < 2:  # both valid frames come back: the leg stays open
            message = await asyncio.wait_for(media.recv(), TIMEOUT)
            if isinstance(message, bytes):
                frames.append(message[8:])
        assert frames == [b"\x09" * 160, b"\x0a" * 160]
        # ...and MAX_CONSECUTIVE_ERRORS invalid ones in a row close the leg.
        for _ in range(MAX_CONSECUTIVE_ERRORS):
            await media.send(b"\x01" * 10)
        with pytest.raises(ConnectionClosed) as closed:
            await drain(media)
        assert closed.value.rcvd is not None
        assert closed.value.rcvd.code == CloseCode.PROTOCOL_ERROR
