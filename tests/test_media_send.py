"""Audio frames on a media leg: sent without waiting, dropped (not queued) on a stalled link.

Real sockets on 127.0.0.1: a WebSocket server that stops reading, with small socket buffers
so the stall shows within a few hundred frames.
"""

from __future__ import annotations

import asyncio
import socket

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from softphone.engine.call import _SEND_BACKLOG, send_audio_frame
from softphone.protocol import encode_audio_frame
from tests.conftest import wait_until

FRAME = encode_audio_frame(0, 0, bytes(160))


async def test_a_stalled_link_drops_audio_frames_instead_of_queueing_them() -> None:
    received: list[bytes] = []
    stall = asyncio.Event()
    release = asyncio.Event()

    async def handler(conn: ServerConnection) -> None:
        sock = conn.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        async for message in conn:
            assert isinstance(message, bytes)
            received.append(message)
            if len(received) == 5:
                stall.set()
                await release.wait()  # stops reading: the queue fills, then TCP's buffers

    async with (
        serve(handler, "127.0.0.1", 0, max_queue=2) as server,
        connect(f"ws://127.0.0.1:{server.sockets[0].getsockname()[1]}") as ws,
    ):
        sock = ws.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        for _ in range(5):
            assert send_audio_frame(ws, FRAME) is True
        await asyncio.wait_for(stall.wait(), 5)

        results = []
        for _ in range(20_000):  # 400 s of audio: far more than the buffers hold
            results.append(send_audio_frame(ws, FRAME))
            if results[-1] is False:
                break
            await asyncio.sleep(0)  # let the loop move what the socket takes
        assert results[-1] is False, f"{len(results)} frames queued on a stalled link"
        backlog = ws.transport.get_write_buffer_size()
        assert _SEND_BACKLOG < backlog <= _SEND_BACKLOG + len(FRAME) + 14  # + one frame
        assert send_audio_frame(ws, FRAME) is False  # still stalled: still dropped
        assert ws.transport.get_write_buffer_size() == backlog

        release.set()  # the far end reads again: what was queued arrives, sending resumes
        queued = 5 + results.count(True)
        await wait_until(lambda: len(received) >= queued, 10)
        assert send_audio_frame(ws, FRAME) is True
        await ws.close()
        assert send_audio_frame(ws, FRAME) is None  # closed: the caller stops sending
