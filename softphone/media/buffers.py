"""Thread-safe frame hand-over between an audio device's clock thread and the engine.

The device side (a PortAudio callback thread, or the clock thread of a file device) must
never block for long, log or allocate big buffers; the engine side runs in an asyncio loop
on another thread. Both structures here are a ``collections.deque`` guarded by a
``threading.Lock`` held for a handful of bytecodes (no I/O, no allocation beyond the deque's
own node blocks, no waiting inside). The lock is there so the counters are exact and the
"drop oldest when full" / "re-arm the prefill" decisions are atomic with the deque change;
``deque.append`` and ``popleft`` alone are atomic but the check-then-act around them is not.
The worst wait for the device thread is the other side finishing those few bytecodes,
which is the same bound the GIL already imposes on any Python code in a device callback.
Neither ``push`` nor ``pop`` ever waits for data or for space.

Frames are ``numpy`` ``int16`` arrays of one 20 ms frame (160 samples at 8 kHz). They are
stored by reference, not copied: a producer hands the array over and must not modify it
afterwards.

Counters are plain ``int`` attributes, safe to read from any thread without locking (a
reader may see a value one update old).
"""

from __future__ import annotations

import threading
import time
from collections import deque

import numpy as np
from numpy.typing import NDArray

__all__ = ["FrameQueue", "PlayoutBuffer"]

Frame = NDArray[np.int16]


class FrameQueue:
    """Bounded FIFO of frames; ``push`` never blocks and drops the oldest frame when full.

    Used for captured audio: the device thread pushes one frame per 20 ms tick, the engine
    pops them. If the engine stalls, the queue keeps the newest ``capacity`` frames (so
    audio resumes with the least delay) and counts what it discarded in ``dropped``.
    """

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1 frame, got {capacity}")
        self.capacity = capacity
        self._frames: deque[Frame] = deque()
        self._lock = threading.Lock()
        self.pushed = 0
        self.popped = 0
        self.dropped = 0
        self.last_push_at = 0.0  # time.monotonic() of the latest push (0: none yet)

    def push(self, frame: Frame) -> None:
        """Append ``frame``; if the queue is full, drop the oldest frame first. Never blocks."""
        now = time.monotonic()
        with self._lock:
            self.last_push_at = now
            if len(self._frames) >= self.capacity:
                self._frames.popleft()
                self.dropped += 1
            self._frames.append(frame)
            self.pushed += 1

    def pop(self) -> Frame | None:
        """Remove and return the oldest frame, or ``None`` if the queue is empty. Never blocks."""
        with self._lock:
            if not self._frames:
                return None
            self.popped += 1
            return self._frames.popleft()

    def clear(self) -> None:
        """Discard every buffered frame (not counted as dropped)."""
        with self._lock:
            self._frames.clear()

    def __len__(self) -> int:
        return len(self._frames)

    def __repr__(self) -> str:
        return (
            f"FrameQueue(len={len(self)}, capacity={self.capacity}, pushed={self.pushed}, "
            f"popped={self.popped}, dropped={self.dropped})"
        )


class PlayoutBuffer:
    """Fixed-depth playout buffer: the engine pushes received frames, the device pops one per tick.

    * ``pop`` returns the next frame, or a preallocated read-only silent frame when there is
      nothing to play (it never allocates).
    * Playout starts once ``prefill_frames`` frames are buffered; until then pops return
      silence and count nothing.
    * An empty pop after playout has started counts one ``underrun`` and re-arms the prefill:
      playout resumes only when ``prefill_frames`` are buffered again, so a burst arriving
      after a gap is played with the intended cushion instead of making the buffer
      oscillate between empty and one frame.
    * ``push`` beyond ``capacity_frames`` drops the oldest buffered frame (``dropped``).

    ``prefill_frames=0`` behaves like 1 (play as soon as one frame is there).
    ``frame_samples`` only sizes the silent frame and the check in ``push``; it is 160
    (``softphone.media.device.FRAME_SAMPLES``) everywhere in this package.

    This simple buffer will be replaced by an adaptive jitter buffer; keep to its small
    surface: ``push``, ``pop``, ``reset`` and the counters.
    """

    def __init__(
        self, prefill_frames: int = 2, capacity_frames: int = 25, *, frame_samples: int = 160
    ) -> None:
        if capacity_frames < 1:
            raise ValueError(f"capacity_frames must be at least 1, got {capacity_frames}")
        if not 0 <= prefill_frames <= capacity_frames:
            raise ValueError(
                f"prefill_frames must be between 0 and capacity_frames ({capacity_frames}), "
                f"got {prefill_frames}"
            )
        self.prefill_frames = prefill_frames
        self.capacity_frames = capacity_frames
        self.frame_samples = frame_samples
        self._start_depth = max(prefill_frames, 1)
        self._frames: deque[Frame] = deque()
        self._lock = threading.Lock()
        self._playing = False
        silence = np.zeros(frame_samples, dtype=np.int16)
        silence.flags.writeable = False
        self._silence: Frame = silence
        self.pushed = 0
        self.played = 0
        self.underruns = 0
        self.dropped = 0

    @property
    def depth(self) -> int:
        """Frames currently buffered."""
        return len(self._frames)

    @property
    def playing(self) -> bool:
        """True once the prefill was reached, until the next underrun or ``reset``."""
        return self._playing

    def push(self, frame: Frame) -> None:
        """Queue one received frame (engine side); drops the oldest if over capacity."""
        if frame.shape != (self.frame_samples,) or frame.dtype != np.int16:
            raise ValueError(
                f"playout frames must be int16 arrays of shape ({self.frame_samples},), "
                f"got {frame.dtype} {frame.shape}"
            )
        with self._lock:
            if len(self._frames) >= self.capacity_frames:
                self._frames.popleft()
                self.dropped += 1
            self._frames.append(frame)
            self.pushed += 1

    def pop(self) -> Frame:
        """Next frame to play (device side); the shared read-only silent frame if none."""
        with self._lock:
            if not self._playing:
                if len(self._frames) < self._start_depth:
                    return self._silence
                self._playing = True
            if self._frames:
                self.played += 1
                return self._frames.popleft()
            self._playing = False
            self.underruns += 1
            return self._silence

    def reset(self) -> None:
        """Discard buffered frames (not counted as dropped) and re-arm the prefill.

        Counters are cumulative and are not reset.
        """
        with self._lock:
            self._frames.clear()
            self._playing = False

    def __repr__(self) -> str:
        return (
            f"PlayoutBuffer(depth={self.depth}, playing={self._playing}, pushed={self.pushed}, "
            f"played={self.played}, underruns={self.underruns}, dropped={self.dropped})"
        )
