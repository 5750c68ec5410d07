"""PyAudioDevice through real PortAudio on the virtual devices of tests/audio_env.py, plus
callback logic (channels, odd buffer sizes, failures) on a scripted PyAudio stand-in.

The real-time tests drive the device like the engine does: poll ``read_frame`` and keep
``playback`` topped up, waiting on frame counts with bounded timeouts (never a bare sleep).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray

from softphone.media.device import FRAME_SAMPLES, AudioDeviceError, AudioErrorCode
from softphone.media.devices import (
    DEVICE_NOT_FOUND,
    MICROPHONE_UNAVAILABLE,
    OUTPUT_UNAVAILABLE,
    AudioSystem,
    alsa_message_count,
    load_pyaudio,
)
from softphone.media.jitter import CROSSFADE_MS
from softphone.media.levels import frame_level
from softphone.media.pyaudio_device import PyAudioDevice
from softphone.media.resampler import Resampler

from .audio_env import (
    FakeDevice,
    FakePyAudio,
    VirtualAudio,
    bandlimited_noise,
    fft_resample,
    find_lag,
    level_db,
    provide_virtual_audio,
    wait_for,
)

MIC, MIC2, SPEAKER, SPEAKER2 = (
    VirtualAudio.MIC,
    VirtualAudio.MIC2,
    VirtualAudio.SPEAKER,
    VirtualAudio.SPEAKER2,
)


@pytest.fixture(scope="session")
def virtual_audio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VirtualAudio]:
    """tests/audio_env.py's devices (one shared daemon for the whole session)."""
    yield from provide_virtual_audio(tmp_path_factory)


@pytest.fixture
def system(virtual_audio: VirtualAudio) -> Iterator[AudioSystem]:
    with AudioSystem() as audio_system:
        yield audio_system
        assert audio_system.open_streams == 0, "a test left a PortAudio stream open"


@dataclass
class Driver:
    """The engine's side of a call: collects captured frames and, like an echo, queues one
    frame of ``play`` for each frame captured (so frames arrive at the device's real-time
    pace, as they would from the network)."""

    device: PyAudioDevice
    play: NDArray[np.int16] = field(default_factory=lambda: np.zeros(0, dtype=np.int16))
    captured: list[NDArray[np.int16]] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)
    written: int = 0

    def pump(self) -> None:
        frames = len(self.play) // FRAME_SAMPLES
        while (frame := self.device.read_frame()) is not None:
            self.captured.append(frame)
            self.arrivals.append(time.monotonic())
            if self.written < frames:
                start = self.written * FRAME_SAMPLES
                self.device.write_frame(self.play[start : start + FRAME_SAMPLES])
                self.written += 1

    def run_until(self, condition: object, timeout: float, what: str) -> None:
        assert callable(condition)

        def done() -> bool:
            self.pump()
            return bool(condition())

        wait_for(done, timeout, what)

    @property
    def all_played(self) -> bool:
        return self.written * FRAME_SAMPLES >= len(self.play) and self.device.playback.depth == 0

    def capture(self) -> NDArray[np.int16]:
        return np.concatenate(self.captured) if self.captured else np.zeros(0, dtype=np.int16)


def upsampled(src8: NDArray[np.int16], rate: int) -> NDArray[np.float64]:
    """``src8`` at ``rate``: a band-limited reference (resampled between 100 ms of silence,
    like the device sees it, then trimmed)."""
    pad = np.zeros(800)
    padded = np.concatenate([pad, src8.astype(np.float64), pad])
    out = fft_resample(padded, len(padded) * rate // 8000)
    edge = 800 * rate // 8000
    return out[edge:-edge]


def to_8k(signal: NDArray[np.int16], rate: int) -> NDArray[np.float64]:
    """What an ideal 8 kHz resampler makes of ``signal`` (band-limited reference)."""
    return fft_resample(signal, len(signal) * 8000 // rate)


def assert_captured(reference8: NDArray[np.float64], capture: NDArray[np.int16]) -> int:
    lag, score = find_lag(reference8, capture)
    segment = capture[lag : lag + len(reference8)]
    assert score > 0.95, f"microphone signal not found in the capture (correlation {score:.3f})"
    assert abs(level_db(segment, reference8)) < 1.0, level_db(segment, reference8)
    return lag


def assert_played(src8: NDArray[np.int16], output: NDArray[np.int16], rate: int) -> int:
    reference = upsampled(src8, rate)
    lag, score = find_lag(reference, output)
    segment = output[lag : lag + len(reference)]
    assert score > 0.95, f"played frames not found in the output (correlation {score:.3f})"
    assert abs(level_db(segment, reference)) < 1.0, level_db(segment, reference)
    return lag


def assert_healthy(device: PyAudioDevice) -> None:
    stats = device.realtime_stats()
    assert stats.callback_errors == 0
    assert stats.pa_input_overflows == 0
    assert stats.pa_output_underflows == 0
    assert device.error is None


def assert_frames_intact(
    speech: NDArray[np.int16], output: NDArray[np.int16], device: PyAudioDevice
) -> int:
    """Every 8 kHz frame of ``speech`` is in ``output`` bit-exact and in order (nothing
    converted it), except where the jitter buffer itself cut delay: on a loaded machine the
    test's feeding thread falls behind, then queues frames in a burst, and the buffer drops
    one (counted in ``dropped``) and crossfades into the next one's first 4 ms. A resampled
    stream matches no frame. Returns where the first frame starts."""
    played = output.tobytes()
    jitter = device.playback.stats()
    xfade = round(CROSSFADE_MS * 8000 / 1000)
    at, first, missing, faded = 0, -1, [], []
    for k in range(0, len(speech), FRAME_SAMPLES):
        frame = speech[k : k + FRAME_SAMPLES]
        found = played.find(frame.tobytes(), at)
        if found < 0 and (found := played.find(frame[xfade:].tobytes(), at)) >= 0:
            faded.append(k // FRAME_SAMPLES)
            found -= 2 * xfade
        if found < 0:
            missing.append(k // FRAME_SAMPLES)
            continue
        assert found % 2 == 0
        first = found // 2 if first < 0 else first
        at = found + 2 * FRAME_SAMPLES
    assert len(missing) <= jitter.dropped, (missing, jitter)
    assert len(faded) <= jitter.dropped + jitter.concealed, (faded, jitter)
    assert first >= 0
    # Between the frames only what the buffer says it played in their place: concealment,
    # or silence while re-buffering.
    frames = len(speech) // FRAME_SAMPLES - len(missing)
    span = at // 2 - first
    assert span <= (frames + jitter.concealed + jitter.idle) * FRAME_SAMPLES, (span, jitter)
    return first


# -- real PortAudio ----------------------------------------------------------------------


def test_capture_at_the_device_default_rate(
    system: AudioSystem, virtual_audio: VirtualAudio
) -> None:
    """PortAudio reports 44.1 kHz here: 882-sample buffers become exactly one 8 kHz frame."""
    rate = 44100
    mic = bandlimited_noise(1.0, rate, seed=11)
    virtual_audio.write_input(MIC, mic, rate=rate)
    device = PyAudioDevice(system, MIC, SPEAKER)
    driver = Driver(device)
    with device:
        assert (device.input_rate, device.output_rate) == (rate, rate)
        driver.run_until(lambda: len(driver.captured) >= 60, 5, "60 captured frames")
    assert all(f.shape == (FRAME_SAMPLES,) and f.dtype == np.int16 for f in driver.captured)
    lag = assert_captured(to_8k(mic, rate), driver.capture())
    assert lag < 40  # the resampler's delay (~14 samples), nothing lost at the start
    assert_healthy(device)


def test_capture_and_playback_at_48k(system: AudioSystem, virtual_audio: VirtualAudio) -> None:
    rate = 48000
    mic = bandlimited_noise(1.0, rate, seed=21)
    virtual_audio.write_input(MIC, mic, rate=rate)
    speech = bandlimited_noise(1.0, 8000, seed=22)
    device = PyAudioDevice(system, MIC, SPEAKER, rate=rate, fixed_delay=True)
    driver = Driver(device, play=speech)
    with device:
        driver.run_until(lambda: driver.all_played and len(driver.captured) >= 60, 6, "1 s played")
        # 200 ms of silence after the last frame, so its tail leaves the resampler too.
        target = device.output_callbacks + 10
        driver.run_until(lambda: device.output_callbacks >= target, 2, "the tail")
    assert device.stats().frames_played == len(speech) // FRAME_SAMPLES
    assert_captured(to_8k(mic, rate), driver.capture())
    output = virtual_audio.read_output(SPEAKER)
    assert_played(speech, output, rate)
    assert_healthy(device)


def test_8k_device_path_is_bit_exact(system: AudioSystem, virtual_audio: VirtualAudio) -> None:
    rng = np.random.default_rng(8)
    mic = rng.integers(-20000, 20000, 8000, dtype=np.int16)  # full-band: no filter touches it
    speech = rng.integers(-20000, 20000, 8000, dtype=np.int16)
    virtual_audio.write_input(VirtualAudio.MIC_8K, mic, rate=8000)
    device = PyAudioDevice(
        system, VirtualAudio.MIC_8K, VirtualAudio.SPEAKER_8K, rate=8000, fixed_delay=True
    )
    driver = Driver(device, play=speech)
    with device:
        driver.run_until(
            lambda: driver.all_played and len(driver.captured) >= 55, 6, "1 s at 8 kHz"
        )
    capture = driver.capture()
    np.testing.assert_array_equal(capture[: len(mic)], mic)  # from the first sample on
    output = virtual_audio.read_output(VirtualAudio.SPEAKER_8K)
    first = assert_frames_intact(speech, output, device)
    assert not output[:first].any()  # only the prefill's silence before it
    assert_healthy(device)


def test_auto_rate_opens_a_sound_server_device_at_8k(
    system: AudioSystem, virtual_audio: VirtualAudio, monkeypatch: pytest.MonkeyPatch
) -> None:
    """rate="auto": the server's device (here "pulse", on paced_in / paced_out) runs at the
    call's 8 kHz, so nothing is resampled in the callbacks; other ALSA devices run at 48 kHz
    if they take it, else at their own rate."""
    rng = np.random.default_rng(80)
    mic = rng.integers(-20000, 20000, 8000, dtype=np.int16)
    speech = rng.integers(-20000, 20000, 8000, dtype=np.int16)
    virtual_audio.write_input(MIC, mic, rate=8000)
    virtual_audio.clear_output(SPEAKER)
    server = VirtualAudio.SERVER
    device = PyAudioDevice(system, server, server, rate="auto", fixed_delay=True)
    driver = Driver(device, play=speech)
    with device:
        assert (device.input_rate, device.output_rate) == (8000, 8000)
        assert device._input is not None
        assert device._input.resampler.ratio == (1, 1)
        # One device for both directions: one full-duplex stream, one callback for both.
        assert device.realtime_stats().duplex
        assert system.open_streams == 1
        driver.run_until(
            lambda: driver.all_played and len(driver.captured) >= 55, 6, "1 s at 8 kHz"
        )
        assert abs(device.input_callbacks - device.output_callbacks) <= 1
    np.testing.assert_array_equal(driver.capture()[: len(mic)], mic)  # nothing converted here
    assert_frames_intact(speech, virtual_audio.read_output(SPEAKER), device)
    assert_healthy(device)

    # Other ALSA devices: 48 kHz (PortAudio says 44100 for any device that takes it).
    other = PyAudioDevice(system, MIC, SPEAKER, rate="auto")
    with other:
        assert (other.input_rate, other.output_rate) == (48000, 48000)
        assert not other.realtime_stats().duplex  # two devices, two clocks: two streams
        assert system.open_streams == 2
    # A card that does not take 48 kHz is opened at its own rate.
    supported = system.pyaudio.is_format_supported

    def no_48k(rate: float, *args: object, **kwargs: object) -> bool:
        if rate == 48000:
            raise ValueError("Invalid sample rate", -9997)  # what PortAudio raises
        return bool(supported(rate, *args, **kwargs))

    monkeypatch.setattr(system.pyaudio, "is_format_supported", no_48k)
    with PyAudioDevice(system, MIC, SPEAKER, rate="auto") as fallback:
        assert (fallback.input_rate, fallback.output_rate) == (44100, 44100)
    with pytest.raises(ValueError, match="'auto' or None"):
        PyAudioDevice(system, MIC, SPEAKER, rate="fast")  # type: ignore[arg-type]


def test_a_duplex_device_switches_each_direction_on_its_own(
    system: AudioSystem, virtual_audio: VirtualAudio
) -> None:
    """Switching the microphone of a full-duplex device gives the input a stream of its own
    while the duplex stream goes on playing; switching the speaker too retires it."""
    voice_a = bandlimited_noise(3.0, 8000, seed=51)
    voice_b = bandlimited_noise(3.0, 8000, seed=52)
    virtual_audio.write_input(MIC, voice_a, rate=8000)
    virtual_audio.write_input(MIC2, voice_b, rate=8000)
    virtual_audio.clear_output(SPEAKER2)
    server = VirtualAudio.SERVER
    device = PyAudioDevice(system, server, server, rate=8000)
    driver = Driver(device, play=bandlimited_noise(3.0, 8000, seed=53))
    with device, ThreadPoolExecutor(1) as worker:
        driver.run_until(lambda: len(driver.captured) >= 25, 5, "0.5 s in duplex")
        assert device.realtime_stats().duplex
        assert system.open_streams == 1
        played = device.stats().frames_played
        switched = worker.submit(device.switch_input, MIC2)
        driver.run_until(switched.done, 5, "the microphone switch")
        assert switched.result().name == MIC2
        at_switch = len(driver.captured)
        driver.run_until(lambda: len(driver.captured) >= at_switch + 25, 5, "0.5 s on MIC2")
        assert not device.realtime_stats().duplex
        assert system.open_streams == 2  # the new microphone's, and the duplex one playing
        assert device.stats().frames_played - played >= 25
        switched = worker.submit(device.switch_output, SPEAKER2)
        driver.run_until(switched.done, 5, "the speaker switch")
        assert switched.result().name == SPEAKER2
        assert system.open_streams == 2  # the duplex stream is closed
        target = device.stats().frames_played + 25
        driver.run_until(lambda: device.stats().frames_played >= target, 5, "0.5 s on SPEAKER2")
    after = np.concatenate(driver.captured[at_switch + 2 :])
    lag, score = find_lag(after, voice_b)
    assert score > 0.95, f"microphone 2 not heard after the switch ({score:.3f})"
    assert lag < 8 * 200  # heard from (about) its start: the new stream began there
    assert int(np.abs(virtual_audio.read_output(SPEAKER2)).max()) > 1000  # speaker 2 played
    assert device.realtime_stats().input_switches == 1
    assert_healthy(device)


def test_a_device_refusing_a_duplex_stream_gets_two(
    system: AudioSystem, virtual_audio: VirtualAudio, monkeypatch: pytest.MonkeyPatch
) -> None:
    virtual_audio.write_input(MIC, bandlimited_noise(1.0, 8000, seed=54), rate=8000)
    real_open = system.pyaudio.open
    opened: list[tuple[bool, bool]] = []

    def open_stream(**kwargs: object) -> object:
        opened.append((bool(kwargs.get("input")), bool(kwargs.get("output"))))
        if kwargs.get("input") and kwargs.get("output"):
            raise OSError(-9999, "Unanticipated host error")
        return real_open(**kwargs)

    monkeypatch.setattr(system.pyaudio, "open", open_stream)
    server = VirtualAudio.SERVER
    device = PyAudioDevice(system, server, server, rate=8000)
    driver = Driver(device, play=bandlimited_noise(0.4, 8000, seed=55))
    with device:
        driver.run_until(lambda: driver.all_played, 5, "0.4 s on two streams")
        assert not device.realtime_stats().duplex
        assert system.open_streams == 2
    assert opened == [(True, True), (True, False), (False, True)]
    assert device.duplex_refused is not None
    assert "host error" in device.duplex_refused.lower()
    assert_healthy(device)

    opened.clear()  # duplex=False: not even tried
    with PyAudioDevice(system, server, server, rate=8000, duplex=False) as plain:
        assert not plain.realtime_stats().duplex
    assert opened == [(True, False), (False, True)]

    # A duplex stream that opens but does not start: closed, and two streams instead.
    monkeypatch.setattr(system.pyaudio, "open", real_open)
    real_start = PyAudioDevice._start_stream

    def start_stream(self: PyAudioDevice, path: Any, direction: Any) -> None:
        if path.partner is not None:
            raise self._unavailable(direction, path.info, path.rate, "Device unavailable")
        real_start(self, path, direction)

    monkeypatch.setattr(PyAudioDevice, "_start_stream", start_stream)
    with PyAudioDevice(system, server, server, rate=8000) as late:
        assert not late.realtime_stats().duplex
        assert system.open_streams == 2  # the duplex stream was closed
    assert late.duplex_refused is not None
    assert "Device unavailable" in late.duplex_refused


def test_switch_microphone_mid_call(system: AudioSystem, virtual_audio: VirtualAudio) -> None:
    rate = 48000
    voice_a = bandlimited_noise(2.0, rate, seed=31)
    voice_b = bandlimited_noise(2.0, rate, seed=32)
    virtual_audio.write_input(MIC, voice_a, rate=rate)
    virtual_audio.write_input(MIC2, voice_b, rate=rate)
    device = PyAudioDevice(system, MIC, SPEAKER, rate=rate)
    driver = Driver(device, play=bandlimited_noise(2.0, 8000, seed=33))
    with device, ThreadPoolExecutor(1) as worker:
        driver.run_until(lambda: len(driver.captured) >= 25, 5, "0.5 s on microphone A")
        output_path = device._output
        played_before = device.stats().frames_played
        switched = worker.submit(device.switch_input, MIC2)  # the engine uses a worker too
        driver.run_until(switched.done, 5, "the switch")
        info = switched.result()
        at_switch = len(driver.captured)
        driver.run_until(lambda: len(driver.captured) >= at_switch + 25, 5, "0.5 s on B")
        assert device._output is output_path  # the speaker stream was never touched
        assert device.stats().frames_played - played_before >= 25  # and kept playing
    assert info.name == MIC2
    assert device.input_name == MIC2
    assert device.realtime_stats().input_switches == 1
    gaps = np.diff(driver.arrivals)
    assert gaps.max() < 0.070, f"capture stalled {gaps.max() * 1000:.0f} ms at the switch"

    before = np.concatenate(driver.captured[: at_switch - 3])
    after = np.concatenate(driver.captured[at_switch + 2 :])
    assert_captured(to_8k(voice_a, rate)[: len(before) - 100], before)
    lag_b, score_b = find_lag(after, to_8k(voice_b, rate))
    assert score_b > 0.95, f"microphone B not heard after the switch ({score_b:.3f})"
    assert lag_b < 8 * 200  # B is heard from (about) its start: the new stream began there
    assert_healthy(device)


def test_switch_speaker_mid_call(system: AudioSystem, virtual_audio: VirtualAudio) -> None:
    rate = 48000
    speech = bandlimited_noise(1.6, 8000, seed=41)
    virtual_audio.write_input(MIC, bandlimited_noise(2.0, rate, seed=42), rate=rate)
    virtual_audio.clear_output(SPEAKER2)
    device = PyAudioDevice(system, MIC, SPEAKER, rate=rate, fixed_delay=True)
    driver = Driver(device, play=speech)
    with device, ThreadPoolExecutor(1) as worker:
        driver.run_until(lambda: device.stats().frames_played >= 30, 5, "0.6 s on speaker 1")
        input_path = device._input
        captured_before = len(driver.captured)
        switched = worker.submit(device.switch_output, SPEAKER2)
        driver.run_until(switched.done, 5, "the switch")
        assert switched.result().name == SPEAKER2
        driver.run_until(lambda: driver.all_played, 5, "the rest on speaker 2")
        target = device.output_callbacks + 10
        driver.run_until(lambda: device.output_callbacks >= target, 2, "the tail")
        assert device._input is input_path  # the microphone stream was never touched
        assert len(driver.captured) - captured_before >= 30
    assert device.output_name == SPEAKER2
    # Every frame was played, except that the jitter buffer may shed one (crossfaded) a few
    # hundred ms later: the hand-over can leave it one frame above its target delay.
    stats = device.stats()
    assert stats.frames_played + stats.playback_dropped == len(speech) // FRAME_SAMPLES
    assert stats.playback_dropped <= 1
    first = virtual_audio.read_output(SPEAKER)
    second = virtual_audio.read_output(SPEAKER2)
    reference = upsampled(speech, rate)
    # Where each file's audio sits in the reference: speaker 2 continues where 1 stopped.
    first_audio = first[np.flatnonzero(first)[0] : np.flatnonzero(first)[-1] + 1]
    second_audio = second[np.flatnonzero(second)[0] : np.flatnonzero(second)[-1] + 1]
    # A frame concealed at the switch (the new stream's priming burst draining the jitter
    # buffer) would show here as a repeated frame: a lower score and a negative loss.
    skip = 480  # past the resampler's ramp-up at the start of each stream
    found_1, score_1 = find_lag(first_audio[skip : skip + 4800], reference)
    found_2, score_2 = find_lag(second_audio[skip : skip + 4800], reference)
    np.save("/tmp/va/first.npy", first)
    np.save("/tmp/va/second.npy", second)
    np.save("/tmp/va/speech.npy", speech)
    assert score_1 > 0.95
    assert score_2 > 0.95
    start_1, start_2 = found_1 - skip, found_2 - skip
    assert abs(start_1) < 200  # speaker 1 played the speech from its start
    end_1 = start_1 + len(first_audio)
    lost_ms = (start_2 - end_1) / rate * 1000
    assert -5 < lost_ms < 25, f"{lost_ms:.1f} ms of audio lost at the switch"
    assert_healthy(device)


def test_failed_switch_keeps_the_current_devices(
    system: AudioSystem, virtual_audio: VirtualAudio, capfd: pytest.CaptureFixture[str]
) -> None:
    virtual_audio.write_input(MIC, bandlimited_noise(1.0, 44100, seed=51), rate=44100)
    device = PyAudioDevice(system, MIC, SPEAKER)
    driver = Driver(device)
    capfd.readouterr()
    with device:
        driver.run_until(lambda: len(driver.captured) >= 5, 5, "the call running")
        with pytest.raises(AudioDeviceError) as err:
            device.switch_output(VirtualAudio.DEAD_SPEAKER)
        assert err.value.code == OUTPUT_UNAVAILABLE
        assert "Unanticipated host error" in err.value.message  # PortAudio's own text
        with pytest.raises(AudioDeviceError) as err:
            device.switch_input(VirtualAudio.DEAD_MIC)
        assert err.value.code == MICROPHONE_UNAVAILABLE
        with pytest.raises(AudioDeviceError) as err:
            device.switch_input("no such microphone")
        assert err.value.code == DEVICE_NOT_FOUND
        assert system.open_streams == 2
        count = len(driver.captured)
        driver.run_until(lambda: len(driver.captured) >= count + 5, 5, "the call going on")
        assert device.running
    assert (device.input_name, device.output_name) == (MIC, SPEAKER)
    assert capfd.readouterr().err == ""  # PortAudio's "Expression ... failed" lines hidden


def test_devices_that_cannot_open(
    system: AudioSystem, virtual_audio: VirtualAudio, capfd: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(AudioDeviceError) as err:
        PyAudioDevice(system, "no such microphone", SPEAKER)
    assert err.value.code == DEVICE_NOT_FOUND

    capfd.readouterr()
    alsa_messages = alsa_message_count()
    device = PyAudioDevice(system, MIC, VirtualAudio.DEAD_SPEAKER)
    with pytest.raises(AudioDeviceError) as err:
        device.start()
    assert err.value.code == OUTPUT_UNAVAILABLE
    # alsa-lib's own complaint went to the counting handler, not to fd 2.
    assert alsa_message_count() > alsa_messages
    assert "dead_out" in err.value.message
    assert "pick another output device" in err.value.message
    assert system.open_streams == 0  # the microphone stream opened first was closed again

    with pytest.raises(AudioDeviceError) as err:
        PyAudioDevice(system, VirtualAudio.DEAD_MIC, SPEAKER).start()
    assert err.value.code == MICROPHONE_UNAVAILABLE

    with pytest.raises(AudioDeviceError) as err:
        PyAudioDevice(system, MIC, SPEAKER, rate=1_000_000).start()  # no such rate
    assert err.value.code == MICROPHONE_UNAVAILABLE
    assert "1000000 Hz" in err.value.message
    assert system.open_streams == 0
    assert capfd.readouterr().err == ""


def test_lifecycle(system: AudioSystem, virtual_audio: VirtualAudio) -> None:
    never_started = PyAudioDevice(system, MIC, SPEAKER)
    never_started.stop()  # releases nothing, no error
    device = PyAudioDevice(system, MIC, SPEAKER)
    device.start()
    device.start()  # no-op
    assert system.open_streams == 2
    wait_for(lambda: device.read_frame() is not None, 5, "a captured frame")
    device.stop()
    device.stop()
    assert system.open_streams == 0
    assert not device.running
    with pytest.raises(RuntimeError):
        device.start()
    assert device.switch_input(MIC2).name == MIC2  # stopped: nothing to reopen


# -- callback logic on the scripted stand-in ---------------------------------------------------


def fake_device(devices: list[FakeDevice], **kwargs: object) -> tuple[PyAudioDevice, FakePyAudio]:
    backend = FakePyAudio(devices, default_input=0, default_output=1)
    system = AudioSystem(backend=backend)
    return PyAudioDevice(system, **kwargs), backend  # type: ignore[arg-type]


def drain(device: PyAudioDevice) -> list[NDArray[np.int16]]:
    frames = []
    while (frame := device.read_frame()) is not None:
        frames.append(frame)
    return frames


def test_stereo_only_devices_are_downmixed_and_duplicated() -> None:
    pa = load_pyaudio()
    device, backend = fake_device(
        [
            FakeDevice("Stereo mic", inputs=2, rate=8000, channels_ok=(2,)),
            FakeDevice("Stereo speaker", outputs=2, rate=8000, channels_ok=(2,)),
        ]
    )
    with device:
        in_stream, out_stream = backend.streams
        assert in_stream.kwargs["channels"] == 2
        assert out_stream.kwargs["channels"] == 2
        drain(device)
        left, right = np.full(160, 1000, np.int16), np.full(160, 3001, np.int16)
        stereo = np.column_stack([left, right]).reshape(-1)
        assert in_stream.callback(stereo.tobytes(), 160, {}, 0) == (None, pa.paContinue)
        (frame,) = drain(device)
        assert (frame == 2000).all()  # the average of both channels, rounded down

        ramp = np.arange(160, dtype=np.int16)
        device.playback.reset()
        for _ in range(2):  # prefill
            device.write_frame(ramp)
        data, flag = out_stream.callback(None, 160, {}, 0)
        assert flag == pa.paContinue
        played = np.frombuffer(data, dtype=np.int16).reshape(-1, 2)
        np.testing.assert_array_equal(played[:, 0], ramp)
        np.testing.assert_array_equal(played[:, 1], ramp)


def test_odd_buffer_sizes_are_reassembled_into_frames() -> None:
    rate = 11025  # 20 ms = 220.5 samples: PortAudio gets 220, frames straddle buffers
    device, backend = fake_device(
        [FakeDevice("Mic", inputs=1, rate=rate), FakeDevice("Speaker", outputs=1, rate=rate)]
    )
    signal = bandlimited_noise(1.0, rate, seed=61)
    with device:
        in_stream, out_stream = backend.streams
        assert in_stream.kwargs["frames_per_buffer"] == 220
        drain(device)
        device._input.resampler.reset()  # type: ignore[union-attr]
        device._input.fill = 0  # type: ignore[union-attr]
        fed = signal[: len(signal) // 220 * 220]
        for start in range(0, len(fed), 220):
            in_stream.callback(fed[start : start + 220].tobytes(), 220, {}, 0)
        frames = drain(device)
        # Output callbacks of odd sizes are served from whole frames without gaps.
        for _ in range(3):
            device.write_frame(np.full(160, 500, np.int16))
        sizes = [220, 221, 220, 219]
        blocks = [np.frombuffer(out_stream.callback(None, n, {}, 0)[0], np.int16) for n in sizes]
        assert [len(b) for b in blocks] == sizes
    expected = Resampler(rate, 8000).process(fed)
    got = np.concatenate(frames)
    assert len(frames) == len(expected) // FRAME_SAMPLES
    assert np.abs(got.astype(int) - expected[: len(got)]).max() <= 1


def test_status_flags_and_callback_failures() -> None:
    pa = load_pyaudio()

    class BrokenMixer:
        def mix(self, frame: NDArray[np.int16]) -> NDArray[np.int16]:
            raise ZeroDivisionError("bad mix")

    device, backend = fake_device(
        [FakeDevice("Mic", inputs=1, rate=8000), FakeDevice("Speaker", outputs=1, rate=8000)]
    )
    with device:
        in_stream, out_stream = backend.streams
        in_stream.callback(bytes(320), 160, {}, pa.paInputOverflow)
        in_stream.callback(bytes(320), 160, {}, pa.paInputOverflow | pa.paInputUnderflow)
        out_stream.callback(None, 160, {}, pa.paOutputUnderflow)
        stats = device.realtime_stats()
        assert stats.pa_input_overflows == 2
        assert stats.pa_input_underflows == 1
        assert stats.pa_output_underflows == 1
        assert stats.max_callback_us > 0
        assert device.running

        device.mixer = BrokenMixer()
        data, flag = out_stream.callback(None, 160, {}, 0)
        assert flag == pa.paComplete  # the stream ends; nothing escapes into PortAudio
        assert data == bytes(320)
    assert device.error is not None
    assert device.error.code == AudioErrorCode.AUDIO_DEVICE_FAILED
    assert "ZeroDivisionError: bad mix" in device.error.message
    assert device.realtime_stats().callback_errors == 1


def test_mixer_and_levels_see_the_right_frames() -> None:
    class AddTone:
        def mix(self, frame: NDArray[np.int16]) -> NDArray[np.int16]:
            return (frame + 1000).astype(np.int16)

    @dataclass
    class Levels:
        inputs: list[float] = field(default_factory=list)
        outputs: list[float] = field(default_factory=list)

        def write_input(self, level: float) -> None:
            self.inputs.append(level)

        def write_output(self, level: float) -> None:
            self.outputs.append(level)

    levels = Levels()
    backend = FakePyAudio(
        [FakeDevice("Mic", inputs=1, rate=8000), FakeDevice("Speaker", outputs=1, rate=8000)],
        default_input=0,
        default_output=1,
    )
    device = PyAudioDevice(AudioSystem(backend=backend), mixer=AddTone(), levels=levels)
    with device:
        in_stream, out_stream = backend.streams
        loud = np.full(160, 8000, np.int16)
        levels.inputs.clear()
        levels.outputs.clear()
        in_stream.callback(loud.tobytes(), 160, {}, 0)
        data, _ = out_stream.callback(None, 160, {}, 0)  # nothing queued: silence + tone
    assert levels.inputs == [pytest.approx(frame_level(loud))]
    mixed = np.frombuffer(data, np.int16)
    assert (mixed == 1000).all()
    assert levels.outputs == [pytest.approx(frame_level(mixed))]
    assert levels.outputs[0] > 0


def test_switch_on_the_stand_in_swaps_only_one_direction() -> None:
    device, backend = fake_device(
        [
            FakeDevice("Mic A", inputs=1, rate=16000),
            FakeDevice("Speaker", outputs=1, rate=48000),
            FakeDevice("Mic B", inputs=2, rate=44100),
            FakeDevice("Broken", inputs=1, outputs=1, fail_open=(-9985, "Device unavailable")),
        ]
    )
    with device:
        old_in, out_stream = backend.streams
        assert device.switch_input("Mic B").name == "Mic B"
        assert old_in.closed
        assert not out_stream.closed
        assert device.input_rate == 44100
        assert backend.streams[-1].kwargs["frames_per_buffer"] == 882
        with pytest.raises(AudioDeviceError) as err:
            device.switch_output("Broken")
        assert err.value.code == OUTPUT_UNAVAILABLE
        assert "Device unavailable [PortAudio -9985]" in err.value.message
        assert not out_stream.closed
    assert all(s.closed for s in backend.streams)


def test_switch_waits_for_the_new_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    """A stream that starts but never calls back is refused; the old one stays."""
    device, backend = fake_device(
        [
            FakeDevice("Mic", inputs=1, rate=8000),
            FakeDevice("Speaker", outputs=1, rate=8000),
            FakeDevice("Silent", inputs=1, rate=8000),
        ]
    )
    monkeypatch.setattr("softphone.media.pyaudio_device.SWITCH_START_TIMEOUT", 0.05)
    with device:
        old_in = backend.streams[0]
        stall = threading.Event()
        original = backend.open

        def open_without_callbacks(**kwargs: object) -> object:
            stream = original(**kwargs)
            stream.start_stream = stall.set  # type: ignore[method-assign]
            return stream

        backend.open = open_without_callbacks  # type: ignore[method-assign]
        with pytest.raises(AudioDeviceError) as err:
            device.switch_input("Silent")
        assert err.value.code == MICROPHONE_UNAVAILABLE
        assert "delivered nothing" in err.value.message
        assert not old_in.closed
        assert backend.streams[-1].closed
        assert device.input_name == "Mic"


def test_gil_switch_interval_is_lowered_while_running() -> None:
    before = sys.getswitchinterval()
    devices = [FakeDevice("Mic", inputs=1, rate=8000), FakeDevice("Speaker", outputs=1, rate=8000)]
    first, _ = fake_device(devices)
    second, _ = fake_device(devices)
    keep, _ = fake_device(devices, switch_interval=None)
    with keep:
        assert sys.getswitchinterval() == before
    with first:
        assert sys.getswitchinterval() == pytest.approx(0.001)
        with second:
            assert sys.getswitchinterval() == pytest.approx(0.001)
        assert sys.getswitchinterval() == pytest.approx(0.001)  # `first` still runs
    assert sys.getswitchinterval() == before
