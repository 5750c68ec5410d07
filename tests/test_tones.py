"""DTMF, call-progress sounds and the SoundMixer (mixing, loop, stop, replace, threads)."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest

from softphone.media import tones
from softphone.media.tones import (
    DTMF_DIGITS,
    DTMF_FREQUENCIES,
    Sound,
    SoundMixer,
    busy_tone,
    dtmf_sequence,
    dtmf_sound,
    dtmf_tone,
    ringback,
    ringtone,
)

RATE = 8000
ALL_DTMF = sorted({f for pair in DTMF_FREQUENCIES.values() for f in pair})


def goertzel_amplitude(x: np.ndarray, freq: float, rate: int = RATE) -> float:
    """Peak amplitude of the ``freq`` component of ``x`` (Hann-windowed DFT bin at ``freq``)."""
    n = x.size
    w = np.hanning(n)
    t = np.arange(n) / rate
    z = np.dot(x.astype(np.float64) * w, np.exp(-2j * np.pi * freq * t))
    return float(2 * abs(z) / w.sum())


def active_spans(x: np.ndarray, block: int = 40) -> list[tuple[int, int]]:
    """(start, end) sample spans where 5 ms blocks carry signal."""
    blocks = np.abs(x[: x.size // block * block].reshape(-1, block)).max(axis=1) > 0
    spans: list[tuple[int, int]] = []
    start = None
    for i, on in enumerate(blocks):
        if on and start is None:
            start = i
        elif not on and start is not None:
            spans.append((start * block, i * block))
            start = None
    if start is not None:
        spans.append((start * block, blocks.size * block))
    return spans


# -- DTMF -----------------------------------------------------------------------------------


@pytest.mark.parametrize("digit", list(DTMF_DIGITS))
def test_dtmf_digit_has_exactly_its_two_frequencies(digit: str) -> None:
    x = dtmf_tone(digit)
    assert x.dtype == np.int16
    assert x.size == 160 * RATE // 1000
    row, col = DTMF_FREQUENCIES[digit]
    expected = 32767 * 10 ** (-10 / 20)  # each tone at -10 dBFS
    for f in ALL_DTMF:
        amp = goertzel_amplitude(x, f)
        if f in (row, col):
            # The 5 ms ramps take a little energy off the 160 ms burst.
            assert amp == pytest.approx(expected, rel=0.06), (digit, f)
        else:
            assert amp < expected * 10 ** (-30 / 20), (digit, f, amp)


def test_dtmf_keypad_pairs_follow_q23() -> None:
    assert DTMF_FREQUENCIES["1"] == (697, 1209)
    assert DTMF_FREQUENCIES["5"] == (770, 1336)
    assert DTMF_FREQUENCIES["9"] == (852, 1477)
    assert DTMF_FREQUENCIES["0"] == (941, 1336)
    assert DTMF_FREQUENCIES["*"] == (941, 1209)
    assert DTMF_FREQUENCIES["#"] == (941, 1477)
    assert [DTMF_FREQUENCIES[k] for k in "ABCD"] == [
        (697, 1633),
        (770, 1633),
        (852, 1633),
        (941, 1633),
    ]


def test_dtmf_tone_duration_level_and_ramps() -> None:
    x = dtmf_tone("5", duration_ms=50, level_dbfs=-20)
    assert x.size == 400
    assert np.abs(x).max() <= 2 * 32767 * 10 ** (-20 / 20) + 1
    # Raised-cosine ramps: starts and ends near zero, no step.
    assert abs(int(x[0])) < 100
    assert abs(int(x[-1])) < 100
    peak = np.abs(x).max()
    assert np.abs(x[:8]).max() < 0.25 * peak  # first 1 ms still low: it fades in
    assert np.abs(x[-8:]).max() < 0.25 * peak
    assert dtmf_tone("5", rate=16000).size == 2560


def test_dtmf_lowercase_letters_are_accepted() -> None:
    np.testing.assert_array_equal(dtmf_tone("a"), dtmf_tone("A"))


@pytest.mark.parametrize("bad", ["E", "x", "", "12", " ", "w"])
def test_dtmf_tone_rejects_invalid_digits(bad: str) -> None:
    with pytest.raises(ValueError, match="DTMF digit"):
        dtmf_tone(bad)


def test_dtmf_tone_rejects_clipping_level_and_bad_duration() -> None:
    with pytest.raises(ValueError, match="clip"):
        dtmf_tone("1", level_dbfs=-3)
    with pytest.raises(ValueError, match="positive"):
        dtmf_tone("1", duration_ms=0)


def test_dtmf_sequence_timing_with_pause() -> None:
    x = dtmf_sequence("1w2")
    tone, gap, pause = 1280, 560, 4000
    assert x.size == 2 * (tone + gap) + pause
    spans = active_spans(x)
    assert spans == [(0, tone), (tone + gap + pause, 2 * tone + gap + pause)]
    np.testing.assert_array_equal(x[:tone], dtmf_tone("1"))
    np.testing.assert_array_equal(x[tone + gap + pause : 2 * tone + gap + pause], dtmf_tone("2"))


def test_dtmf_sequence_custom_timing_and_uppercase_w() -> None:
    x = dtmf_sequence("#W*", tone_ms=50, gap_ms=45, pause_ms=200)
    assert x.size == 2 * (400 + 360) + 1600
    starts = [s for s, _ in active_spans(x)]
    assert starts == [0, 400 + 360 + 1600]
    assert dtmf_sequence("").size == 0
    assert dtmf_sequence("ww", pause_ms=500).size == 8000


def test_dtmf_sequence_error_names_character_and_position() -> None:
    with pytest.raises(ValueError, match=r"'x' at position 2.*'w' for a pause"):
        dtmf_sequence("12x4")


def test_dtmf_sound_is_a_one_shot_sound() -> None:
    s = dtmf_sound("12")
    assert s.name == "dtmf"
    assert not s.loop
    np.testing.assert_array_equal(s.samples, dtmf_sequence("12"))
    with pytest.raises(ValueError, match="at least one"):
        dtmf_sound("")


# -- call-progress sounds -------------------------------------------------------------------


def check_cadence(sound: Sound, on_s: float, off_s: float) -> None:
    assert sound.loop
    assert sound.samples.size == round((on_s + off_s) * RATE)
    spans = active_spans(sound.samples)
    assert spans == [(0, round(on_s * RATE))]


def test_ringback_cadence_and_frequencies() -> None:
    s = ringback()
    check_cadence(s, 2.0, 4.0)
    on = s.samples[: 2 * RATE]
    expected = 32767 * 10 ** (-19 / 20)
    for f in (440, 480):
        assert goertzel_amplitude(on, f) == pytest.approx(expected, rel=0.03)
    for f in (350, 620, 1000):
        assert goertzel_amplitude(on, f) < expected / 100


def test_busy_tone_cadence_and_frequencies() -> None:
    s = busy_tone()
    check_cadence(s, 0.5, 0.5)
    on = s.samples[: RATE // 2]
    expected = 32767 * 10 ** (-24 / 20)
    for f in (480, 620):
        assert goertzel_amplitude(on, f) == pytest.approx(expected, rel=0.05)
    assert goertzel_amplitude(on, 440) < expected / 30


def test_ringtone_is_a_warble_distinct_from_ringback() -> None:
    s = ringtone()
    check_cadence(s, 1.0, 2.0)
    on = s.samples[:RATE]
    expected = 32767 * 10 ** (-14 / 20)
    # 50 ms segments alternate between the two frequencies, none near ringback's.
    for k in range(1, 19):
        seg = on[k * 400 : (k + 1) * 400]
        f, other = (1000, 1250) if k % 2 == 0 else (1250, 1000)
        assert goertzel_amplitude(seg, f) == pytest.approx(expected, rel=0.05), k
        assert goertzel_amplitude(seg, other) < expected / 10
        assert goertzel_amplitude(seg, 440) < expected / 50
    # Phase-continuous switching: no sample-to-sample jump bigger than a sine's slope.
    step = np.abs(np.diff(on.astype(int))).max()
    assert step <= 2 * math.pi * 1250 / RATE * np.abs(on).max() * 1.05


def test_test_tone() -> None:
    s = tones.test_tone()
    assert s.name == "test_tone"
    assert not s.loop
    assert s.samples.size == 2 * RATE
    assert s.duration_s == 2.0
    assert goertzel_amplitude(s.samples, 1000) == pytest.approx(32767 * 10 ** (-12 / 20), rel=0.02)
    short = tones.test_tone(seconds=0.5, freq=440, level_dbfs=-6)
    assert short.samples.size == 4000
    assert goertzel_amplitude(short.samples, 440) == pytest.approx(32767 / 2, rel=0.05)
    with pytest.raises(ValueError, match="freq"):
        tones.test_tone(freq=5000)


def test_sound_copies_samples_read_only_and_validates() -> None:
    raw = np.arange(10, dtype=np.int16)
    s = Sound("x", raw)
    raw[0] = 99
    assert s.samples[0] == 0
    with pytest.raises(ValueError, match="read-only"):
        s.samples[0] = 1
    with pytest.raises(ValueError, match="int16"):
        Sound("x", np.zeros(10, dtype=np.float32))
    with pytest.raises(ValueError, match="non-empty"):
        Sound("x", np.zeros(0, dtype=np.int16))
    with pytest.raises(ValueError, match="name"):
        Sound("", raw)


# -- SoundMixer -----------------------------------------------------------------------------


def const_sound(name: str, value: int, n: int, loop: bool = False) -> Sound:
    return Sound(name, np.full(n, value, dtype=np.int16), loop=loop)


def frame_of(value: int) -> np.ndarray:
    return np.full(160, value, dtype=np.int16)


def test_mix_without_sounds_returns_the_frame_itself() -> None:
    m = SoundMixer()
    f = frame_of(7)
    assert m.mix(f) is f
    assert m.playing == set()


def test_mix_adds_and_does_not_modify_the_input() -> None:
    m = SoundMixer()
    m.play(const_sound("a", 1000, 1000))
    f = frame_of(100)
    out = m.mix(f)
    assert out.dtype == np.int16
    assert (out == 1100).all()
    assert (f == 100).all()
    m.play(const_sound("b", -300, 1000))
    assert (m.mix(f) == 800).all()
    assert m.playing == {"a", "b"}


def test_mix_saturates() -> None:
    m = SoundMixer()
    m.play(const_sound("up", 10000, 1000))
    assert (m.mix(frame_of(30000)) == 32767).all()
    m.stop_all()
    m.mix(frame_of(0))
    m.play(const_sound("down", -10000, 1000))
    assert (m.mix(frame_of(-30000)) == -32768).all()


def test_one_shot_sound_plays_to_its_end_and_removes_itself() -> None:
    m = SoundMixer()
    s = Sound("blip", np.arange(1, 401, dtype=np.int16))
    m.play(s)
    zero = frame_of(0)
    out = np.concatenate([m.mix(zero).copy() for _ in range(3)])
    np.testing.assert_array_equal(out[:400], s.samples)
    assert (out[400:] == 0).all()
    assert m.playing == set()
    assert m.mix(zero) is zero


def test_looping_sound_wraps_inside_a_frame() -> None:
    m = SoundMixer()
    s = Sound("loop", np.arange(250, dtype=np.int16), loop=True)
    m.play(s)
    zero = frame_of(0)
    out = np.concatenate([m.mix(zero).copy() for _ in range(5)])
    np.testing.assert_array_equal(out, np.tile(s.samples, 4)[:800])
    assert m.playing == {"loop"}


def test_stop_fades_out_within_one_frame_then_silence() -> None:
    m = SoundMixer()
    m.play(const_sound("tone", 1000, 8000, loop=True))
    zero = frame_of(0)
    m.mix(zero)
    m.stop("tone")
    assert m.playing == set()
    out = m.mix(zero)
    assert 900 < out[0] <= 1000  # the fade starts at (almost) full level
    assert (np.diff(out[:40].astype(int)) <= 0).all()  # and decreases
    assert (out[40:] == 0).all()  # 5 ms later it is gone
    assert m.mix(zero) is zero
    m.stop("not-playing")  # no-op


def test_play_replaces_a_sound_with_the_same_name() -> None:
    m = SoundMixer()
    zero = frame_of(0)
    m.play(const_sound("ring", 1000, 8000, loop=True))
    m.mix(zero)
    m.play(const_sound("ring", 2000, 8000, loop=True))
    assert m.playing == {"ring"}
    out = m.mix(zero)
    assert (out[40:] == 2000).all()  # the old one faded out in the first 5 ms
    assert (m.mix(zero) == 2000).all()


def test_replaying_restarts_from_the_beginning() -> None:
    m = SoundMixer()
    s = Sound("seq", np.arange(1000, dtype=np.int16))
    zero = frame_of(0)
    m.play(s)
    m.mix(zero)
    m.mix(zero)
    m.play(s)
    out = m.mix(zero)
    np.testing.assert_array_equal(out[40:], s.samples[40:160])


def test_disabled_mixer_plays_nothing_and_stops_sounds() -> None:
    m = SoundMixer()
    zero = frame_of(0)
    m.play(ringback())
    m.mix(zero)
    m.enabled = False
    assert m.playing == set()
    m.mix(zero)  # fade-out frame
    assert m.mix(zero) is zero
    m.play(busy_tone())
    assert m.playing == set()
    assert m.mix(zero) is zero
    m.enabled = True
    m.play(const_sound("x", 5, 1000))
    assert (m.mix(zero) == 5).all()


def test_mix_rejects_wrong_frame_size() -> None:
    m = SoundMixer()
    m.play(const_sound("x", 5, 1000))
    with pytest.raises(ValueError, match="160"):
        m.mix(np.zeros(80, dtype=np.int16))
    with pytest.raises(TypeError):
        m.play("ringback")  # type: ignore[arg-type]


def test_mixer_thread_safety_smoke() -> None:
    m = SoundMixer()
    sounds = [ringback(), busy_tone(), ringtone(), const_sound("short", 3, 100)]
    stop = threading.Event()
    errors: list[BaseException] = []
    mixed = 0

    def device() -> None:
        nonlocal mixed
        rng = np.random.default_rng(1)
        try:
            while not stop.is_set():
                f = rng.integers(-20000, 20000, 160).astype(np.int16)
                out = m.mix(f)
                assert out.shape == (160,)
                assert out.dtype == np.int16
                mixed += 1
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=device)
    t.start()
    deadline = time.monotonic() + 0.3
    i = 0
    while time.monotonic() < deadline:
        s = sounds[i % len(sounds)]
        m.play(s)
        if i % 3 == 0:
            m.stop(sounds[(i + 1) % len(sounds)].name)
        if i % 7 == 0:
            m.enabled = i % 2 == 0
        if i % 11 == 0:
            m.stop_all()
        i += 1
        time.sleep(0)
    stop.set()
    t.join(5)
    assert not errors
    assert mixed > 100
    m.enabled = True
    m.stop_all()
    zero = frame_of(0)
    m.mix(zero)
    assert m.mix(zero) is zero
    assert m.playing == set()
