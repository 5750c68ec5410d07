"""Adaptive jitter buffer with packet-loss concealment: the drop-in successor of PlayoutBuffer.

The engine (an asyncio thread) :meth:`JitterBuffer.push`-es every received frame with its
16-bit sequence number and 32-bit timestamp; the audio device's thread :meth:`JitterBuffer.pop`-s
exactly one frame per 20 ms tick. Frames are ``numpy`` ``int16`` arrays of ``frame_samples``
(160) samples.

Playout model
-------------
Frames are played strictly in sequence order (16-bit numbers are unwrapped to unbounded
integers, so 65535 -> 0 is just the next frame). The *play position* is the sequence number
due at the next pop. Each pop does exactly one of:

* **play** the frame at the play position (``played``), or
* **conceal** (``concealed``): the frame is missing, so output the last good frame again at
  x0.7, then fading (x0.7 -> x0.45 -> x0.2 -> 0 over the next three frames), silence from
  80 ms of consecutive concealment on. Every synthetic frame starts with a 4 ms crossfade
  from the last sample played, and a real frame that does not follow its predecessor
  (after concealment, after a drop) fades in the same way, so there are no clicks.
  A missing frame is either *skipped* (its slot is counted in ``lost``) when later frames
  are buffered beyond the target, or *waited for* (the play position does not move, which
  adds one frame of delay) when the buffer is at or below the target or completely empty
  (``underruns``: nothing at all to play);
* **idle** (``idle``): silence before playout starts, or while re-buffering.

Adaptation
----------
* *Target*: every arrival (late ones included, duplicates not) gives a transit time
  ``clock() - sequence * frame_ms``. Over the last ``window_ms`` (5 s, 250 arrivals) the
  target playout delay is the 95th percentile of the transit minus its minimum (the
  relative arrival delay, NetEq's measure), plus one frame, clamped to
  ``[min_delay_ms, max_delay_ms]``. Arrivals later than the cap could ever absorb are left
  out and slots of a window not yet full count as on time, so one stall or a burst at the
  start of the stream (under 5 % of the window) does not move the target, while repeated
  ones do. During the first 50 arrivals it is at least ``start_delay_ms``. ``jitter_ms``
  is the RFC 3550 interarrival jitter (``J += (|D| - J) / 16``, from the timestamps), a
  reported metric only.
* *Wait band*: each frame carries its arrival time; ``pop`` reads the clock once and
  measures the *wait* (arrival to playout) of every frame it plays. The target, in whole
  frames, counts the frame being played, so an on-time frame must wait at least ``low =
  (ceil(target / frame_ms) - 1) * frame_ms`` (the 95th-percentile late frame then arrives in
  time, and the floor's extra frames are a margin). Over each window of ``HOLD_POPS`` (10,
  200 ms) frames played in sequence: if even the frame that waited least waited ``k`` frames
  more than ``low``, ``k`` frames are to be dropped; if even the frame that waited most
  waited less than ``target - frame_ms`` (``low`` when the target is a whole number of
  frames; lower otherwise, so that a target hovering around a frame boundary never adds and
  drops frames in turn), one frame of delay is to be inserted (not during the first 50
  arrivals, whose target is the start delay, a prefill rather than a measure). So waits stay
  between ``target - frame_ms`` and one frame (plus the window's lateness) above ``low``
  whatever the phase of the arrivals against the pops, and a sender clock slower or faster
  than the device's (the arrivals slide against the pops) costs an inserted or dropped frame
  at a pause, not an underrun: counting frames alone (the span at pop time), the wait can
  slide to zero without a single frame missing.
* *Growing* the delay: (1) when a frame is missing and the buffer is at or below the
  target, playout waits for it (above, at most the target's worth of ticks), which is
  exactly when more delay is needed; (2) an insertion (above) waits up to 300 ms for the
  last played frame to be quiet (peak < -30 dBFS), then plays a faded repeat of it
  (``concealed`` and ``inserted``) while the position stays.
* *Shrinking* (catch-up, no permanent delay growth): (1) after the play position stood still
  for ``n`` ticks (a stall: the buffer ran dry, then a burst came), up to ``n`` of the
  oldest, now stale frames are discarded at once, down to the target (``dropped``);
  (2) frames to drop (above) go one per pop, preferring quiet frames and otherwise after
  300 ms (one frame) or at every other pop (more), crossfaded, and only while the frame
  played instead still waits ``low`` (``dropped``); (3) a push that would make the
  buffered span exceed ``max_delay_ms`` drops the oldest frames down to the target
  (``dropped``).
* *Re-buffering*: after ``max_delay_ms`` of an empty buffer (the far end went quiet),
  playout stops and restarts like at the beginning once the target is buffered again.

Late, lost, duplicates
----------------------
A frame whose sequence number is behind the play position is ``late`` (discarded); if its
slot had been counted in ``lost`` it is moved from ``lost`` to ``late`` (``lost`` is
decremented), so a frame is never counted twice. A frame already received (buffered, played,
dropped or late) is a ``duplicate``. A sequence number more than 512 frames (10 s) away
from the play position means the sender restarted its numbering: the buffer is flushed
(``dropped``) and starts over as for a new stream.

Counter invariants (exact in every :meth:`JitterBuffer.stats` snapshot)
----------------------------------------------------------------------
* ``pushed == played + dropped + late + duplicates + flushed + depth`` -- every push ends
  in exactly one place (``flushed``: discarded by :meth:`JitterBuffer.reset`).
* ``pops == played + concealed + idle`` -- every pop is exactly one of the three.
* ``underruns + inserted <= concealed``; ``lost >= 0``; ``min_delay_ms <= target_delay_ms <=
  max_delay_ms``; ``current_delay_ms <= max(max_delay_ms, frame_ms)`` after every push.
* Each sequence slot the play position passed since the stream started is exactly one
  of: played, dropped, lost, or late (arrived after its slot was counted lost).

Threads
-------
One ``threading.Lock`` guards the buffer. ``pop`` holds it for O(1) work (dict look-ups,
counter updates; concealment and crossfades are numpy operations on preallocated
160-sample buffers, about a microsecond each, and so is the peak of a frame while a drop or
an insertion waits for a quiet one; O(depth) when playout starts); ``push``
holds it for O(depth) work at most (depth <= ``max_delay_ms / frame_ms`` + 1, i.e. 11
frames): no I/O, no logging, no waiting, no large allocation (a sequence restart or
``reset`` allocates two 1024-entry lists). The jitter estimator (one insertion into and
one removal from a sorted list of up to 250 floats, a few us) runs in ``push`` *outside*
that lock, under a second lock that ``pop`` never takes. So the device thread can only
ever wait for the other side to finish a few microseconds of bookkeeping, the same order
as a GIL switch, which any Python code in a PortAudio callback already accepts. ``pop``
never waits for data, never allocates beyond numpy scalars and slice views, and calls the
clock once when it plays a frame (measured: ~1.3 us playing a frame, ~6 us concealing).

Counters are plain ``int`` attributes, readable from any thread without locking (a value
may be one update old); :meth:`JitterBuffer.stats` takes the lock for a consistent snapshot.
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import NDArray

__all__ = ["JitterBuffer", "JitterStats"]

Frame = NDArray[np.int16]

_SEQ_MOD: Final = 1 << 16
_SEQ_HALF: Final = 1 << 15
_TS_MOD: Final = 1 << 32
_TS_HALF: Final = 1 << 31

HISTORY: Final = 1024  # ring of "received" / "arrived late" marks, indexed by sequence
REACH: Final = HISTORY // 2  # frames from the play position still taken as the same stream
_NO_SEQ: Final = -(1 << 62)  # never a real extended sequence number

PERCENTILE: Final = 0.95
WARMUP_FRAMES: Final = 50  # arrivals before the estimate may go below start_delay_ms
HOLD_POPS: Final = 10  # frames played in sequence per drop / insert decision (200 ms)
QUIET_WAIT_POPS: Final = 15  # how long a drop or insertion waits for a quiet frame (300 ms)
QUIET_PEAK: Final = 1024  # peak |sample| below which a frame counts as quiet (-30 dBFS)
CROSSFADE_MS: Final = 4.0
# Consecutive concealed frame k (1-based) ramps from CONCEAL_GAINS[k-1][0] to [k-1][1];
# from frame len(CONCEAL_GAINS) + 1 on (80 ms) the output is silence.
CONCEAL_GAINS: Final = ((0.7, 0.7), (0.7, 0.45), (0.45, 0.2), (0.2, 0.0))


def _quiet(frame: Frame) -> bool:
    """Peak below ``QUIET_PEAK``: dropping or repeating this frame is hardly audible.
    Computed only while a drop or an insertion waits for such a frame (two numpy
    reductions, a few µs), not for every frame pushed."""
    return max(int(frame.max()), -int(frame.min())) < QUIET_PEAK


@dataclass(frozen=True, slots=True)
class JitterStats:
    """A consistent snapshot of a :class:`JitterBuffer`'s counters and delays."""

    pushed: int  # push() calls that were accepted for processing (valid frames)
    played: int  # real frames returned by pop()
    late: int  # frames that arrived after their playout slot (discarded)
    lost: int  # sequence slots passed whose frame never arrived (so far)
    concealed: int  # pops that returned a synthetic frame (faded repeat or silence)
    dropped: int  # buffered frames discarded to cut delay (catch-up, overflow, stream restart)
    duplicates: int  # frames received twice (discarded)
    underruns: int  # concealed pops while playing with nothing at all buffered
    inserted: int  # concealed pops that added one frame of delay on purpose (arrivals drifted)
    idle: int  # pops that returned silence because playout had not (re)started
    flushed: int  # frames discarded by reset()
    depth: int  # frames buffered now
    current_delay_ms: float  # span of buffered audio (play position to newest frame)
    target_delay_ms: float
    jitter_ms: float  # RFC 3550 interarrival jitter


class JitterBuffer:
    """Adaptive playout buffer: reorders, conceals losses, tracks the arrival jitter.

    ``push`` (engine side) and ``pop`` (device side, once per ``frame_ms``) never block on
    each other beyond a few microseconds of bookkeeping; see the module docstring for the
    algorithm, the counter invariants and the threading argument.

    ``pop`` returns a frame the caller may read until its next ``pop`` call: either the
    pushed array itself, a preallocated output buffer that the next ``pop`` overwrites, or a
    shared read-only silent frame. Never modify it or keep it beyond the next ``pop``; copy
    it if needed. Pushed arrays are stored by reference: the producer must not modify them
    after ``push``.

    ``clock`` gives arrival times in seconds (injected in tests; a clocked device can pass
    its own tick clock). ``window_ms`` is the jitter estimator's memory.
    """

    def __init__(
        self,
        *,
        frame_samples: int = 160,
        frame_ms: int = 20,
        min_delay_ms: float = 20,
        max_delay_ms: float = 200,
        start_delay_ms: float = 40,
        clock: Callable[[], float] = time.monotonic,
        window_ms: float = 5000,
    ) -> None:
        if frame_samples < 1:
            raise ValueError(f"frame_samples must be at least 1, got {frame_samples}")
        if frame_ms <= 0:
            raise ValueError(f"frame_ms must be positive, got {frame_ms}")
        if not 0 < min_delay_ms <= max_delay_ms:
            raise ValueError(
                "need 0 < min_delay_ms <= max_delay_ms, "
                f"got min_delay_ms={min_delay_ms}, max_delay_ms={max_delay_ms}"
            )
        if window_ms < frame_ms:
            raise ValueError(f"window_ms must be at least one frame, got {window_ms}")
        self.frame_samples = frame_samples
        self.frame_ms = frame_ms
        self.min_delay_ms = float(min_delay_ms)
        self.max_delay_ms = float(max_delay_ms)
        self.start_delay_ms = float(min(max(start_delay_ms, min_delay_ms), max_delay_ms))
        self._clock = clock
        self._frame_s = frame_ms / 1000.0
        self._sample_rate = frame_samples * 1000.0 / frame_ms
        self._max_frames = max(1, int(max_delay_ms // frame_ms + 1e-9))
        self._rebuffer_ticks = max(self._max_frames, len(CONCEAL_GAINS) + 1)

        self._lock = threading.Lock()  # the buffer; pop takes only this one
        self._est_lock = threading.Lock()  # the estimator; push and reset only

        # Preallocated output: the shared silence, one reusable output frame, float work.
        silence = np.zeros(frame_samples, dtype=np.int16)
        silence.flags.writeable = False
        self._silence: Frame = silence
        self._out: Frame = np.zeros(frame_samples, dtype=np.int16)
        self._work = np.zeros(frame_samples, dtype=np.float32)
        xfade = min(frame_samples, max(1, round(CROSSFADE_MS * self._sample_rate / 1000)))
        self._xfade = xfade
        self._xfade_w = np.arange(1, xfade + 1, dtype=np.float32) / np.float32(xfade + 1)
        self._xfade_work = np.zeros(xfade, dtype=np.float32)
        steps = np.arange(1, frame_samples + 1, dtype=np.float32) / np.float32(frame_samples)
        self._conceal_ramps = tuple(
            (np.float32(a) + np.float32(b - a) * steps).astype(np.float32) for a, b in CONCEAL_GAINS
        )

        # Estimator (under _est_lock).
        self._window = max(2, int(window_ms // frame_ms))
        # The window's relative transits, in arrival order (a ring) and sorted: the
        # percentile is then a lookup, not a numpy pass per arrival.
        self._transits = [0.0] * self._window
        self._sorted: list[float] = []
        self._cover_s = (self.max_delay_ms - frame_ms) / 1000.0 + 1e-6
        self._observed = 0
        self._ref_ts: int | None = None
        self._prev_transit_ts: float | None = None
        self._jitter_s = 0.0
        self._target_ms = self.start_delay_ms
        self._target_frames = self._frames_for(self.start_delay_ms)

        # Counters (cumulative; reset() keeps them).
        self.pushed = 0
        self.played = 0
        self.late = 0
        self.lost = 0
        self.concealed = 0
        self.dropped = 0
        self.duplicates = 0
        self.underruns = 0
        self.inserted = 0
        self.idle = 0
        self.flushed = 0

        self._clear_stream()

    # -- state ------------------------------------------------------------------------

    def _clear_stream(self) -> None:
        """Forget the stream (buffer must be empty or accounted for). Caller holds the locks."""
        self._frames: dict[int, tuple[Frame, float]] = {}  # (pcm, arrival time)
        self._max = 0  # highest buffered sequence (valid while _frames is not empty)
        self._pos: int | None = None  # play position: the sequence due at the next pop
        self._ref_seq: int | None = None  # highest sequence seen (unwrapping reference)
        self._base = 0  # play position at the stream's first start (lost is counted from it)
        self._started = False  # playout started at least once in this stream
        self._playing = False
        self._stall = 0  # consecutive ticks the play position stood still
        self._conceal_run = 0
        self._last_good: Frame | None = None
        self._prev_seq: int | None = None  # sequence of the frame output by the last pop
        self._prev_last = 0  # last sample output by the last pop
        self._after_idle = True  # the last pop was idle silence (or nothing was played yet)
        self._reset_window()
        self._waited = 0
        self._recv = [_NO_SEQ] * HISTORY
        self._late_mark = [_NO_SEQ] * HISTORY

    def _restart_window(self) -> None:
        """Forget the waits measured so far (a decision was taken, or the waits moved)."""
        self._win_min: float = math.inf  # least wait of a frame played in the window (s)
        self._win_max: float = -math.inf  # greatest wait of a frame played in the window (s)
        self._win_n: int = 0

    def _reset_window(self) -> None:
        """Start a new catch-up / growth window; cancel a pending drop or insertion."""
        self._restart_window()
        self._pending = 0  # frames to drop (catch-up)
        self._grow = False  # one frame of delay to insert

    def _reset_estimator(self) -> None:
        self._observed = 0
        self._sorted.clear()
        self._ref_ts = None
        self._prev_transit_ts = None
        self._target_ms = self.start_delay_ms
        self._target_frames = self._frames_for(self.start_delay_ms)

    def _frames_for(self, delay_ms: float) -> int:
        return max(1, math.ceil(delay_ms / self.frame_ms - 1e-9))

    @property
    def depth(self) -> int:
        """Frames buffered now."""
        return len(self._frames)

    @property
    def playing(self) -> bool:
        """True once playout started, until it re-buffers or ``reset``."""
        return self._playing

    def _span(self) -> int:
        pos = self._pos
        if not self._frames or pos is None:
            return 0
        return max(0, self._max - pos + 1)

    @property
    def current_delay_ms(self) -> float:
        """Audio buffered now, play position to newest frame (gaps included), in ms."""
        with self._lock:
            return float(self._span() * self.frame_ms)

    @property
    def target_delay_ms(self) -> float:
        """The playout delay the buffer aims at, within ``[min_delay_ms, max_delay_ms]``."""
        return self._target_ms

    @property
    def jitter_ms(self) -> float:
        """RFC 3550 interarrival jitter estimate, in ms."""
        return self._jitter_s * 1000.0

    def stats(self) -> JitterStats:
        with self._lock:
            return JitterStats(
                pushed=self.pushed,
                played=self.played,
                late=self.late,
                lost=self.lost,
                concealed=self.concealed,
                dropped=self.dropped,
                duplicates=self.duplicates,
                underruns=self.underruns,
                inserted=self.inserted,
                idle=self.idle,
                flushed=self.flushed,
                depth=len(self._frames),
                current_delay_ms=float(self._span() * self.frame_ms),
                target_delay_ms=self._target_ms,
                jitter_ms=self._jitter_s * 1000.0,
            )

    # -- engine side ------------------------------------------------------------------

    def push(self, pcm: Frame, sequence: int | None = None, timestamp: int | None = None) -> None:
        """Queue one received frame (engine side). Never blocks for more than bookkeeping.

        ``sequence`` is the 16-bit sequence number (``None``: the frame after the newest one
        seen, for senders without numbering); ``timestamp`` the 32-bit sample clock (``None``:
        derived from the sequence). The arrival time is ``clock()`` now.
        """
        if pcm.shape != (self.frame_samples,) or pcm.dtype != np.int16:
            raise ValueError(
                f"jitter buffer frames must be int16 arrays of shape ({self.frame_samples},), "
                f"got {pcm.dtype} {pcm.shape}"
            )
        now = self._clock()
        with self._est_lock:
            with self._lock:
                ext, restarted = self._accept(pcm, sequence, now)
            if restarted:
                self._reset_estimator()
            if ext is not None:
                self._observe(ext, timestamp, now)

    def _accept(self, pcm: Frame, sequence: int | None, now: float) -> tuple[int | None, bool]:
        """Bookkeeping of one push under the lock: (sequence to observe or None, restarted)."""
        self.pushed += 1
        ref = self._ref_seq
        if sequence is None:
            ext = 0 if ref is None else ref + 1
        elif ref is None:
            ext = sequence % _SEQ_MOD
        else:
            ext = ref + ((sequence - ref + _SEQ_HALF) % _SEQ_MOD - _SEQ_HALF)
        restarted = False
        pos = self._pos
        if pos is not None and (ext - pos >= REACH or pos - ext > REACH):
            # The sender restarted its numbering: flush and start over as a new stream.
            self.dropped += len(self._frames)
            self._frames.clear()
            self._clear_stream()
            restarted = True
            pos = None
            ext = ext % _SEQ_MOD if sequence is not None else 0
        if ref is None or ext > ref or restarted:
            self._ref_seq = ext
        slot = ext % HISTORY
        if self._recv[slot] == ext or self._late_mark[slot] == ext:
            self.duplicates += 1
            return None, restarted
        if pos is None:
            self._pos = pos = ext
        elif ext < pos:
            if not self._started:
                self._pos = pos = ext  # reordered before playout started: just earlier
            else:
                # Its slot was passed without it: it was counted lost (if after the start).
                self.late += 1
                self._late_mark[slot] = ext
                if ext >= self._base:
                    self.lost -= 1
                return ext, restarted
        frames = self._frames
        if not frames or ext > self._max:
            self._max = ext
        frames[ext] = (pcm, now)
        self._recv[slot] = ext
        if self._max - pos + 1 > self._max_frames:
            self._cut_to_target()
        return ext, restarted

    def _cut_to_target(self) -> None:
        """Overflow: drop the oldest frames so the buffered span is the target again."""
        frames = self._frames
        pos = self._pos
        assert pos is not None
        keep_from = self._max - self._target_frames + 1
        dropped = 0
        new_pos = self._max
        for seq in list(frames):  # O(depth), depth <= max frames + 1
            if seq < keep_from:
                del frames[seq]
                dropped += 1
            elif seq < new_pos:
                new_pos = seq
        self.dropped += dropped
        if self._started:
            self.lost += (new_pos - pos) - dropped
        self._pos = new_pos
        self._reset_window()

    def _observe(self, ext: int, timestamp: int | None, now: float) -> None:
        """Update the jitter estimate and the target with one arrival (under _est_lock)."""
        # RFC 3550 interarrival jitter, from the timestamps.
        if timestamp is None:
            ext_ts = ext * self.frame_samples
        elif self._ref_ts is None:
            ext_ts = timestamp % _TS_MOD
        else:
            ref_ts = self._ref_ts
            ext_ts = ref_ts + ((timestamp - ref_ts + _TS_HALF) % _TS_MOD - _TS_HALF)
        self._ref_ts = ext_ts
        transit_ts = now - ext_ts / self._sample_rate
        if self._prev_transit_ts is not None:
            d = abs(transit_ts - self._prev_transit_ts)
            self._jitter_s += (d - self._jitter_s) / 16.0
        self._prev_transit_ts = transit_ts

        # Playout target: percentile of the relative transit per sequence slot.
        window = self._window
        slot = self._observed % window
        ordered = self._sorted
        if self._observed >= window:  # the window is full: the oldest arrival leaves
            del ordered[bisect.bisect_left(ordered, self._transits[slot])]
        transit = now - ext * self._frame_s
        self._transits[slot] = transit
        bisect.insort(ordered, transit)
        self._observed += 1
        n = len(ordered)
        low = ordered[0]
        # Arrivals later than any allowed delay could absorb (a long stall) say nothing about
        # the delay to aim for: leave them out. Slots of a window not full yet count as
        # on-time arrivals. So neither one stall nor a burst at the start of the stream
        # (fewer than 5 % of the window's frames) raises the target.
        coverable = bisect.bisect_right(ordered, self._cover_s, key=lambda v: v - low)
        unseen = window - n
        k = math.ceil(PERCENTILE * (coverable + unseen)) - 1 - unseen
        spread = 0.0
        if k >= 0:
            spread = round((ordered[k] - low) * 1000.0, 3)
        target = spread + self.frame_ms
        if self._observed < WARMUP_FRAMES:
            target = max(target, self.start_delay_ms)
        target = min(max(target, self.min_delay_ms), self.max_delay_ms)
        self._target_frames = self._frames_for(target)
        self._target_ms = target

    # -- device side ------------------------------------------------------------------

    def pop(self) -> Frame:
        """The frame to play now (device side, once per tick). Never blocks on data.

        The result is valid until the next ``pop``; do not modify it (see the class doc).
        """
        with self._lock:
            if not self._playing and not self._try_start():
                self.idle += 1
                if self._started:
                    self._stall += 1  # the playout clock runs on while re-buffering
                self._prev_seq = None
                self._prev_last = 0
                self._after_idle = True
                return self._silence
            return self._pop_playing()

    def _try_start(self) -> bool:
        frames = self._frames
        if not frames or self._pos is None:
            return False
        lowest = min(frames)  # O(depth)
        if self._max - lowest + 1 < self._target_frames:
            return False
        skipped = lowest - self._pos
        if skipped > 0:
            if self._started:
                self.lost += skipped  # none of them is buffered: lowest is the minimum
            self._stall = max(0, self._stall - skipped)
        self._pos = lowest
        if not self._started:
            self._started = True
            self._base = lowest
        self._playing = True
        self._reset_window()
        return True

    def _pop_playing(self) -> Frame:
        frames = self._frames
        pos = self._pos
        assert pos is not None
        tf = self._target_frames
        span = self._max - pos + 1 if frames else 0
        in_step = self._stall == 0  # the previous pop did not wait for a missing frame

        # After a stall, the oldest frames are stale: drop them down to the target.
        stall = self._stall
        while stall > 0 and span > tf:
            if frames.pop(pos, None) is not None:
                self.dropped += 1
            else:
                self.lost += 1
            pos += 1
            span -= 1
            stall -= 1
        self._stall = stall

        item = frames.get(pos)
        if item is not None:
            now = self._clock()
            # The least wait (arrival to playout) the target asks of an on-time frame: the
            # target in whole frames, less the frame being played. A frame is added only
            # below the target itself less one frame, so a target hovering at a frame
            # boundary (20.0 / 20.5 ms) does not add and drop a frame in turn.
            low = (tf - 1) * self._frame_s
            if in_step:
                self._measure(now - item[1], low, self._target_ms / 1000.0 - self._frame_s)
            else:
                self._reset_window()
            if self._pending > 0:
                nxt = frames.get(pos + 1)
                if nxt is not None and now - nxt[1] < low - 1e-9:
                    self._pending = 0  # dropping now would cut into the target
                elif nxt is not None:
                    limit = QUIET_WAIT_POPS if self._pending == 1 else 1
                    if self._waited >= limit or _quiet(item[0]):
                        del frames[pos]
                        self.dropped += 1
                        pos += 1
                        item = nxt
                        self._pending -= 1
                        self._waited = 0
                        self._restart_window()
                    else:
                        self._waited += 1
            elif self._grow:
                last = self._last_good
                if self._waited >= QUIET_WAIT_POPS or last is None or _quiet(last):
                    # One frame of delay, added where it is least audible: the position
                    # stays, a faded repeat of the last (quiet) frame plays in its place.
                    self._grow = False
                    self._waited = 0
                    self._restart_window()
                    self._pos = pos
                    self.inserted += 1
                    return self._conceal()
                self._waited += 1
            del frames[pos]
            self._pos = pos + 1
            self._stall = 0
            return self._play(pos, item[0])

        self._reset_window()
        if frames:  # a gap: later frames are buffered
            if span > tf or stall >= tf:
                self.lost += 1  # skip the missing frame
                pos += 1
            else:
                self._stall += 1  # wait for it: below target, it is probably just late
        else:  # nothing at all
            self.underruns += 1
            self._stall += 1
            if self._stall >= self._rebuffer_ticks:
                self._playing = False
        self._pos = pos
        return self._conceal()

    def _measure(self, wait: float, low: float, grow_below: float) -> None:
        """Add one played frame's wait to the window; decide on a drop or an insertion.

        After ``HOLD_POPS`` frames played in sequence: if even the frame that waited least
        could wait ``k`` frames less and still wait ``low``, ``k`` frames are to be dropped;
        if even the frame that waited most waited less than ``grow_below`` (the target less
        one frame, at most ``low``: the arrivals drifted closer to the pops than the target
        allows), one frame of delay is to be inserted.
        """
        self._win_min = min(self._win_min, wait)
        self._win_max = max(self._win_max, wait)
        self._win_n += 1
        if self._win_n >= HOLD_POPS and self._pending == 0 and not self._grow:
            if self._win_max < grow_below - 1e-9 and self._observed >= WARMUP_FRAMES:
                self._grow = True
            else:
                self._pending = max(0, int((self._win_min - low) / self._frame_s + 1e-6))
            self._waited = 0
            self._restart_window()

    def _play(self, seq: int, frame: Frame) -> Frame:
        self.played += 1
        self._conceal_run = 0
        self._last_good = frame
        out = frame
        # Not the continuation of the last output: fade in, unless playout is just (re)starting
        # after idle silence, where the stream's own first samples are its true onset.
        if self._prev_seq != seq - 1 and not self._after_idle:
            out = self._out
            np.copyto(out, frame)
            self._blend_head(out)
        self._after_idle = False
        self._prev_seq = seq
        self._prev_last = int(out[-1])
        return out

    def _conceal(self) -> Frame:
        self._after_idle = False
        self.concealed += 1
        self._conceal_run += 1
        self._prev_seq = None
        k = self._conceal_run
        last = self._last_good
        if last is None or k > len(CONCEAL_GAINS):
            if self._prev_last == 0:
                return self._silence
            out = self._out
            out.fill(0)
        else:
            out = self._out
            work = self._work
            np.multiply(last, self._conceal_ramps[k - 1], out=work)
            np.rint(work, out=work)
            np.copyto(out, work, casting="unsafe")
        self._blend_head(out)
        self._prev_last = int(out[-1])
        return out

    def _blend_head(self, out: Frame) -> None:
        """Crossfade the start of ``out`` from the last sample played (no step, no click)."""
        prev = float(self._prev_last)
        n = self._xfade
        head = self._xfade_work
        np.copyto(head, out[:n])
        head -= prev
        head *= self._xfade_w
        head += prev
        np.rint(head, out=head)
        np.copyto(out[:n], head, casting="unsafe")

    def reset(self) -> None:
        """Discard buffered frames (counted in ``flushed``) and forget the stream.

        The next push starts a new stream (numbering, jitter estimate, prefill to
        ``start_delay_ms``). Counters are cumulative and are not reset.
        """
        with self._est_lock, self._lock:
            self.flushed += len(self._frames)
            self._frames.clear()
            self._clear_stream()
            self._reset_estimator()

    def __repr__(self) -> str:
        return (
            f"JitterBuffer(depth={self.depth}, playing={self._playing}, "
            f"target={self._target_ms:.0f} ms, jitter={self.jitter_ms:.1f} ms, "
            f"pushed={self.pushed}, played={self.played}, late={self.late}, lost={self.lost}, "
            f"concealed={self.concealed}, dropped={self.dropped}, "
            f"duplicates={self.duplicates}, underruns={self.underruns})"
        )
