"""Audio levels for meters and call-quality warnings: 0..1 values, as the Device/Call SDK shows.

**Mapping** (:func:`frame_level`): the RMS of the frame in dBFS, where 0 dBFS is the RMS of
a full-scale *square* wave (``32768``), mapped linearly from -60 dBFS (0.0) to 0 dBFS (1.0)
and clamped::

    level = clamp((rms_dbfs + 60) / 60, 0, 1)      rms_dbfs = 20 * log10(rms / 32768)

So one step of 0.1 is 6 dB; digital silence is 0.0; a -60 dBFS noise floor is 0.0; a
full-scale sine (RMS -3.01 dBFS) is 0.95; normal speech at -30..-15 dBFS RMS is 0.5..0.75.

The pieces:

* :func:`frame_level` - the level of one frame (a 160-sample frame takes ~3 µs).
* :class:`LevelMeter` - a meter ballistic: fast attack, slower release.
* :class:`LevelSlot` - where the device thread posts the input/output levels and the
  engine/UI timer reads them every 50 ms (with peak-hold between reads).
* :class:`FlatInputDetector` - the "constant-audio-input-level" warning condition.
* :class:`SpeakingWhileMuted` - "you are talking while muted".

No asyncio, no sockets, no logging; nothing here allocates beyond a few Python floats per
call, so ``frame_level``, ``LevelMeter.update`` and ``LevelSlot.write_*`` are safe to call
from the device thread.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from typing import Final

import numpy as np
from numpy.typing import NDArray

from softphone.media.constants import FRAME_MS

__all__ = [
    "FLOOR_DBFS",
    "FlatInputDetector",
    "LevelMeter",
    "LevelSlot",
    "SpeakingWhileMuted",
    "dbfs_to_level",
    "frame_level",
    "level_to_dbfs",
]

FLOOR_DBFS: Final = -60.0  # the level 0.0; 0 dBFS is 1.0
_FULL_SCALE_SQ: Final = 32768.0 * 32768.0
FRAME_SECONDS: Final = FRAME_MS / 1000


def dbfs_to_level(dbfs: float) -> float:
    """Meter value 0..1 of an RMS level in dBFS (linear from -60 dBFS to 0 dBFS, clamped)."""
    if dbfs <= FLOOR_DBFS:
        return 0.0
    if dbfs >= 0.0:
        return 1.0
    return (dbfs - FLOOR_DBFS) / -FLOOR_DBFS


def level_to_dbfs(level: float) -> float:
    """RMS dBFS of a meter value (the inverse of :func:`dbfs_to_level` on 0..1)."""
    return FLOOR_DBFS + min(max(level, 0.0), 1.0) * -FLOOR_DBFS


def frame_level(frame: NDArray[np.int16]) -> float:
    """Meter value 0..1 of one ``int16`` frame: its RMS in dBFS mapped linearly from
    -60 dBFS (0.0) to 0 dBFS (1.0); see the module docstring. Empty or silent frames give 0.0.
    """
    n = frame.size
    if n == 0:
        return 0.0
    v = frame.astype(np.float64)
    mean_sq = float(np.dot(v.ravel(), v.ravel())) / n
    if mean_sq <= 0.0:
        return 0.0
    return dbfs_to_level(10.0 * math.log10(mean_sq / _FULL_SCALE_SQ))


class LevelMeter:
    """Meter ballistics on 0..1 levels: fast attack, slower release (a PPM-like meter).

    Each update moves the shown ``value`` toward the new level by ``1 - exp(-dt / tau)``,
    with ``tau = attack_ms`` when the level rises and ``release_ms`` when it falls. With
    the defaults (10 ms / 300 ms, 20 ms frames) a step up is 86 % there after one frame,
    and a drop to silence falls to 1/e of its height in 300 ms (about 0.5 of the scale,
    i.e. 30 dB, in 0.36 s from a speech level of 0.7). Levels are in the 0..1 scale of
    :func:`frame_level`, which is already logarithmic, so the release is roughly a
    constant number of dB per second at the start, like a PPM.
    """

    def __init__(
        self, attack_ms: float = 10.0, release_ms: float = 300.0, frame_ms: float = 20.0
    ) -> None:
        if attack_ms <= 0 or release_ms <= 0 or frame_ms <= 0:
            raise ValueError("attack_ms, release_ms and frame_ms must be positive")
        self.attack_ms = attack_ms
        self.release_ms = release_ms
        self.frame_ms = frame_ms
        self._attack = 1.0 - math.exp(-frame_ms / attack_ms)
        self._release = 1.0 - math.exp(-frame_ms / release_ms)
        self.value = 0.0

    def update(self, frame: NDArray[np.int16]) -> float:
        """Feed one frame of ``frame_ms``; returns the new meter value."""
        return self.feed(frame_level(frame))

    def feed(self, level: float) -> float:
        """Feed one already computed 0..1 level (one frame's worth); returns the new value."""
        value = self.value
        coeff = self._attack if level > value else self._release
        value += (level - value) * coeff
        self.value = value
        return value

    def reset(self) -> None:
        self.value = 0.0


class LevelSlot:
    """The input/output levels the device thread posts for a UI/engine timer to read.

    The device thread calls :meth:`write_input` / :meth:`write_output` once per 20 ms
    frame; a timer reads every 50 ms (``volume`` events) with :meth:`read` (the latest
    values) or :meth:`peak_since_last_read` (the highest value written since the previous
    call of that method, so a short peak between two polls is not missed; if nothing was
    written since, the latest values).

    Thread-safety: the latest values are plain float attributes. In CPython storing a
    float attribute and loading it are each a single bytecode-level operation under the
    GIL, so a reader always sees a whole float (old or new) and never a torn value, and
    the writer never waits: :meth:`read` needs no lock. The peaks are a read-modify-write
    ("max, then reset on read"), which is not atomic; they are kept exact with a small
    lock held for a few bytecodes on both sides (no I/O, no allocation, nothing that
    waits), the same bound the GIL already puts on a device thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.input_level = 0.0
        self.output_level = 0.0
        self._input_peak = -1.0  # -1: nothing written since the last peak read
        self._output_peak = -1.0
        self.writes = 0  # total write_input + write_output calls (staleness check)

    def write_input(self, level: float) -> None:
        """Post the level of the frame just captured (device thread)."""
        with self._lock:
            self.input_level = level
            self._input_peak = max(self._input_peak, level)
            self.writes += 1

    def write_output(self, level: float) -> None:
        """Post the level of the frame just played (device thread)."""
        with self._lock:
            self.output_level = level
            self._output_peak = max(self._output_peak, level)
            self.writes += 1

    def read(self) -> tuple[float, float]:
        """The latest ``(input, output)`` levels. Lock-free; see the class docstring."""
        return self.input_level, self.output_level

    def peak_since_last_read(self) -> tuple[float, float]:
        """``(input, output)``: the highest level written since the previous call of this
        method (the latest level for a side with no write since), then starts a new window.
        """
        with self._lock:
            in_peak = self._input_peak if self._input_peak >= 0.0 else self.input_level
            out_peak = self._output_peak if self._output_peak >= 0.0 else self.output_level
            self._input_peak = -1.0
            self._output_peak = -1.0
        return in_peak, out_peak

    def reset(self) -> None:
        """Back to silence (e.g. when a call ends)."""
        with self._lock:
            self.input_level = self.output_level = 0.0
            self._input_peak = self._output_peak = -1.0


class FlatInputDetector:
    """Detects the "constant-audio-input-level" condition: the input level has stayed flat
    for ``window_s`` (10 s), which points at a dead, stuck or disconnected microphone.

    Feed it one input level (0..1) per frame or per 50 ms poll with a monotonic timestamp
    in seconds. It reports flat when levels have been fed continuously for at least
    ``window_s`` and the standard deviation of the levels of the last ``window_s`` is below
    ``max_std`` (default 0.02, about 1.2 dB on the meter scale). Live microphones never
    stay that steady: even a quiet room moves the level by a few dB, and speech by tens.
    Digital silence (level 0.0 all along) is flat as well. ``update(..., muted=True)``
    clears the history and returns False: the warning is not raised while muted. A gap
    of more than ``max_gap_s`` between two updates also starts over.
    """

    def __init__(
        self, window_s: float = 10.0, max_std: float = 0.02, *, max_gap_s: float = 1.0
    ) -> None:
        if window_s <= 0 or max_std < 0 or max_gap_s <= 0:
            raise ValueError("window_s and max_gap_s must be positive, max_std >= 0")
        self.window_s = window_s
        self.max_std = max_std
        self.max_gap_s = max_gap_s
        self._samples: deque[tuple[float, float]] = deque()
        self._sum = 0.0
        self._sum_sq = 0.0
        self._since: float | None = None  # time of the first update of the current run
        self._last: float | None = None
        self.flat = False

    def reset(self) -> None:
        self._samples.clear()
        self._sum = self._sum_sq = 0.0
        self._since = self._last = None
        self.flat = False

    @property
    def std(self) -> float:
        """Standard deviation of the levels in the window (0.0 when empty)."""
        n = len(self._samples)
        if n == 0:
            return 0.0
        mean = self._sum / n
        return math.sqrt(max(self._sum_sq / n - mean * mean, 0.0))

    def update(self, level: float, now: float, *, muted: bool = False) -> bool:
        """Add the input level measured at ``now`` (seconds); returns whether it is flat."""
        if muted or (self._last is not None and not 0 <= now - self._last <= self.max_gap_s):
            self.reset()
            if muted:
                return False
        if self._since is None:
            self._since = now
        self._last = now
        samples = self._samples
        samples.append((now, level))
        self._sum += level
        self._sum_sq += level * level
        horizon = now - self.window_s
        while samples and samples[0][0] < horizon:
            _, old = samples.popleft()
            self._sum -= old
            self._sum_sq -= old * old
        # Ten seconds of *measurements*: allow half a frame of slack for float timestamps.
        full = now - self._since >= self.window_s - FRAME_SECONDS / 2
        self.flat = full and self.std < self.max_std
        return self.flat


class SpeakingWhileMuted:
    """Decides "the operator is speaking while muted" from recent input levels.

    Feed it the input level (0..1) of every frame (or 50 ms poll) captured while muted,
    with a monotonic timestamp. A sample is *active* when its level is at least
    ``threshold`` (default 0.45, i.e. -33 dBFS RMS: normal speech into a headset is
    -30..-15 dBFS) **and** at least ``margin`` (0.15 = 9 dB) above the tracked noise floor,
    so a loud but steady background (a fan, a busy room) does not count as speech.
    :meth:`update` returns True while the active time within the last ``window_s`` (1 s)
    is at least ``min_active_s`` (0.3 s): a cough or a door slam (< 300 ms) does not
    trigger it, a sentence does. Each sample counts for the time since the previous one
    (at most 100 ms, so a gap in the feed does not count as long speech).

    The noise floor follows the level down at once and creeps up by ``floor_rise_per_s``
    (0.05/s = 3 dB/s) otherwise, so it settles on the quietest moments between syllables.
    Call :meth:`reset` when the operator unmutes (or feed nothing while unmuted).
    """

    def __init__(
        self,
        threshold: float = 0.45,
        min_active_s: float = 0.3,
        window_s: float = 1.0,
        *,
        margin: float = 0.15,
        floor_rise_per_s: float = 0.05,
    ) -> None:
        if not 0 < min_active_s <= window_s:
            raise ValueError("need 0 < min_active_s <= window_s")
        self.threshold = threshold
        self.min_active_s = min_active_s
        self.window_s = window_s
        self.margin = margin
        self.floor_rise_per_s = floor_rise_per_s
        self._active: deque[tuple[float, float]] = deque()  # (time, active seconds)
        self._active_s = 0.0
        self._last: float | None = None
        self.noise_floor: float | None = None
        self.speaking = False

    def reset(self) -> None:
        self._active.clear()
        self._active_s = 0.0
        self._last = None
        self.noise_floor = None
        self.speaking = False

    @property
    def active_s(self) -> float:
        """Seconds of active input within the last ``window_s``."""
        return max(self._active_s, 0.0)

    def update(self, level: float, now: float) -> bool:
        """Add the input level measured at ``now`` (seconds); returns whether the operator
        is speaking (see the class docstring)."""
        dt = FRAME_SECONDS if self._last is None else min(max(now - self._last, 0.0), 0.1)
        self._last = now
        floor = self.noise_floor
        if floor is None or level < floor:
            floor = level
        else:
            floor = min(floor + self.floor_rise_per_s * dt, level)
        self.noise_floor = floor
        if level >= self.threshold and level >= floor + self.margin:
            self._active.append((now, dt))
            self._active_s += dt
        horizon = now - self.window_s
        while self._active and self._active[0][0] <= horizon:
            self._active_s -= self._active.popleft()[1]
        if not self._active:
            self._active_s = 0.0  # no float drift carried across silences
        self.speaking = self._active_s >= self.min_active_s - 1e-9
        return self.speaking
