"""Audio features of a call through the real core: levels, volume events, mute warning,
local DTMF feedback, far-end audio through the jitter buffer."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from softphone.media import FileAudioDevice
from softphone.server import CoreServer

from .conftest import sandbox_operator, wait_until
from .test_e2e_calls import read_wav, write_noise


def write_syllables(path: Path, seconds: float) -> None:
    """Noise bursts at a syllable rate (150 ms on, 100 ms quiet): speech-like levels."""
    import wave

    rng = np.random.default_rng(3)
    n = int(8000 * seconds)
    t = np.arange(n) / 8000
    gate = np.where((t % 0.25) < 0.15, 1.0, 0.02)
    x = (rng.standard_normal(n) * 6000 * gate).clip(-32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(x.tobytes())


def goertzel_power(x: np.ndarray, freq: float, rate: int = 8000) -> float:
    n = np.arange(len(x))
    ref = np.exp(-2j * np.pi * freq * n / rate)
    return float(abs(np.dot(x, ref)) ** 2) / len(x)


async def test_volume_events_mute_warning_and_dtmf_feedback(
    core: CoreServer, tmp_path: Path
) -> None:
    play, record = tmp_path / "talk.wav", tmp_path / "rec.wav"
    write_syllables(play, 6.0)
    device = FileAudioDevice(play, record)
    operator = sandbox_operator(core.url, audio=lambda _c: device)
    volumes: list[tuple[float, float]] = []
    events: list[tuple[str, object]] = []
    try:
        call = await operator.dial("+15550100")
        call.on("volume", lambda i, o: volumes.append((i, o)))
        call.on("muted", lambda m: events.append(("muted", m)))
        call.on("warning", lambda name: events.append(("warning", name)))
        call.on("warning_cleared", lambda name: events.append(("warning_cleared", name)))
        call.on("disconnected", lambda: events.append(("disconnected", None)))
        assert await call.wait_started(10)
        await wait_until(lambda: len(volumes) >= 20, timeout=5)  # 1 s of 50 ms events
        loudest_in = max(i for i, _ in volumes)
        loudest_out = max(o for _, o in volumes)
        assert loudest_in > 0.6  # -15 dBFS-ish bursts on the "microphone"
        assert loudest_out > 0.6  # its echo on the "speaker"

        await call.mute(True)
        await wait_until(lambda: ("warning", "speaking-while-muted") in events, timeout=5)
        await call.mute(False)
        assert ("warning_cleared", "speaking-while-muted") in events

        await call.send_dtmf("5")
        assert "dtmf" in device.mixer.playing
        await wait_until(lambda: "dtmf" not in device.mixer.playing, timeout=5)
        await call.hangup()
    finally:
        await operator.close()
    assert events[0] == ("muted", True)
    assert ("muted", False) in events
    assert events[-1] == ("disconnected", None)
    # 50 ms apart on average (the engine polls the device's level slot on a timer).
    assert len(volumes) >= 20

    # The DTMF feedback (770 + 1336 Hz for "5") is in what the speaker played.
    rec = read_wav(record)
    window = 1280
    powers = [
        goertzel_power(rec[i : i + window], 770) + goertzel_power(rec[i : i + window], 1336)
        for i in range(0, len(rec) - window, window)
    ]
    ratio = max(powers) / (np.median(powers) + 1e-9)
    assert ratio > 5


async def test_far_end_audio_passes_the_jitter_buffer_in_order(
    core: CoreServer, tmp_path: Path
) -> None:
    play, record = tmp_path / "noise.wav", tmp_path / "rec.wav"
    write_noise(play, 1.0)
    device = FileAudioDevice(play, record)
    operator = sandbox_operator(core.url, audio=lambda _c: device)
    try:
        call = await operator.dial("+15550100")
        assert await call.wait_started(10)
        await wait_until(lambda: device.ticks >= 50 + 15, timeout=10)
        stats = device.stats()
        await call.hangup()
        await asyncio.wait_for(call.wait_ended(), 5)
    finally:
        await operator.close()
    assert stats.playback_late == 0
    assert stats.playback_lost == 0
    assert stats.playback_target_ms <= 60


async def test_alaw_is_negotiated_from_codec_preferences(core: CoreServer, tmp_path: Path) -> None:
    from .test_e2e_calls import find_delay

    play, record = tmp_path / "noise.wav", tmp_path / "rec.wav"
    source = write_noise(play, 1.0)
    device = FileAudioDevice(play, record)
    operator = sandbox_operator(core.url, audio=lambda _c: device, codec_preferences=("PCMA",))
    try:
        call = await operator.dial("+15550100")
        assert await call.wait_started(10)
        assert call.codec == "PCMA"
        assert core.core.calls[call.call_sid].media is not None
        assert core.core.calls[call.call_sid].media.codec == "PCMA"  # type: ignore[union-attr]
        await wait_until(lambda: device.ticks >= 50 + 15, timeout=10)
        await call.hangup()
    finally:
        await operator.close()
    lag, score = find_delay(source, read_wav(record))
    assert score > 0.99  # encoded and decoded as A-law both ways: the echo is the signal
    assert lag / 8 < 250


def test_codec_choice_of_the_core() -> None:
    from softphone.protocol import choose_codec

    assert choose_codec(["PCMA", "PCMU"]) == "PCMA"
    assert choose_codec(["opus", "PCMU"]) == "PCMU"  # unknown names are skipped
    assert choose_codec(["opus"]) == "PCMU"  # every v1 peer speaks PCMU
    assert choose_codec([]) == "PCMU"


def test_the_sender_wakes_once_per_captured_frame_just_after_it_is_due() -> None:
    from softphone.engine.call import _MediaLeg

    wake = _MediaLeg._next_wake
    # No capture timing yet: poll every 10 ms.
    assert wake(100.0, 0.0) == 100.010
    # A frame arrived 5 ms ago: the next one is due 15 ms from now; wake 2 ms after that.
    assert abs(wake(100.0, 99.995) - 100.017) < 1e-9
    # The next frame is late (due 5 ms ago): look again in 2 ms...
    assert abs(wake(100.0, 99.975) - 100.002) < 1e-9
    # ...and after more than 10 ms of lateness, fall back to polling every 10 ms.
    assert wake(100.0, 99.969) == 100.010
