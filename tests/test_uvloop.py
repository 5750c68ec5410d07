"""The SDK and the core on uvloop, the event loop many asyncio applications run on (and
aiohttp's ``GunicornUVLoopWebWorker``): its transports are not ``asyncio.Transport``
subclasses, and its clock is libuv's."""

from __future__ import annotations

import asyncio
from pathlib import Path

import uvloop

from softphone import CallState
from softphone.media import FileAudioDevice

from .conftest import sandbox_core, sandbox_operator, wait_until
from .test_e2e_calls import ECHO, find_delay, read_wav, write_noise


def test_echo_call_with_the_sdk_and_the_core_on_uvloop(tmp_path: Path) -> None:
    """Noise dialled to the echo line comes back through a core and an operator that both
    run on a uvloop loop: audio flows both ways and the echo is in the recording."""
    play, record = tmp_path / "noise.wav", tmp_path / "echo.wav"
    source = write_noise(play, 1.5)
    device = FileAudioDevice(play, record)

    async def main() -> None:
        assert isinstance(asyncio.get_running_loop(), uvloop.Loop)
        async with sandbox_core(tmp_path) as server:
            operator = sandbox_operator(server.url, audio=lambda _call: device)
            try:
                call = await operator.dial(ECHO)
                assert await call.wait_started(10)
                assert call.state == CallState.ACTIVE
                await wait_until(lambda: device.ticks >= len(source) // 160 + 15, timeout=15)
                stats = call.stats
                assert stats.frames_sent >= len(source) // 160
                assert stats.frames_received >= len(source) // 160, stats
                await call.hangup()
            finally:
                await operator.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())
    lag, score = find_delay(source, read_wav(record))
    assert score > 0.95, f"echo not found in the recording (correlation {score:.3f})"
    assert 0 < lag / 8.0 < 250, f"round trip {lag / 8.0:.1f} ms"
