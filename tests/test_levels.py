"""Level mapping, meter ballistics, the level slot, flat-input and speaking-while-muted."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from softphone.media.levels import (
    FlatInputDetector,
    LevelMeter,
    LevelSlot,
    SpeakingWhileMuted,
    dbfs_to_level,
    frame_level,
    level_to_dbfs,
)

RATE = 8000
FRAME = 160


def sine(level_dbfs_peak: float, freq: float = 1000.0, n: int = FRAME) -> np.ndarray:
    amp = 32767 * 10 ** (level_dbfs_peak / 20)
    return np.rint(amp * np.sin(2 * np.pi * freq * np.arange(n) / RATE)).astype(np.int16)


def noise_at(rms_dbfs: float, n: int, rng: np.random.Generator) -> np.ndarray:
    x = rng.standard_normal(n) * 32768 * 10 ** (rms_dbfs / 20)
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


# -- frame_level ----------------------------------------------------------------------------


def test_silence_is_zero() -> None:
    assert frame_level(np.zeros(FRAME, dtype=np.int16)) == 0.0
    assert frame_level(np.zeros(0, dtype=np.int16)) == 0.0


def test_minus_60_dbfs_is_zero_and_below_clamps() -> None:
    rng = np.random.default_rng(0)
    assert frame_level(noise_at(-60, 8000, rng)) == pytest.approx(0.0, abs=0.005)
    assert frame_level(noise_at(-75, 8000, rng)) == 0.0
    assert frame_level(np.ones(FRAME, dtype=np.int16)) == 0.0  # -90 dBFS


def test_full_scale_sine_is_0_95() -> None:
    # RMS of a full-scale sine is -3.01 dBFS: (60 - 3.01) / 60.
    assert frame_level(sine(0.0)) == pytest.approx(0.9498, abs=0.002)


def test_full_scale_square_is_one() -> None:
    square = np.where(np.arange(FRAME) % 20 < 10, 32767, -32768).astype(np.int16)
    assert frame_level(square) == pytest.approx(1.0, abs=1e-4)


def test_mapping_is_linear_in_db() -> None:
    # A -30 dBFS (peak) sine: RMS -33.01 dBFS -> 0.45; each -6 dB is -0.1.
    assert frame_level(sine(-30.0)) == pytest.approx(0.44985, abs=0.002)
    assert frame_level(sine(-36.0)) == pytest.approx(0.34985, abs=0.002)
    assert dbfs_to_level(-60) == 0.0
    assert dbfs_to_level(-30) == 0.5
    assert dbfs_to_level(0) == 1.0
    assert dbfs_to_level(6) == 1.0
    assert level_to_dbfs(0.25) == -45.0
    for db in (-59.0, -33.3, -1.0):
        assert level_to_dbfs(dbfs_to_level(db)) == pytest.approx(db)


def test_frame_level_is_fast() -> None:
    f = noise_at(-20, FRAME, np.random.default_rng(1))
    frame_level(f)
    n = 2000
    start = time.perf_counter()
    for _ in range(n):
        frame_level(f)
    per_call = (time.perf_counter() - start) / n
    assert per_call < 50e-6  # ~3 µs here; generous for loaded CI machines


# -- LevelMeter -----------------------------------------------------------------------------


def test_meter_fast_attack_slow_release() -> None:
    m = LevelMeter()
    assert m.feed(0.8) == pytest.approx(0.8 * (1 - np.exp(-2)), rel=1e-9)  # 86 % in 20 ms
    top = m.feed(0.8)
    assert top > 0.78  # 98 % after 40 ms
    after_one = m.feed(0.0)
    assert after_one > 0.73  # release: ~1/15 of the way per frame
    for _ in range(14):
        m.feed(0.0)
    # 300 ms after the drop: 1/e of the height.
    assert m.value == pytest.approx(top * np.exp(-1), rel=1e-9)
    m.reset()
    assert m.value == 0.0


def test_meter_update_takes_frames() -> None:
    m = LevelMeter(attack_ms=1, release_ms=1)  # effectively instantaneous
    assert m.update(sine(0.0)) == pytest.approx(frame_level(sine(0.0)), abs=1e-6)
    with pytest.raises(ValueError, match="positive"):
        LevelMeter(attack_ms=0)


# -- LevelSlot ------------------------------------------------------------------------------


def test_slot_read_gives_latest_levels() -> None:
    slot = LevelSlot()
    assert slot.read() == (0.0, 0.0)
    slot.write_input(0.3)
    slot.write_output(0.6)
    slot.write_input(0.4)
    assert slot.read() == (0.4, 0.6)
    assert slot.writes == 3


def test_slot_peak_catches_a_short_peak_between_polls() -> None:
    slot = LevelSlot()
    for level in (0.2, 0.9, 0.3):  # a 20 ms peak inside a 50 ms poll interval
        slot.write_input(level)
    slot.write_output(0.5)
    assert slot.read() == (0.3, 0.5)
    assert slot.peak_since_last_read() == (0.9, 0.5)
    # Nothing written since: the latest values, not the old peak.
    assert slot.peak_since_last_read() == (0.3, 0.5)
    slot.write_output(0.1)
    slot.write_output(0.2)
    assert slot.peak_since_last_read() == (0.3, 0.2)
    slot.reset()
    assert slot.read() == (0.0, 0.0)
    assert slot.peak_since_last_read() == (0.0, 0.0)


def test_slot_concurrent_writer_and_poller_never_lose_the_peak() -> None:
    slot = LevelSlot()
    stop = threading.Event()
    seen: list[float] = []

    def poller() -> None:
        while not stop.is_set():
            seen.append(slot.peak_since_last_read()[0])
            time.sleep(0.0005)

    t = threading.Thread(target=poller)
    t.start()
    for i in range(20000):
        slot.write_input(1.0 if i == 10000 else 0.1)
    stop.set()
    t.join(5)
    seen.append(slot.peak_since_last_read()[0])
    assert max(seen) == 1.0  # the single peak frame was reported exactly once
    assert seen.count(1.0) == 1


# -- FlatInputDetector ----------------------------------------------------------------------


def feed_frames(det: FlatInputDetector, levels: list[float], t0: float = 0.0) -> list[bool]:
    return [det.update(level, t0 + i * 0.02) for i, level in enumerate(levels)]


def test_constant_noise_for_ten_seconds_is_flat() -> None:
    rng = np.random.default_rng(2)
    x = noise_at(-50, 11 * RATE, rng)  # a stuck/dead mic: steady hiss
    levels = [frame_level(x[i : i + FRAME]) for i in range(0, x.size, FRAME)]
    det = FlatInputDetector()
    flags = feed_frames(det, levels)
    first = flags.index(True)
    assert first * 0.02 == pytest.approx(10.0, abs=0.03)
    assert all(flags[first:])
    assert det.std < 0.02


def test_digital_silence_is_flat() -> None:
    det = FlatInputDetector()
    flags = feed_frames(det, [0.0] * 600)
    assert flags[-1]


def test_speech_like_levels_are_not_flat() -> None:
    rng = np.random.default_rng(3)
    n = 20 * RATE
    t = np.arange(n) / RATE
    envelope = np.clip(np.sin(2 * np.pi * 2.1 * t) ** 2 * 1.3 - 0.1, 0, 1)
    x = noise_at(-20, n, rng).astype(float) * envelope + noise_at(-55, n, rng)
    x = np.clip(x, -32768, 32767).astype(np.int16)
    levels = [frame_level(x[i : i + FRAME]) for i in range(0, n, FRAME)]
    det = FlatInputDetector()
    assert not any(feed_frames(det, levels))
    assert det.std > 0.1


def test_a_quiet_but_live_room_is_not_flat() -> None:
    rng = np.random.default_rng(4)
    # Background noise whose level drifts by a few dB (people, traffic).
    levels = list(0.25 + 0.05 * np.sin(np.arange(600) / 40) + rng.normal(0, 0.01, 600))
    assert not any(feed_frames(FlatInputDetector(), levels))


def test_flat_detector_is_cleared_by_mute_and_by_gaps() -> None:
    det = FlatInputDetector()
    assert feed_frames(det, [0.3] * 520)[-1]
    assert det.update(0.3, 10.42, muted=True) is False
    assert not det.flat
    assert not feed_frames(det, [0.3] * 400, t0=10.44)[-1]  # 8 s since unmute
    # A 5 s hole in the feed (device stopped) starts over too.
    assert det.update(0.3, 30.0) is False
    assert not feed_frames(det, [0.3] * 100, t0=30.02)[-1]


def test_flat_detector_works_with_50ms_polls() -> None:
    det = FlatInputDetector()
    flags = [det.update(0.4, i * 0.05) for i in range(220)]
    assert flags.index(True) == 200  # 10.0 s


# -- SpeakingWhileMuted ---------------------------------------------------------------------


def feed_muted(det: SpeakingWhileMuted, levels: list[float], t0: float = 0.0) -> list[bool]:
    return [det.update(level, t0 + i * 0.02) for i, level in enumerate(levels)]


def test_quiet_room_is_not_speaking() -> None:
    det = SpeakingWhileMuted()
    assert not any(feed_muted(det, [0.15, 0.18, 0.12] * 100))


def test_speech_after_300ms_is_detected() -> None:
    det = SpeakingWhileMuted()
    levels = [0.15] * 25 + [0.6] * 25
    flags = feed_muted(det, levels)
    first = flags.index(True)
    assert first - 25 == 14  # the 15th active frame: 300 ms of speech
    assert det.active_s == pytest.approx(0.5, abs=0.03)


def test_cough_is_not_speech() -> None:
    det = SpeakingWhileMuted()
    levels = [0.15] * 25 + [0.8] * 10 + [0.15] * 50  # 200 ms burst
    assert not any(feed_muted(det, levels))


def test_syllables_with_gaps_add_up() -> None:
    det = SpeakingWhileMuted()
    syllable = [0.6] * 6 + [0.2] * 4  # 120 ms voiced, 80 ms between syllables
    flags = feed_muted(det, [0.15] * 10 + syllable * 5)
    assert any(flags)


def test_loud_steady_background_is_not_speech_but_speech_over_it_is() -> None:
    det = SpeakingWhileMuted()
    assert not any(feed_muted(det, [0.5] * 200))  # a fan at -30 dBFS
    assert det.noise_floor == pytest.approx(0.5)
    speech_over_fan = ([0.75] * 6 + [0.5] * 4) * 10
    assert any(feed_muted(det, speech_over_fan, t0=4.0))


def test_speaking_clears_after_a_second_of_silence_and_reset() -> None:
    det = SpeakingWhileMuted()
    flags = feed_muted(det, [0.15] * 10 + [0.6] * 30 + [0.15] * 60)
    assert flags[39]
    assert not flags[-1]
    feed_muted(det, [0.15] * 5 + [0.6] * 30, t0=5.0)
    assert det.speaking
    det.reset()
    assert det.active_s == 0.0
    assert det.noise_floor is None
    assert det.update(0.6, 9.0) is False  # starts over: one frame is not speech
    with pytest.raises(ValueError, match="min_active_s"):
        SpeakingWhileMuted(min_active_s=2.0, window_s=1.0)
