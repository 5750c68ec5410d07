"""Calls through the SDK with real PortAudio devices (tests/audio_env.py's virtual sound
cards) and the real core's echo line: issue 3's end-to-end acceptance tests."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from softphone import CallState
from softphone.engine import OperatorError
from softphone.engine.audio import AudioManager, AudioSettings
from softphone.media import AudioSystem, PyAudioDevice
from softphone.server import CoreServer

from .audio_env import (
    AUTO_RATE,
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
    rate = AUTO_RATE
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
    # Look for 0.15 s pieces of each voice. A newly opened stream starts with a burst, and
    # the playout delay is kept within one frame of its target: the jitter buffer may drop
    # a 20 ms frame after the burst and add one if the new stream's frames then arrive
    # closer to the pops than before (no pause in noise to hide them in). Each breaks the
    # piece it falls in, so at most two pieces per voice may be missed.
    found: dict[str, list[int]] = {}
    for name, voice in (("A", voice_a), ("B", voice_b)):
        starts = [0.1 + 0.15 * k for k in range(8)]
        hits = []
        for start in starts:
            piece = voice[int(start * rate) : int((start + 0.15) * rate)]
            lag, score = find_lag(piece, speaker)
            if score > 0.9:
                hits.append(lag)
        assert len(hits) >= len(starts) - 2, f"microphone {name}'s echo not at the speaker"
        found[name] = hits
    assert min(found["B"]) > max(found["A"])  # B was heard after the switch


async def test_echo_call_on_a_sound_server_device_runs_at_8k(
    core: CoreServer, virtual_audio: VirtualAudio
) -> None:
    """The default rate policy ("auto") opens the sound server's device at the call's
    8 kHz: the server converts, the callbacks only copy. The echo comes back intact."""
    rate = 8000
    voice = bandlimited_noise(1.5, rate, seed=45)
    virtual_audio.write_input(MIC, voice, rate=rate)
    virtual_audio.clear_output(SPEAKER)
    server = VirtualAudio.SERVER
    audio = manager(server, server)
    assert audio.settings.rate == "auto"
    operator = sandbox_operator(core.url, audio=audio)
    log = EventLog(operator)
    try:
        call = await operator.dial(ECHO)
        assert await call.wait_started(10)
        await wait_until(lambda: call.stats.frames_received >= 100, timeout=10)
        device = operator.audio.active_device
        assert isinstance(device, PyAudioDevice)
        assert (device.input_rate, device.output_rate) == (rate, rate)
        stats = device.stats()
        await call.hangup()
    finally:
        await operator.close()
    assert not log.of("error")
    speaker = virtual_audio.read_output(SPEAKER)
    # 0.15 s pieces of the voice, in order. In its first second the jitter buffer may drop
    # the start delay's surplus frame (no pause in noise to hide it in): that breaks the
    # piece it falls in, so one piece may be missed.
    hits = []
    for start in (0.1 + 0.15 * k for k in range(8)):
        piece = voice[int(start * rate) : int((start + 0.15) * rate)]
        lag, score = find_lag(piece, speaker)
        if score > 0.9:
            hits.append(lag)
    assert len(hits) >= 7, f"the echo is not at the speaker ({len(hits)} of 8 pieces; {stats})"
    assert hits == sorted(hits)


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
        assert not isinstance(operator.audio.active_device, PyAudioDevice)

        # The operator picks a working microphone: the call moves onto the sound card.
        rate = AUTO_RATE
        virtual_audio.write_input(MIC, bandlimited_noise(2.0, rate, seed=44), rate=rate)
        volumes: list[float] = []
        call.on("volume", lambda mic, _speaker: volumes.append(mic))
        info = await operator.audio.select_input(MIC)
        assert info is not None
        assert info.name == MIC
        assert isinstance(operator.audio.active_device, PyAudioDevice)
        await wait_until(lambda: max(volumes, default=0.0) > 0.5, timeout=5)
        assert call.state == CallState.ACTIVE
        await call.hangup()
    finally:
        await operator.close()


async def test_device_list_and_tests_through_the_manager(
    core: CoreServer, virtual_audio: VirtualAudio
) -> None:
    rate = AUTO_RATE
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


def tone_power_ratio(x: np.ndarray, freq: float, rate: int) -> float:
    """Energy at ``freq`` relative to the rest of the spectrum (a pure tone gives >> 1)."""
    spectrum = np.abs(np.fft.rfft(x.astype(np.float64))) ** 2
    bins = np.fft.rfftfreq(len(x), 1 / rate)
    near = np.abs(bins - freq) < 20
    return float(spectrum[near].sum() / (spectrum[~near].sum() + 1e-9))


async def test_speaker_test_plays_a_1khz_tone(virtual_audio: VirtualAudio) -> None:
    virtual_audio.clear_output(SPEAKER)
    audio = manager(MIC, SPEAKER)
    try:
        await audio.test_speaker(0.5)
    finally:
        await audio.close()
    out = virtual_audio.read_output(SPEAKER)
    loud = out[np.abs(out) > 1000]
    assert len(loud) > 0.3 * AUTO_RATE  # about 0.5 s of tone
    assert tone_power_ratio(out, 1000, AUTO_RATE) > 10


async def test_ringtone_plays_while_an_offer_is_pending(
    core: CoreServer, virtual_audio: VirtualAudio
) -> None:
    virtual_audio.clear_output(SPEAKER)
    audio = manager(MIC, SPEAKER)
    audio.sounds_enabled = True
    operator = sandbox_operator(core.url, audio=audio)
    log = EventLog(operator)
    try:
        await operator.go_online(["pn_15550150"])
        await core.core.place_inbound("+15551230099", "+15550150", {})
        call = await log.wait_for("incoming_call")
        await wait_until(lambda: audio._ringer is not None, timeout=5)
        ringer = audio._ringer
        assert ringer is not None
        assert "ringtone" in ringer.mixer.playing
        await wait_until(lambda: ringer.levels.read()[1] > 0.3, timeout=5)  # it is loud
        await call.reject()
        await wait_until(lambda: audio._ringer is None, timeout=5)
    finally:
        await operator.close()
    out = virtual_audio.read_output(SPEAKER)
    assert np.abs(out).max() > 1000


async def test_rescan_reports_a_plugged_microphone(
    core: CoreServer, virtual_audio: VirtualAudio
) -> None:
    operator = sandbox_operator(core.url, audio=manager(MIC, SPEAKER))
    changes: list[object] = []
    operator.on("devices_changed", changes.append)  # type: ignore[call-overload]
    try:
        await operator.audio.rescan()  # baseline
        changes.clear()
        with virtual_audio.extra_input("usb_headset_mic"):
            change = await operator.audio.rescan()
        assert [d.name for d in change.added] == ["usb_headset_mic"]
        assert changes == [change]
        gone = await operator.audio.rescan()
        assert [d.name for d in gone.removed] == ["usb_headset_mic"]
    finally:
        await operator.close()


async def test_processing_can_be_switched_during_a_call(
    core: CoreServer, virtual_audio: VirtualAudio
) -> None:
    audio = manager(MIC, SPEAKER)  # all processing off
    operator = sandbox_operator(core.url, audio=audio)
    try:
        call = await operator.dial(ECHO)
        assert await call.wait_started(10)
        await wait_until(lambda: audio.active_device is not None, timeout=5)
        assert audio.processor is None
        audio.set_processing(noise_suppression=True)
        processor = audio.processor
        assert processor is not None
        assert (processor.noise_suppression, processor.echo_cancellation) == (True, False)
        await wait_until(lambda: processor.stats.capture_frames >= 25, timeout=5)
        audio.set_processing(echo_cancellation=True)
        assert audio.processor is processor
        assert processor.echo_cancellation
        await call.hangup()
    finally:
        await operator.close()
    assert audio.settings.noise_suppression


@pytest.mark.parametrize("policy", ["continue", "hangup"])
async def test_sound_server_dies_mid_call(
    core: CoreServer, virtual_audio: VirtualAudio, policy: str
) -> None:
    """The sound server is killed during a call (every stream stalls, as when a headset is
    pulled): an AUDIO_DEVICE_LOST error on the call and the operator within ~2 s; then the
    call goes on without sound until the operator picks a device again, or hangs up."""
    operator = sandbox_operator(core.url, audio=manager(MIC, SPEAKER), audio_device_lost=policy)
    log = EventLog(operator)
    restarted = False
    try:
        call = await operator.dial(ECHO)
        assert await call.wait_started(10)
        call_errors: list[OperatorError] = []
        call.on("error", call_errors.append)
        await wait_until(lambda: call.stats.frames_sent >= 25, timeout=5)
        virtual_audio.crash_daemon()
        error = await log.wait_for("error", timeout=6)
        assert error.code == "AUDIO_DEVICE_LOST"
        assert call_errors == [error]
        if policy == "hangup":
            assert await call.wait_ended(5) == "failed"
            assert "audio device" in call.end_message
            return
        sent = call.stats.frames_sent
        await wait_until(lambda: call.stats.frames_sent >= sent + 25, timeout=5)  # silence
        assert call.state == CallState.ACTIVE
        assert "pick another" in error.message
        virtual_audio.restart_daemon()
        restarted = True
        info = await operator.audio.select_input(MIC)  # the headset is back: pick it
        assert info is not None
        assert isinstance(operator.audio.active_device, PyAudioDevice)
        captured = call.stats.frames_sent
        await wait_until(lambda: call.stats.frames_sent >= captured + 25, timeout=5)
        assert call.state == CallState.ACTIVE
        await call.hangup()
        assert len(log.of("error")) == 1
    finally:
        await operator.close()
        if not restarted:
            virtual_audio.restart_daemon()


def test_audio_settings_check_the_rate() -> None:
    assert AudioSettings().device_rate == "auto"
    assert AudioSettings(rate="native").device_rate is None
    assert AudioSettings(rate=48000).device_rate == 48000
    for bad in ("fast", 4000, True):
        with pytest.raises(ValueError, match="rate must be"):
            AudioSettings(rate=bad)  # type: ignore[arg-type]
