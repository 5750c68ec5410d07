"""Calls through the SDK with real PortAudio devices (tests/audio_env.py's virtual sound
cards) and the real core's echo line: issue 3's end-to-end acceptance tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from softphone import CallState
from softphone.engine import OperatorError
from softphone.engine.audio import AudioManager, AudioSettings
from softphone.media import AudioSystem
from softphone.server import CoreServer

from .audio_env import (
    PORTAUDIO_PULSE_RATE,
    VirtualAudio,
    bandlimited_noise,
    find_lag,
    provide_virtual_audio,
)
from .conftest import EventLog, sandbox_operator, wait_until

MIC, MIC2, SPEAKER = VirtualAudio.MIC, VirtualAudio.MIC2, VirtualAudio.SPEAKER
ECHO = "+15550100"


@pytest.fixture(scope="session")
def virtual_audio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VirtualAudio]:
    yield from provide_virtual_audio(tmp_path_factory)


def manager(input: str, output: str) -> AudioManager:
    # Processing off: echo cancellation would (rightly) remove the echo line's echo.
    settings = AudioSettings(
        input=input,
        output=output,
        sounds=False,
        echo_cancellation=False,
        noise_suppression=False,
        auto_gain=False,
    )
    return AudioManager(backend="pyaudio", settings=settings, system=AudioSystem())


async def test_echo_line_through_portaudio_and_a_mid_call_microphone_switch(
    core: CoreServer, virtual_audio: VirtualAudio
) -> None:
    rate = PORTAUDIO_PULSE_RATE
    voice_a = bandlimited_noise(1.5, rate, seed=41)
    voice_b = bandlimited_noise(1.5, rate, seed=42)
    virtual_audio.write_input(MIC, voice_a, rate=rate)
    virtual_audio.write_input(MIC2, voice_b, rate=rate)
    virtual_audio.clear_output(SPEAKER)
    operator = sandbox_operator(core.url, audio=manager(MIC, SPEAKER))
    log = EventLog(operator)
    try:
        call = await operator.dial(ECHO)
        assert await call.wait_started(10)
        # 2 s of echo: all of voice A went out and came back.
        await wait_until(lambda: call.stats.frames_received >= 100, timeout=10)
        info = await operator.audio.select_input(MIC2)
        assert info is not None
        assert info.name == MIC2
        assert call.state == CallState.ACTIVE
        switched_at = call.stats.frames_received
        await wait_until(lambda: call.stats.frames_received >= switched_at + 100, timeout=10)
        assert call.state == CallState.ACTIVE
        assert call.stats.device_playback_underruns <= 2
        await call.hangup()
    finally:
        await operator.close()
    assert not log.of("error")
    speaker = virtual_audio.read_output(SPEAKER)
    assert len(speaker) > 3 * rate
    lag_a, score_a = find_lag(voice_a, speaker)
    lag_b, score_b = find_lag(voice_b, speaker)
    assert score_a > 0.9, f"microphone A's echo not at the speaker ({score_a:.3f})"
    assert score_b > 0.9, f"microphone B's echo not at the speaker ({score_b:.3f})"
    assert lag_b > lag_a  # B was heard after the switch


async def test_missing_microphone_gives_a_coded_error_and_the_call_goes_on(
    core: CoreServer, virtual_audio: VirtualAudio
) -> None:
    operator = sandbox_operator(core.url, audio=manager("no such microphone", SPEAKER))
    log = EventLog(operator)
    try:
        with pytest.raises(OperatorError) as refused:
            await operator.audio.select_input("no such microphone either")
        assert refused.value.code == "DEVICE_NOT_FOUND"
        call = await operator.dial(ECHO)
        assert await call.wait_started(10)
        error = await log.wait_for("error")
        assert error.code == "DEVICE_NOT_FOUND"
        assert "no such microphone" in error.message
        await wait_until(lambda: call.stats.frames_sent >= 25, timeout=5)  # silence is sent
        assert call.state == CallState.ACTIVE
        await call.hangup()
    finally:
        await operator.close()


async def test_device_list_and_tests_through_the_manager(
    core: CoreServer, virtual_audio: VirtualAudio
) -> None:
    rate = PORTAUDIO_PULSE_RATE
    virtual_audio.write_input(MIC, bandlimited_noise(1.0, rate, seed=43), rate=rate)
    audio = manager(MIC, SPEAKER)
    try:
        names = {d.name for d in await audio.devices()}
        assert {MIC, MIC2, SPEAKER} <= names
        result = await audio.test_microphone(0.5)
        assert result.frames == 25
        assert result.heard_something
    finally:
        await audio.close()
