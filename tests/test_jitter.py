"""JitterBuffer: adaptive delay, reordering, loss concealment, catch-up, counters, threads.

Everything runs on an injected clock and a simulated network: the sender emits frame ``k``
at ``k * 20 ms``; the network delivers it at a chosen time (or never); the device pops one
frame every 20 ms at ``tick * 20 ms + phase``. Arrivals due before a tick are pushed (in
arrival order, the clock set to each arrival time), then the delay is sampled, then the
tick pops. No sleeps; one test uses real threads.

Baseline for comparison (shared/notes/reference-figures.md): aiortc's jitter buffer is a
fixed 4-frame (80 ms) prefetch without concealment; one lost packet stalls playout 280 ms
and the delay stays at 280 ms for the rest of the call.
"""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from softphone.media.jitter import CONCEAL_GAINS, JitterBuffer, JitterStats

FRAME = 160
TICK = 0.020


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def frame(n: int) -> np.ndarray:
    """A loud, recognisable frame: every sample is ``2000 + n`` (identified by its last sample)."""
    return np.full(FRAME, 2000 + n, dtype=np.int16)


def ident(out: np.ndarray) -> int:
    return int(out[-1]) - 2000


def tone(n: int) -> np.ndarray:
    """Frame ``n`` of a continuous sine at -12 dBFS."""
    t = (np.arange(FRAME) + FRAME * n) / 8000  # 441.3 Hz: no two of the first 500 frames equal
    return np.round(8000 * np.sin(2 * np.pi * 441.3 * t)).astype(np.int16)


@dataclass
class Tick:
    t: float
    delay_ms: float  # current_delay_ms just before the pop
    target_ms: float
    played: bool  # the pop returned a real frame
    out: np.ndarray  # a copy of what the pop returned


def simulate(
    jb: JitterBuffer,
    clock: FakeClock,
    arrivals: list[tuple[float, int]],
    ticks: int,
    *,
    phase: float = 0.010,
    first_tick: int = 0,
    make: Callable[[int], np.ndarray] = frame,
    seq_offset: int = 0,
) -> list[Tick]:
    """Deliver ``(time, k)`` arrivals (frame ``k`` with sequence ``k + seq_offset``) and pop."""
    pending = sorted(arrivals)
    i = 0
    rows = []
    for j in range(first_tick, first_tick + ticks):
        now = j * TICK + phase
        while i < len(pending) and pending[i][0] <= now:
            at, k = pending[i]
            clock.t = at
            seq = k + seq_offset
            jb.push(make(k), seq & 0xFFFF, (seq * FRAME) & 0xFFFFFFFF)
            i += 1
        clock.t = now
        delay = jb.current_delay_ms
        played = jb.played
        out = jb.pop()
        assert out.shape == (FRAME,)
        assert out.dtype == np.int16
        rows.append(Tick(now, delay, jb.target_delay_ms, jb.played > played, out.copy()))
    return rows


def steady(
    frames: range, *, skip: set[int] | frozenset[int] = frozenset(), delay: float = 0.001
) -> list[tuple[float, int]]:
    """Frame k arrives at k * 20 ms + delay, except the ones in ``skip`` (lost)."""
    return [(k * TICK + delay, k) for k in frames if k not in skip]


def check_invariants(jb: JitterBuffer, pops: int | None = None) -> JitterStats:
    s = jb.stats()
    assert s.pushed == s.played + s.dropped + s.late + s.duplicates + s.flushed + s.depth
    if pops is not None:
        assert pops == s.played + s.concealed + s.idle
    assert s.underruns >= 0
    assert s.inserted >= 0
    assert s.underruns + s.inserted <= s.concealed
    assert s.lost >= 0
    assert jb.min_delay_ms <= s.target_delay_ms <= jb.max_delay_ms
    assert s.current_delay_ms <= max(jb.max_delay_ms, jb.frame_ms)
    return s


def new(**kwargs: float) -> tuple[JitterBuffer, FakeClock]:
    clock = FakeClock()
    return JitterBuffer(clock=clock, **kwargs), clock  # type: ignore[arg-type]


# -- start-up, steady stream -----------------------------------------------------------


def test_silence_before_prefill_counts_nothing_then_starts_at_start_delay() -> None:
    jb, _clock = new()
    silent = jb.pop()
    assert not silent.any()
    assert not silent.flags.writeable
    jb.push(frame(0), 0)
    assert not jb.pop().any()  # 20 ms buffered < start delay 40 ms
    assert not jb.playing
    jb.push(frame(1), 1)
    assert jb.current_delay_ms == 40
    assert ident(jb.pop()) == 0
    assert bool(jb.playing)  # bool(): mypy narrowed the property to False above
    s = check_invariants(jb, pops=3)
    assert (s.idle, s.underruns, s.concealed, s.played) == (2, 0, 0, 1)


def test_steady_stream_settles_at_the_floor_and_plays_everything_in_order() -> None:
    jb, clock = new()
    rows = simulate(jb, clock, steady(range(500)), 500)
    s = check_invariants(jb, pops=500)
    assert (s.underruns, s.concealed, s.lost, s.late) == (0, 0, 0, 0)
    assert s.dropped <= 1  # the start delay (40 ms) is one frame above the floor
    assert all(r.delay_ms == 20 and r.target_ms == 20 for r in rows[100:])
    played = [ident(r.out) for r in rows if r.played]
    assert played == sorted(played)
    assert len(played) == len(set(played))
    assert s.jitter_ms < 0.01


def test_frames_without_numbering_play_in_push_order() -> None:
    jb, clock = new(start_delay_ms=20)
    out = []
    for k in range(50):
        clock.t = k * TICK
        jb.push(frame(k))
        out.append(ident(jb.pop()))
    assert out == list(range(50))
    assert jb.stats().target_delay_ms == 20


# -- reordering, duplicates, wrap-around -------------------------------------------------


def test_reordering_within_the_buffer_window_is_fixed() -> None:
    """Frames swapped in pairs (k+1 arrives 15 ms before k) still play in sequence order."""
    jb, clock = new()
    arrivals = [(k * TICK + (0.021 if k % 2 == 0 else 0.001), k) for k in range(300)]
    rows = simulate(jb, clock, arrivals, 300, phase=0.015)
    played = [ident(r.out) for r in rows if r.played]
    s = check_invariants(jb, pops=300)
    assert (s.lost, s.late, s.underruns) == (0, 0, 0)
    assert played == sorted(played)
    assert len(played) == len(set(played))
    assert s.played + s.dropped + s.depth == 300


def test_duplicates_are_counted_and_never_played_twice() -> None:
    jb, clock = new()
    arrivals = steady(range(200))
    arrivals += [(t + 0.005, k) for t, k in arrivals]  # every frame twice, 5 ms apart
    arrivals += [(k * TICK + 0.5, k) for k in range(100)]  # and again long after playing
    rows = simulate(jb, clock, arrivals, 200)
    played = [ident(r.out) for r in rows if r.played]
    s = check_invariants(jb, pops=200)
    assert s.duplicates == 300
    assert (s.late, s.lost) == (0, 0)
    assert len(played) == len(set(played))


def test_sequence_and_timestamp_wrap_around() -> None:
    jb, clock = new()
    offset = 65536 - 100  # sequence numbers 65436 .. 65535, 0 .. 199
    rows = simulate(jb, clock, steady(range(300)), 300, seq_offset=offset)
    played = [ident(r.out) for r in rows if r.played]
    s = check_invariants(jb, pops=300)
    assert (s.lost, s.late, s.duplicates, s.underruns) == (0, 0, 0, 0)
    assert s.dropped <= 1
    assert played == sorted(played)
    assert played[-1] == 299
    assert {99, 100, 101} <= set(played)  # across 65535 -> 0
    assert s.jitter_ms < 0.01  # the timestamps unwrapped too (2**32 - 16000 + ...)


def test_timestamps_wrap_at_32_bits() -> None:
    jb, clock = new()
    base = (1 << 32) - 160 * 5
    for k in range(20):
        clock.t = k * TICK
        jb.push(frame(k), k, (base + 160 * k) & 0xFFFFFFFF)
        jb.pop()
    assert jb.jitter_ms < 0.01


# -- loss, concealment, late frames -------------------------------------------------------


def test_a_lost_frame_is_concealed_by_a_faded_repeat_and_counted_once() -> None:
    jb, clock = new()
    rows = simulate(jb, clock, steady(range(300), skip={200}), 300, make=tone)
    s = check_invariants(jb, pops=300)
    assert (s.lost, s.concealed, s.late) == (1, 1, 0)
    i = next(i for i, r in enumerate(rows) if not r.played and i > 10)
    last_good, concealed, after = rows[i - 1].out, rows[i].out, rows[i + 1].out
    assert np.array_equal(last_good, tone(199))
    # x0.7 repeat of the last good frame after a 4 ms (32 samples) crossfade ...
    expected = np.round(0.7 * tone(199).astype(np.float64))
    assert np.abs(concealed[32:] - expected[32:]).max() <= 1
    # ... which starts from the last sample played (no step), and fades in the next frame.
    assert abs(int(concealed[0]) - int(last_good[-1])) < 1500
    assert np.array_equal(after[32:], tone(201)[32:])
    assert abs(int(after[0]) - int(concealed[-1])) < 1500
    # The delay is back at the floor right away.
    assert all(r.delay_ms == 20 for r in rows[i + 2 :])


def test_a_long_loss_fades_out_then_plays_silence() -> None:
    jb, clock = new(min_delay_ms=40)
    lost = set(range(100, 107))
    rows = simulate(jb, clock, steady(range(200), skip=lost), 200, make=tone)
    s = check_invariants(jb, pops=200)
    assert (s.lost, s.concealed) == (7, 7)
    start = next(i for i, r in enumerate(rows) if not r.played and i > 10)
    run = [rows[start + j].out for j in range(7)]
    peaks = [int(np.abs(o[32:].astype(np.int32)).max()) for o in run]
    assert peaks[0] == pytest.approx(0.7 * 8000, rel=0.02)
    assert peaks[0] >= peaks[1] > peaks[2] > peaks[3]  # fading ...
    assert int(run[3][-1]) == 0  # ... to zero at the end of 80 ms of concealment
    assert len(CONCEAL_GAINS) == 4
    for o in run[4:]:
        assert not o.any()  # silence from then on
    assert rows[start + 7].played


def test_a_frame_arriving_after_its_slot_is_late_not_lost() -> None:
    """Frame 100 arrives 100 ms late: its slot is concealed, it is counted late (not lost)."""
    jb, clock = new(min_delay_ms=40)
    arrivals = [(k * TICK + (0.1 if k == 100 else 0.0) + 0.001, k) for k in range(200)]
    rows = simulate(jb, clock, arrivals, 200)
    s = check_invariants(jb, pops=200)
    assert (s.late, s.lost, s.concealed) == (1, 0, 1)
    assert 100 not in {ident(r.out) for r in rows if r.played}


def test_lost_then_late_then_duplicate_of_the_late_one() -> None:
    jb, clock = new(min_delay_ms=40)
    arrivals = [(k * TICK + 0.001, k) for k in range(100) if k != 50]
    arrivals += [(60 * TICK, 50), (61 * TICK, 50)]
    simulate(jb, clock, arrivals, 100)
    s = check_invariants(jb, pops=100)
    assert (s.late, s.lost, s.duplicates) == (1, 0, 1)


def test_a_lost_frame_does_not_raise_the_delay() -> None:
    """One frame in 50 lost for 20 s: the delay stays at the floor, every loss concealed once.

    aiortc (fixed 4-frame prefetch, no PLC) stalls 280 ms on a loss and keeps that delay for
    the rest of the call; here each loss costs one concealed frame and no delay at all.
    """
    jb, clock = new()
    lost = set(range(100, 1000, 50))
    rows = simulate(jb, clock, steady(range(1000), skip=lost), 1000, make=tone)
    s = check_invariants(jb, pops=1000)
    assert s.lost == len(lost) == s.concealed
    assert all(r.delay_ms <= 40 for r in rows)
    # 40 ms only at the tick after each loss (the gap counts until the slot is skipped).
    assert sum(r.delay_ms > 20 for r in rows[150:]) == len(lost) - 1
    assert rows[-1].delay_ms == rows[-1].target_ms == 20


# -- stalls and catch-up -----------------------------------------------------------------


def stall_arrivals(
    n: int, first: int, count: int, delivery_delay: float = 0.001
) -> list[tuple[float, int]]:
    """Steady stream, but frames first .. first+count-1 are held and delivered in one burst
    together with frame first+count (a stall of count * 20 ms)."""
    burst_at = (first + count) * TICK + delivery_delay
    return [
        (burst_at if first <= k < first + count else k * TICK + delivery_delay, k) for k in range(n)
    ]


@pytest.mark.parametrize("stall_frames", [15, 8])
def test_a_stall_and_burst_returns_to_the_target_within_2_s(stall_frames: int) -> None:
    """300 ms (and 160 ms) without frames, then the held frames all at once.

    aiortc would play the whole burst behind a 280 ms delay for the rest of the call. Here
    the stale frames are dropped at once: the delay is back at the pre-stall target at the
    first tick after the burst (required: within 2 s), and the target itself does not move
    (one stall is < 5 % of the 5 s estimator window).
    """
    jb, clock = new()
    first = 400  # 8 s in: the estimator window is full of steady arrivals
    rows = simulate(jb, clock, stall_arrivals(800, first, stall_frames), 800, make=tone)
    s = check_invariants(jb, pops=800)
    before = rows[first - 10].target_ms
    assert before == 20
    burst_tick = next(i for i, r in enumerate(rows) if i > first and r.delay_ms > 0)
    after = rows[burst_tick : burst_tick + 100]  # 2 s
    assert all(r.delay_ms <= 200 for r in rows)
    assert after[-1].delay_ms == after[-1].target_ms == before
    settled = next(i for i, r in enumerate(after) if r.delay_ms <= r.target_ms)
    assert settled * TICK <= 2.0
    assert all(r.delay_ms <= r.target_ms + 20 for r in after[settled:])
    assert all(r.delay_ms == 20 for r in rows[burst_tick + 1 :])
    # The stall itself: concealment, then silence (re-buffering after 200 ms).
    assert s.underruns + s.idle >= stall_frames
    assert s.late == 0
    assert s.lost == 0
    assert s.played + s.dropped == 800


def test_repeated_stalls_raise_the_target_but_never_past_the_cap() -> None:
    """A 100 ms stall every second: more than 5 % of frames are late, the target rises."""
    jb, clock = new()
    arrivals = []
    for k in range(1500):
        at = (k - k % 50 + 5) * TICK if k % 50 < 5 else k * TICK
        arrivals.append((at + 0.001, k))
    rows = simulate(jb, clock, arrivals, 1500)
    check_invariants(jb, pops=1500)
    assert 40 <= rows[-1].target_ms <= 200
    assert all(20 <= r.target_ms <= 200 and r.delay_ms <= 200 for r in rows)


def test_a_burst_at_the_start_does_not_keep_its_delay() -> None:
    jb, clock = new()
    arrivals = [(max(k * TICK, 0.2) + 0.001, k) for k in range(500)]  # 11 frames at 200 ms
    rows = simulate(jb, clock, arrivals, 500)
    check_invariants(jb, pops=500)
    assert all(r.delay_ms <= 40 for r in rows[12:])
    assert all(r.delay_ms == 20 for r in rows[150:])


def test_catch_up_prefers_dropping_a_quiet_frame() -> None:
    """One frame of surplus (start delay 40 ms, target 20 ms after the first second): the
    buffer waits up to 300 ms for a quiet frame to drop instead of cutting speech."""
    quiet = 60

    def make(k: int) -> np.ndarray:
        return np.full(FRAME, 5, dtype=np.int16) if k == quiet else frame(k)

    jb, clock = new()
    rows = simulate(jb, clock, steady(range(200)), 200, make=make)
    s = check_invariants(jb, pops=200)
    assert s.dropped == 1
    played = [int(r.out[-1]) for r in rows if r.played]
    assert 5 not in played
    assert [p - 2000 for p in played] == [k for k in range(200) if k != quiet][: len(played)]


def test_catch_up_drops_a_loud_frame_with_a_crossfade_when_no_quiet_one_comes() -> None:
    jb, clock = new()
    rows = simulate(jb, clock, steady(range(300)), 300, make=tone)
    s = check_invariants(jb, pops=300)
    assert s.dropped == 1
    assert s.concealed == 0
    played = [(i, ident_tone(r.out)) for i, r in enumerate(rows) if r.played]
    jumps = [(i, k) for (_, prev), (i, k) in itertools.pairwise(played) if k != prev + 1]
    assert len(jumps) == 1
    i, k = jumps[0]
    assert rows[i - 1].played
    assert ident_tone(rows[i - 1].out) == k - 2
    assert abs(int(rows[i].out[0]) - int(rows[i - 1].out[-1])) < 1500  # crossfaded, no step
    assert np.array_equal(rows[i].out[32:], tone(k)[32:])


def drift_frame(k: int) -> np.ndarray:
    """Talk with a pause: every 25th frame is quiet (peak < -30 dBFS), the others loud."""
    if k % 25 == 0:
        return np.full(FRAME, k // 25, dtype=np.int16)
    return frame(k)


def drift_ident(out: np.ndarray) -> int:
    value = int(out[-1])
    return value - 2000 if value >= 2000 else value * 25


@pytest.mark.parametrize("ppm", [1000, -1000])
def test_clock_drift_keeps_every_wait_within_the_target_band(ppm: int) -> None:
    """The sender's clock runs 0.1 % slow (or fast) against the device's: over 60 s the
    arrivals slide 60 ms later (earlier) against the pops, whatever the network does.

    Every frame must still wait at least what the target asks for (40 ms, counting the frame
    played: 20 ms from arrival to playout) and at most one frame more: the buffer adds one
    frame of delay (at a pause) as the arrivals slide closer to the pops, and drops one as
    they slide away, instead of running dry (a concealed underrun every 20 s here) or
    growing. The old span-counted catch-up let the wait fall to zero.
    """
    jb, clock = new(min_delay_ms=40)
    rate = 1 + ppm / 1e6
    arrivals = [(k * TICK * rate + 0.001, k) for k in range(3000)]
    arrived = dict((k, t) for t, k in arrivals)
    rows = simulate(jb, clock, arrivals, 2990, make=drift_frame)
    s = check_invariants(jb, pops=2990)
    assert s.underruns == 0
    assert s.concealed == s.inserted
    assert (s.lost, s.late) == (0, 0)
    played = [(i, drift_ident(r.out)) for i, r in enumerate(rows) if r.played]
    assert [k for _, k in played] == sorted(k for _, k in played)
    waits = [rows[i].t - arrived[k] for i, k in played[50:]]
    assert min(waits) >= 0.020 - 0.001
    assert max(waits) <= 0.040 + 0.001
    if ppm > 0:
        assert s.inserted == 3  # 60 ms of drift, one frame each 20 ms
        for i, r in enumerate(rows):
            if i > 10 and not r.played:  # an insertion: right after a pause, faded
                assert rows[i - 1].played
                assert np.abs(rows[i - 1].out).max() < 1024
                assert np.abs(r.out).max() < 1024
    else:
        assert s.inserted == 0
        assert 3 <= s.dropped <= 4  # the drift and maybe the start surplus


def test_a_target_just_above_a_frame_boundary_adds_no_frame() -> None:
    """A steady stream settles at the 20 ms floor (waits of 7-9 ms); then 1.5 ms of
    jitter lifts the target to 21-22 ms, two frames when rounded up. Those waits already
    hold the 95th-percentile late frame, so no frame is added (a target hovering at the
    boundary would otherwise add and drop frames in turn)."""
    rng = random.Random(5)
    jb, clock = new()
    arrivals = [
        (k * TICK + 0.001 + (rng.uniform(0, 0.0015) if k >= 500 else 0.0), k) for k in range(1500)
    ]
    rows = simulate(jb, clock, arrivals, 1490)
    s = check_invariants(jb, pops=1490)
    assert rows[400].target_ms == 20
    assert 20 < rows[-1].target_ms < 25
    assert (s.inserted, s.concealed, s.underruns, s.lost) == (0, 0, 0, 0)
    assert s.dropped == 1  # the start delay's surplus, in the steady part


_TONE_TAILS = {tone(k)[32:].tobytes(): k for k in range(500)}


def ident_tone(out: np.ndarray) -> int:
    """Index k of the tone frame whose tail (after a possible crossfade) matches ``out``."""
    return _TONE_TAILS[out[32:].tobytes()]


def test_overflow_beyond_the_cap_drops_the_oldest_down_to_the_target() -> None:
    jb, _clock = new()
    for k in range(10):
        jb.push(frame(k), k)
    assert jb.current_delay_ms == 200
    assert jb.dropped == 0
    jb.push(frame(10), 10)  # 220 ms: beyond the cap
    s = check_invariants(jb)
    assert s.current_delay_ms == s.target_delay_ms == 40
    assert s.dropped == 9
    assert [ident(jb.pop()) for _ in range(2)] == [9, 10]
    for k in range(11, 60):  # 1 s at once: nothing ever stays buffered beyond 200 ms
        jb.push(frame(k), k)
        assert jb.current_delay_ms <= 200
    check_invariants(jb, pops=2)


# -- adaptation to jitter ----------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_jitter_of_30_ms_raises_the_target_and_avoids_underruns(seed: int) -> None:
    """Every frame delayed by a random 0-60 ms (+-30 ms around 30 ms; they reorder)."""
    rng = random.Random(seed)
    jb, clock = new()
    arrivals = [(k * TICK + 0.030 + rng.uniform(-0.030, 0.030), k) for k in range(1500)]
    rows = simulate(jb, clock, arrivals, 1520, phase=rng.uniform(0, TICK))
    s = check_invariants(jb, pops=1520)
    targets = [r.target_ms for r in rows[300:]]
    assert min(targets) >= 60
    assert max(targets) <= 100
    assert s.concealed - s.underruns <= 3  # waits for late frames ...
    assert s.underruns <= 3 + 20  # ... and the 20 ticks after the stream ends
    assert s.lost == 0
    assert s.late <= 2
    assert 10 <= s.jitter_ms <= 30  # RFC 3550: E|D| of two uniform 60 ms delays = 20 ms
    delays = [r.delay_ms for r in rows[300:1500]]
    assert max(delays) <= 140


def test_target_stays_within_floor_and_cap() -> None:
    rng = random.Random(7)
    jb, clock = new()
    arrivals = [(k * TICK + rng.uniform(0, 1.0), k) for k in range(600)]  # wild jitter
    rows = simulate(jb, clock, arrivals, 650)
    check_invariants(jb, pops=650)
    assert all(20 <= r.target_ms <= 200 for r in rows)
    assert max(r.target_ms for r in rows) >= 180
    jb2, clock2 = new(min_delay_ms=60, max_delay_ms=100, start_delay_ms=10)
    assert jb2.target_delay_ms == 60
    rows = simulate(jb2, clock2, arrivals, 650)
    assert all(60 <= r.target_ms <= 100 and r.delay_ms <= 100 for r in rows)


# -- API details --------------------------------------------------------------------------


def test_reset_flushes_and_starts_a_new_stream_keeping_counters() -> None:
    jb, _clock = new()
    for k in range(5):
        jb.push(frame(k), 1000 + k)
    jb.pop()
    jb.reset()
    s = check_invariants(jb, pops=1)
    assert s.flushed == 4
    assert s.depth == 0
    assert not jb.playing
    assert s.target_delay_ms == 40
    jb.push(frame(7), 5)  # a new stream: any numbering, not "late"
    jb.push(frame(8), 6)
    assert ident(jb.pop()) == 7
    assert check_invariants(jb, pops=2).late == 0


def test_a_restarted_sequence_resynchronises() -> None:
    jb, _clock = new()
    for k in range(10):
        jb.push(frame(k), 30000 + k)
        jb.pop()
    for k in range(10, 20):  # the sender restarted its numbering at 0
        jb.push(frame(k), k - 10)
    out = [ident(jb.pop()) for _ in range(3)]
    assert out[-1] >= 10
    s = check_invariants(jb)
    assert s.late == 0


def test_validates_frames_and_parameters() -> None:
    jb, _ = new()
    with pytest.raises(ValueError, match="int16"):
        jb.push(np.zeros(FRAME, dtype=np.float32))
    with pytest.raises(ValueError, match="shape"):
        jb.push(np.zeros(FRAME + 1, dtype=np.int16))
    assert jb.pushed == 0
    with pytest.raises(ValueError, match="min_delay_ms <= max_delay_ms"):
        JitterBuffer(min_delay_ms=100, max_delay_ms=50)
    with pytest.raises(ValueError, match="frame_samples"):
        JitterBuffer(frame_samples=0)
    assert "JitterBuffer(" in repr(jb)


# -- properties ----------------------------------------------------------------------------

event = st.tuples(
    st.floats(0, 0.4),  # network delay
    st.booleans() | st.just(False),  # lost
    st.integers(0, 2),  # extra copies
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(event, min_size=1, max_size=120),
    st.integers(0, 65535),
    st.floats(0, 0.0199),
    st.sampled_from([(20, 200, 40), (20, 60, 20), (40, 120, 80)]),
)
def test_random_schedules_keep_the_invariants(
    events: list[tuple[float, bool, int]],
    start_seq: int,
    phase: float,
    delays: tuple[int, int, int],
) -> None:
    """Invariants guaranteed at every step, whatever the network does:

    * ``pushed == played + dropped + late + duplicates + flushed + depth``;
    * ``pops == played + concealed + idle``; ``underruns <= concealed``; ``lost >= 0``;
    * every pop returns 160 int16 samples; real frames come out in sequence order, each
      at most once; the buffered span never exceeds the cap; the target stays in bounds.
    """
    lo, hi, start = delays
    jb, clock = new(min_delay_ms=lo, max_delay_ms=hi, start_delay_ms=start)
    arrivals = []
    for k, (delay, lost, copies) in enumerate(events):
        if not lost:
            arrivals += [(k * TICK + delay + c * 0.007, k) for c in range(copies + 1)]
    arrivals.sort()
    i = 0
    last_played = -1
    for j in range(len(events) + 30):  # j pops done before tick j
        now = j * TICK + phase
        while i < len(arrivals) and arrivals[i][0] <= now:
            clock.t, k = arrivals[i]
            jb.push(frame(k), (start_seq + k) & 0xFFFF, ((start_seq + k) * FRAME) & 0xFFFFFFFF)
            i += 1
            assert jb.current_delay_ms <= hi
            check_invariants(jb, j)
        clock.t = now
        played = jb.played
        out = jb.pop()
        assert out.shape == (FRAME,)
        assert out.dtype == np.int16
        if jb.played > played:
            assert ident(out) > last_played
            last_played = ident(out)
        check_invariants(jb, j + 1)
    # Each distinct frame is accepted (then played, dropped or still buffered) or late;
    # every further copy is a duplicate.
    s = jb.stats()
    distinct = len({k for _, k in arrivals})
    assert s.played + s.dropped + s.depth + s.late == distinct
    assert s.duplicates == len(arrivals) - distinct


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 65535) | st.none(), st.booleans()), max_size=80))
def test_arbitrary_sequence_numbers_never_break_the_counters(
    ops: list[tuple[int | None, bool]],
) -> None:
    jb, clock = new()
    pops = 0
    for n, (seq, pop) in enumerate(ops):
        clock.t = n * 0.01
        jb.push(frame(n % 1000), seq)
        if pop:
            out = jb.pop()
            pops += 1
            assert out.shape == (FRAME,)
            assert out.dtype == np.int16
        check_invariants(jb, pops)
        if n % 37 == 36:
            jb.reset()
            check_invariants(jb, pops)


# -- threads -------------------------------------------------------------------------------


def test_concurrent_producer_and_consumer() -> None:
    """An engine thread pushes (with some reordering, duplicates and gaps) while a device
    thread pops, for 0.5 s on the real clock; a third reads consistent stats snapshots."""
    jb = JitterBuffer()
    stop = threading.Event()
    errors: list[BaseException] = []
    pops = [0]

    def produce() -> None:
        try:
            rng = random.Random(3)
            k = 0
            while not stop.is_set():
                seq = k + (1 if k % 7 == 0 else -1 if k % 7 == 1 else 0)
                if k % 31 != 5:
                    jb.push(frame(k % 1000), seq & 0xFFFF)
                if k % 13 == 0:
                    jb.push(frame(k % 1000), seq & 0xFFFF)
                k += 1
                time.sleep(rng.uniform(0, 0.002))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def consume() -> None:
        try:
            while not stop.is_set():
                out = jb.pop()
                pops[0] += 1
                if out.shape != (FRAME,) or out.dtype != np.int16:
                    raise AssertionError("bad frame")
                time.sleep(0.001)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=produce), threading.Thread(target=consume)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 0.5
    snapshots = 0
    while time.monotonic() < deadline:
        check_invariants(jb)
        snapshots += 1
        time.sleep(0.005)
    stop.set()
    for t in threads:
        t.join(5)
    assert not errors
    s = check_invariants(jb, pops=pops[0])
    assert s.pushed > 100
    assert s.played > 50
    assert snapshots > 10
