"""FileAudioDevice / NullAudioDevice: WAV validation, tick alignment, pacing, lifecycle."""

from __future__ import annotations

import dataclasses
import threading
import time
import wave
from collections import deque
from pathlib import Path

import numpy as np
import pytest

from softphone.media import (
    FRAME_SAMPLES,
    SAMPLE_RATE,
    AudioDevice,
    AudioDeviceError,
    DeviceStats,
    FileAudioDevice,
    NullAudioDevice,
)


def write_wav(
    path: Path,
    samples: np.ndarray,
    *,
    rate: int = SAMPLE_RATE,
    channels: int = 1,
    width: int = 2,
) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(samples.tobytes())
    return path


def read_wav(path: Path) -> tuple[np.ndarray, tuple[int, int, int]]:
    with wave.open(str(path), "rb") as r:
        params = (r.getnchannels(), r.getsampwidth(), r.getframerate())
        data = r.readframes(r.getnframes())
    return np.frombuffer(data, dtype=np.int16), params


def noise(n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(-20000, 20000, n, dtype=np.int16)


# -- play file validation -----------------------------------------------------------------


def test_missing_play_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.wav"
    with pytest.raises(AudioDeviceError) as info:
        FileAudioDevice(play=missing)
    assert info.value.code == "AUDIO_FILE_NOT_FOUND"
    assert str(missing) in str(info.value)


@pytest.mark.parametrize("content", [b"", b"hello, not a wav file at all", b"RIFF\x00\x00"])
def test_not_a_wav(tmp_path: Path, content: bytes) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(content)
    with pytest.raises(AudioDeviceError) as info:
        FileAudioDevice(play=bad)
    assert info.value.code == "AUDIO_FILE_INVALID"
    assert str(bad) in info.value.message
    assert "sox" in info.value.message


def test_directory_is_invalid(tmp_path: Path) -> None:
    with pytest.raises(AudioDeviceError) as info:
        FileAudioDevice(play=tmp_path)
    assert info.value.code == "AUDIO_FILE_INVALID"


@pytest.mark.parametrize(
    ("rate", "channels", "width", "expected"),
    [
        (44100, 1, 2, "is 44100 Hz;"),
        (8000, 1, 1, "is 8-bit;"),
        (8000, 3, 2, "is 3 channels;"),
        (16000, 2, 3, "is 16000 Hz and 24-bit;"),
    ],
)
def test_wrong_format_names_the_problem_and_the_fix(
    tmp_path: Path, rate: int, channels: int, width: int, expected: str
) -> None:
    path = write_wav(
        tmp_path / "x.wav",
        np.zeros(width * channels * 100, dtype=np.uint8),
        rate=rate,
        channels=channels,
        width=width,
    )
    with pytest.raises(AudioDeviceError) as info:
        FileAudioDevice(play=path)
    message = info.value.message
    assert info.value.code == "AUDIO_FILE_INVALID"
    assert message.startswith(f"{path} {expected}")
    assert "needs 16-bit PCM at 8000 Hz, mono or stereo" in message
    assert f"sox {path} -r 8000 -c 1 -b 16 out.wav" in message


def test_unwritable_record_path(tmp_path: Path) -> None:
    with pytest.raises(AudioDeviceError) as info:
        FileAudioDevice(record=tmp_path / "no-such-dir" / "out.wav")
    assert info.value.code == "AUDIO_FILE_UNWRITABLE"


# -- play file content --------------------------------------------------------------------


def test_play_file_is_padded_to_whole_frames(tmp_path: Path) -> None:
    samples = noise(FRAME_SAMPLES + 10)
    dev = FileAudioDevice(play=write_wav(tmp_path / "p.wav", samples))
    assert dev.play_duration == pytest.approx((FRAME_SAMPLES + 10) / 8000)
    assert not dev.play_finished.is_set()
    dev.advance()
    assert not dev.play_finished.is_set()
    dev.advance()
    assert dev.play_finished.is_set()  # set with the last frame of the file
    dev.advance()
    frames = [dev.read_frame() for _ in range(3)]
    assert dev.read_frame() is None
    got = np.concatenate([f for f in frames if f is not None])
    expected = np.zeros(3 * FRAME_SAMPLES, dtype=np.int16)
    expected[: samples.size] = samples
    np.testing.assert_array_equal(got, expected)
    dev.stop()


def test_stereo_is_downmixed_by_averaging(tmp_path: Path) -> None:
    left = np.array([100, -100, 32767, -32768, 3] * 32, dtype=np.int16)
    right = np.array([300, -101, 32767, -32768, 0] * 32, dtype=np.int16)
    interleaved = np.stack([left, right], axis=1).reshape(-1)
    dev = FileAudioDevice(play=write_wav(tmp_path / "s.wav", interleaved, channels=2))
    assert dev.play_duration == pytest.approx(160 / 8000)
    dev.advance()
    got = dev.read_frame()
    assert got is not None
    assert got[:5].tolist() == [200, -101, 32767, -32768, 1]
    dev.stop()


def test_no_play_file_captures_silence() -> None:
    dev = FileAudioDevice()
    assert dev.play_finished.is_set()
    assert dev.play_duration == 0
    dev.advance(2)
    f = dev.read_frame()
    assert f is not None
    assert f.shape == (FRAME_SAMPLES,)
    assert not f.any()
    dev.stop()


# -- tick alignment: the round-trip measurement property -----------------------------------


@pytest.mark.parametrize(("echo_delay", "prefill"), [(0, 2), (3, 2), (7, 1), (1, 4)])
def test_echo_appears_exactly_delay_plus_prefill_frames_later(
    tmp_path: Path, echo_delay: int, prefill: int
) -> None:
    n_frames = 40
    played = noise(n_frames * FRAME_SAMPLES)
    dev = FileAudioDevice(
        play=write_wav(tmp_path / "noise.wav", played),
        record=tmp_path / "rec.wav",
        realtime=False,
        prefill_frames=prefill,
        fixed_delay=True,  # a constant playout delay, so the offset is exact
    )
    line: deque[np.ndarray] = deque()
    total_ticks = n_frames + echo_delay + prefill + 5
    for _ in range(total_ticks):
        dev.advance()  # tick n: capture frame n, record whatever playback gives now
        captured = dev.read_frame()
        assert captured is not None
        line.append(captured)
        if len(line) > echo_delay:  # an echo that returns the frame echo_delay ticks later
            dev.write_frame(line.popleft())
    dev.stop()

    recorded, params = read_wav(tmp_path / "rec.wav")
    assert params == (1, 2, 8000)
    assert recorded.size == total_ticks * FRAME_SAMPLES == dev.ticks * FRAME_SAMPLES
    k = echo_delay + prefill
    expected = np.zeros_like(recorded)
    expected[k * FRAME_SAMPLES : k * FRAME_SAMPLES + played.size] = played
    np.testing.assert_array_equal(recorded, expected)
    # The same offset as a delay measurement would find it: cross-correlation peak.
    corr = np.correlate(recorded.astype(np.float64), played.astype(np.float64), mode="valid")
    assert int(np.argmax(corr)) == k * FRAME_SAMPLES
    gauges = {"playback_delay_ms": 0.0, "playback_target_ms": 0.0, "playback_jitter_ms": 0.0}
    assert dataclasses.replace(dev.stats(), **gauges) == DeviceStats(
        frames_captured=total_ticks,
        frames_played=n_frames + 5,
        capture_dropped=0,
        playback_underruns=0,
        playback_dropped=0,
        late_ticks=0,
    )


def test_free_running_clock_without_realtime(tmp_path: Path) -> None:
    n_frames = 30
    played = noise(n_frames * FRAME_SAMPLES, seed=2)
    dev = FileAudioDevice(
        play=write_wav(tmp_path / "p.wav", played), record=tmp_path / "r.wav", realtime=False
    )
    queued = [np.full(FRAME_SAMPLES, i + 1, dtype=np.int16) for i in range(10)]
    for f in queued:
        dev.write_frame(f)
    started = time.monotonic()
    with dev:
        assert dev.play_finished.wait(timeout=5)
    assert time.monotonic() - started < 5
    assert not dev.running
    ticks = dev.ticks
    assert ticks >= n_frames
    recorded, _ = read_wav(tmp_path / "r.wav")
    assert recorded.size == ticks * FRAME_SAMPLES  # exactly one frame per tick
    np.testing.assert_array_equal(recorded[: 10 * FRAME_SAMPLES], np.concatenate(queued))
    # After the last frame: at most 80 ms (4 frames) of fading concealment, then silence.
    assert not recorded[14 * FRAME_SAMPLES :].any()
    stats = dev.stats()
    assert stats.frames_captured == ticks
    assert stats.capture_dropped == max(0, ticks - 50)  # nobody read: 1 s of capture kept
    assert stats.frames_played == 10
    # Every dry pop counts until playout re-buffers (after 200 ms = 10 pops).
    assert 1 <= stats.playback_underruns <= 10


# -- real-time clock ----------------------------------------------------------------------


def test_realtime_pacing(tmp_path: Path) -> None:
    dev = FileAudioDevice(record=tmp_path / "r.wav")
    started = time.monotonic()
    dev.start()
    assert dev.running
    threading.Event().wait(0.5)
    dev.stop()
    elapsed = time.monotonic() - started
    expected = elapsed / (FRAME_SAMPLES / SAMPLE_RATE)
    assert abs(dev.ticks - expected) <= 2, (dev.ticks, expected)
    recorded, _ = read_wav(tmp_path / "r.wav")
    assert recorded.size == dev.ticks * FRAME_SAMPLES


class _TickSignallingDevice(NullAudioDevice):
    def __init__(self) -> None:
        super().__init__()
        self.ticked = threading.Event()

    def _tick(self) -> None:
        super()._tick()
        self.ticked.set()


def test_stop_interrupts_the_wait_promptly() -> None:
    dev = _TickSignallingDevice()
    dev.start()
    assert dev.ticked.wait(timeout=5)
    t0 = time.monotonic()
    dev.stop()
    assert time.monotonic() - t0 < 1.0  # well under the 2 s join timeout, even on a busy CI
    assert dev._thread is not None
    assert not dev._thread.is_alive()


class _StallingDevice(NullAudioDevice):
    """Stalls once, at its 3rd tick, for 300 ms (longer than the 200 ms resync limit)."""

    def __init__(self) -> None:
        super().__init__()
        self.stalled = threading.Event()
        self._stall = threading.Event()

    def _tick(self) -> None:
        super()._tick()
        if self.ticks == 2:
            self._stall.wait(0.3)
            self.stalled.set()


def test_clock_resyncs_instead_of_bursting_after_a_stall() -> None:
    dev = _StallingDevice()
    started = time.monotonic()
    dev.start()
    assert dev.stalled.wait(timeout=5)
    ticks_after_stall = dev.ticks
    threading.Event().wait(0.1)
    ticks_later = dev.ticks
    dev.stop()
    elapsed = time.monotonic() - started
    # ~14 ticks were skipped (counted), not replayed in a burst.
    assert 10 <= dev.late_ticks <= 20
    assert dev.stats().late_ticks == dev.late_ticks
    assert ticks_later - ticks_after_stall <= 0.1 / 0.02 + 2
    assert abs(dev.ticks + dev.late_ticks - elapsed / 0.02) <= 3


# -- lifecycle ----------------------------------------------------------------------------


def test_stop_is_idempotent_and_finalises_a_valid_wav(tmp_path: Path) -> None:
    dev = FileAudioDevice(record=tmp_path / "r.wav", realtime=False)
    dev.write_frame(np.full(FRAME_SAMPLES, 7, dtype=np.int16))
    dev.write_frame(np.full(FRAME_SAMPLES, 8, dtype=np.int16))
    dev.advance(3)
    dev.stop()
    dev.stop()
    recorded, params = read_wav(tmp_path / "r.wav")
    assert params == (1, 2, 8000)
    assert recorded[: 2 * FRAME_SAMPLES].tolist() == [7] * FRAME_SAMPLES + [8] * FRAME_SAMPLES
    # The stream then stops: the jitter buffer conceals by repeating the last frame, quieter.
    tail = recorded[2 * FRAME_SAMPLES :]
    assert tail.size == FRAME_SAMPLES
    assert 0 < tail[-1] < 8
    with pytest.raises(RuntimeError):
        dev.start()
    with pytest.raises(RuntimeError):
        dev.advance()


def test_stop_without_start_writes_an_empty_wav(tmp_path: Path) -> None:
    dev = FileAudioDevice(record=tmp_path / "r.wav")
    dev.stop()
    recorded, params = read_wav(tmp_path / "r.wav")
    assert params == (1, 2, 8000)
    assert recorded.size == 0


def test_context_manager_and_running() -> None:
    dev = NullAudioDevice()
    states = [dev.running]
    with dev as entered:
        assert entered is dev
        states.append(dev.running)
        dev.start()  # no-op while running
        states.append(dev.running)
    states.append(dev.running)
    assert states == [False, True, True, False]
    with pytest.raises(RuntimeError):
        dev.start()


def test_advance_is_refused_while_the_clock_runs() -> None:
    with NullAudioDevice() as dev, pytest.raises(RuntimeError):
        dev.advance()


def test_null_device_captures_silence_and_discards_playback() -> None:
    dev = NullAudioDevice(prefill_frames=1)
    dev.write_frame(np.full(FRAME_SAMPLES, 3, dtype=np.int16))
    dev.advance(2)
    frames = [dev.read_frame(), dev.read_frame()]
    assert all(f is not None and f.shape == (FRAME_SAMPLES,) and not f.any() for f in frames)
    assert dev.stats().frames_played == 1
    assert dev.stats().playback_underruns == 1
    dev.stop()


class _FailingDevice(NullAudioDevice):
    def __init__(self) -> None:
        super().__init__()
        self.released = threading.Event()

    def _tick(self) -> None:
        raise OSError("sound card on fire")

    def _release(self) -> None:
        self.released.set()


def test_a_failing_device_thread_reports_an_error() -> None:
    dev = _FailingDevice()
    dev.start()
    assert dev.released.wait(timeout=5)
    assert not dev.running
    assert dev.error is not None
    assert dev.error.code == "AUDIO_DEVICE_FAILED"
    assert "sound card on fire" in dev.error.message
    dev.stop()


def test_audio_device_is_abstract() -> None:
    with pytest.raises(TypeError):
        AudioDevice()  # type: ignore[abstract]
