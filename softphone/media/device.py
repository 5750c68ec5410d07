"""The audio device interface of the engine, and the Python-clocked devices.

An :class:`AudioDevice` is a full-duplex endpoint at 8 kHz mono ``int16`` in 20 ms frames
(160 samples), driven by its own clock thread: a PortAudio callback thread, or the thread
of a :class:`ClockedAudioDevice`. Once per tick that thread pushes one captured frame into
``capture`` and pops one frame from ``playback`` to play. The engine, on another thread
(an asyncio loop), only ever calls :meth:`AudioDevice.read_frame` and
:meth:`AudioDevice.write_frame`, which never block.

Writing a backend: subclass :class:`AudioDevice`, implement ``_start_io`` (open the
stream / start the thread) and ``_stop_io`` (stop it, release everything), and in the
device thread call ``_exchange_frame(captured)`` once per 20 ms with the captured frame; it
returns the frame to play. Report an error raised in the device thread with ``_fail``.
A callback backend looks like::

    def _callback(self, in_data, frame_count, time_info, status):
        out = self._exchange_frame(np.frombuffer(in_data, dtype=np.int16))
        return out.tobytes(), pyaudio.paContinue

A device is single-use: ``start`` after ``stop`` raises ``RuntimeError``; ``start`` while
running and ``stop`` twice are no-ops.
"""

from __future__ import annotations

import abc
import enum
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from types import TracebackType
from typing import Final, Self

import numpy as np
from numpy.typing import NDArray

from softphone.media.buffers import FrameQueue
from softphone.media.constants import FRAME_MS, FRAME_SAMPLES, SAMPLE_RATE
from softphone.media.jitter import JitterBuffer
from softphone.media.levels import LevelSlot, frame_level
from softphone.media.tones import SoundMixer

__all__ = [
    "FRAME_MS",
    "FRAME_SAMPLES",
    "SAMPLE_RATE",
    "AudioDevice",
    "AudioDeviceError",
    "AudioErrorCode",
    "ClockedAudioDevice",
    "DeviceStats",
    "NullAudioDevice",
]


CAPTURE_CAPACITY_FRAMES: Final = 50  # 1 s of captured audio waiting for the engine
STOP_JOIN_TIMEOUT: Final = 2.0  # seconds stop() waits for a device thread to end
MAX_CLOCK_LAG: Final = 0.200  # a Python clock this far behind resyncs instead of bursting


class AudioErrorCode(StrEnum):
    """Stable codes of :class:`AudioDeviceError` (never renamed; new ones may be added)."""

    AUDIO_FILE_NOT_FOUND = "AUDIO_FILE_NOT_FOUND"
    AUDIO_FILE_INVALID = "AUDIO_FILE_INVALID"
    AUDIO_FILE_UNWRITABLE = "AUDIO_FILE_UNWRITABLE"
    AUDIO_DEVICE_FAILED = "AUDIO_DEVICE_FAILED"
    NO_MICROPHONE = "NO_MICROPHONE"  # no input device at all / no default input
    MICROPHONE_UNAVAILABLE = "MICROPHONE_UNAVAILABLE"  # exists but cannot be opened (busy...)
    NO_OUTPUT_DEVICE = "NO_OUTPUT_DEVICE"  # no output device at all / no default output
    OUTPUT_UNAVAILABLE = "OUTPUT_UNAVAILABLE"  # exists but cannot be opened
    DEVICE_NOT_FOUND = "DEVICE_NOT_FOUND"  # the index / name asked for matches nothing
    DEVICE_AMBIGUOUS = "DEVICE_AMBIGUOUS"  # the name asked for matches several devices
    DEVICE_SCAN_FAILED = "DEVICE_SCAN_FAILED"  # the rescan child process failed
    AUDIO_DEVICE_LOST = "AUDIO_DEVICE_LOST"  # a device in use disappeared (rescan)
    AUDIO_BACKEND_UNAVAILABLE = "AUDIO_BACKEND_UNAVAILABLE"  # PyAudio/PortAudio won't load


class AudioDeviceError(Exception):
    """An audio device could not be opened or failed; ``code`` is an :class:`AudioErrorCode`."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"AudioDeviceError({self.code!r}, {self.message!r})"


@dataclass(frozen=True, slots=True)
class DeviceStats:
    """Cumulative counters of one device since it was created."""

    frames_captured: int  # frames the device pushed into ``capture``
    frames_played: int  # real frames taken from ``playback`` (silence fill not counted)
    capture_dropped: int  # captured frames discarded because the engine fell 1 s behind
    playback_underruns: int  # times playout ran dry after it had started
    playback_dropped: int  # received frames discarded (overflow, catch-up after a stall)
    late_ticks: int = 0  # ticks skipped by a clock that fell too far behind (see subclasses)
    playback_late: int = 0  # frames that arrived after their playout slot
    playback_lost: int = 0  # frames that never arrived (sequence gaps)
    playback_concealed: int = 0  # frames synthesised by loss concealment
    playback_inserted: int = 0  # of which added on purpose to keep the playout delay
    playback_delay_ms: float = 0.0  # audio buffered for playout now
    playback_target_ms: float = 0.0  # the jitter buffer's adaptive target delay
    playback_jitter_ms: float = 0.0  # RFC 3550 interarrival jitter of received frames
    input_overflows: int = 0  # PortAudio input overflow flags (real devices)
    output_underflows: int = 0  # PortAudio output underflow flags (real devices)


class _State(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    STOPPED = "stopped"


class AudioDevice(abc.ABC):
    """Full-duplex 8 kHz mono ``int16`` endpoint in 20 ms frames, driven by its own thread.

    ``capture``: the device thread pushes captured frames (capacity 50 frames = 1 s; the
    oldest are dropped if the engine does not keep up). ``playback``: the engine pushes
    frames to play, the device thread pops one per tick (silence when empty; see
    :class:`~softphone.media.jitter.JitterBuffer`).

    The jitter buffer starts at ``prefill_frames`` of delay and adapts between
    ``min_delay_frames`` (or ``prefill_frames`` with ``fixed_delay``) and
    ``playback_capacity_frames`` (at most 200 ms).
    """

    def __init__(
        self,
        *,
        prefill_frames: int = 2,
        playback_capacity_frames: int = 25,
        fixed_delay: bool = False,
        min_delay_frames: int = 1,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.capture = FrameQueue(CAPTURE_CAPACITY_FRAMES)
        floor = max(prefill_frames, 1) if fixed_delay else max(min_delay_frames, 1)
        self.playback = JitterBuffer(
            frame_samples=FRAME_SAMPLES,
            frame_ms=FRAME_MS,
            start_delay_ms=max(prefill_frames, 1) * FRAME_MS,
            min_delay_ms=floor * FRAME_MS,
            max_delay_ms=min(max(playback_capacity_frames, 2) * FRAME_MS, 200),
            clock=clock or time.monotonic,
        )
        self.mixer = SoundMixer(frame_samples=FRAME_SAMPLES)
        """Local sounds (ringback, DTMF feedback, tests) mixed into what is played."""
        self.levels = LevelSlot()
        """Input level (before mute) and output level (after mixing), 0..1, per tick."""
        self.late_ticks = 0
        self.input_overflows = 0
        self.output_underflows = 0
        self._error: AudioDeviceError | None = None
        self._state = _State.NEW
        self._state_lock = threading.Lock()

    # -- engine side -------------------------------------------------------------------

    def start(self) -> None:
        """Start the device thread. No-op if running; ``RuntimeError`` after ``stop``."""
        with self._state_lock:
            if self._state is _State.RUNNING:
                return
            if self._state is _State.STOPPED:
                raise RuntimeError(f"{type(self).__name__} was stopped; create a new device")
            self._start_io()
            self._state = _State.RUNNING

    def stop(self) -> None:
        """Stop the device thread (joined with a timeout) and release resources. Idempotent."""
        with self._state_lock:
            if self._state is _State.STOPPED:
                return
            self._state = _State.STOPPED
            self._stop_io()

    @property
    def running(self) -> bool:
        """Started, not stopped, and no failure reported by the device thread."""
        return self._state is _State.RUNNING and self._error is None

    @property
    def error(self) -> AudioDeviceError | None:
        """The failure that ended the device thread, if any (usually ``AUDIO_DEVICE_FAILED``)."""
        return self._error

    def read_frame(self) -> NDArray[np.int16] | None:
        """Oldest captured frame not read yet, or ``None``. Never blocks.

        The frame may be read-only (shared silence, a view of a file): copy before editing.
        """
        return self.capture.pop()

    def write_frame(
        self, pcm: NDArray[np.int16], sequence: int | None = None, timestamp: int | None = None
    ) -> None:
        """Queue one 160-sample ``int16`` frame for playout (into the jitter buffer, which
        orders by ``sequence`` and adapts its delay to the arrival jitter). Never blocks."""
        self.playback.push(pcm, sequence, timestamp)

    def stats(self) -> DeviceStats:
        jb = self.playback.stats()
        return DeviceStats(
            frames_captured=self.capture.pushed,
            frames_played=jb.played,
            capture_dropped=self.capture.dropped,
            playback_underruns=jb.underruns,
            playback_dropped=jb.dropped,
            late_ticks=self.late_ticks,
            playback_late=jb.late,
            playback_lost=jb.lost,
            playback_concealed=jb.concealed,
            playback_inserted=jb.inserted,
            playback_delay_ms=jb.current_delay_ms,
            playback_target_ms=jb.target_delay_ms,
            playback_jitter_ms=jb.jitter_ms,
            input_overflows=self.input_overflows,
            output_underflows=self.output_underflows,
        )

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- backend side ------------------------------------------------------------------

    @abc.abstractmethod
    def _start_io(self) -> None:
        """Open the stream / start the device thread. Called once, under the state lock.

        Raise :class:`AudioDeviceError` if the device cannot be opened.
        """

    @abc.abstractmethod
    def _stop_io(self) -> None:
        """Stop the device thread and release every resource. Called once, under the state
        lock, also when the device was never started (to release what ``__init__`` opened).
        """

    def _exchange_frame(self, captured: NDArray[np.int16]) -> NDArray[np.int16]:
        """One device tick: hand over the captured frame, return the frame to play now
        (far-end audio from the jitter buffer with local sounds mixed in); update levels."""
        self.levels.write_input(frame_level(captured))
        self.capture.push(captured)
        out = self.mixer.mix(self.playback.pop())
        self.levels.write_output(frame_level(out))
        return out

    def _fail(self, message: str, code: str = AudioErrorCode.AUDIO_DEVICE_FAILED) -> None:
        """Record a failure of the device thread (first one wins). Does not log."""
        if self._error is None:
            self._error = AudioDeviceError(code, message)


class ClockedAudioDevice(AudioDevice):
    """Base of devices paced by a Python thread instead of sound card hardware.

    ``start`` runs a daemon thread that calls ``_tick`` every 20 ms on an absolute deadline
    schedule (``time.monotonic``; deadline += 20 ms), so timer jitter does not accumulate.
    If the thread falls more than 200 ms behind it resyncs to now instead of bursting the
    backlog, adding the skipped ticks to ``late_ticks``. With ``realtime=False`` ticks run
    back to back without waiting (same data, no pacing; the thread free-runs until
    ``stop``). Waiting is done on the stop event, so ``stop`` interrupts it at once.

    ``advance(n)`` runs ``n`` ticks synchronously in the caller's thread instead (lockstep
    tests and offline processing); it may not be mixed with a running clock thread.
    """

    thread_name = "audio-clock"

    def __init__(
        self,
        *,
        realtime: bool = True,
        prefill_frames: int = 2,
        playback_capacity_frames: int = 25,
        fixed_delay: bool = False,
    ) -> None:
        # Without real-time pacing (and with ``advance``) arrivals must be timed by the device's
        # own tick count, or the jitter buffer would read instant ticks as huge jitter.
        super().__init__(
            prefill_frames=prefill_frames,
            playback_capacity_frames=playback_capacity_frames,
            fixed_delay=fixed_delay,
            clock=None if realtime else (lambda: self.ticks * FRAME_MS / 1000),
        )
        self.realtime = realtime
        self.ticks = 0
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._release_lock = threading.Lock()
        self._released = False

    @abc.abstractmethod
    def _tick(self) -> None:
        """One 20 ms tick: push one frame to ``capture``, pop one from ``playback``."""

    def _release(self) -> None:
        """Free resources (e.g. finalise a recording). Called once, after the last tick."""

    def advance(self, ticks: int = 1) -> None:
        """Run ``ticks`` ticks now in the calling thread (only while the clock is not running)."""
        if self._state is not _State.NEW:
            raise RuntimeError("advance() only works on a device that was never started")
        for _ in range(ticks):
            self._tick()
            self.ticks += 1

    def _start_io(self) -> None:
        self._thread = threading.Thread(target=self._run, name=self.thread_name, daemon=True)
        self._thread.start()

    def _stop_io(self) -> None:
        self._stop_event.set()
        thread = self._thread
        if thread is not None:
            thread.join(STOP_JOIN_TIMEOUT)
            if thread.is_alive():
                # The thread releases the resources itself when its current tick returns.
                self._fail(f"{self.thread_name} thread did not stop within {STOP_JOIN_TIMEOUT} s")
                return
        self._release_once()

    def _release_once(self) -> None:
        with self._release_lock:
            if self._released:
                return
            self._released = True
        self._release()

    def _run(self) -> None:
        period = FRAME_MS / 1000
        stop = self._stop_event
        next_deadline = time.monotonic()
        try:
            while not stop.is_set():
                self._tick()
                self.ticks += 1
                if not self.realtime:
                    continue
                next_deadline += period
                delay = next_deadline - time.monotonic()
                if delay > 0:
                    if stop.wait(delay):
                        break
                elif delay < -MAX_CLOCK_LAG:
                    now = time.monotonic()
                    self.late_ticks += int((now - next_deadline) / period)
                    next_deadline = now
        except Exception as exc:
            self._fail(f"{self.thread_name} thread failed: {type(exc).__name__}: {exc}")
        finally:
            self._release_once()


class NullAudioDevice(ClockedAudioDevice):
    """Captures silence at real-time pace and discards playback (headless calls, no files)."""

    thread_name = "audio-null-clock"

    def __init__(
        self,
        *,
        realtime: bool = True,
        prefill_frames: int = 2,
        playback_capacity_frames: int = 25,
        fixed_delay: bool = False,
    ) -> None:
        super().__init__(
            realtime=realtime,
            prefill_frames=prefill_frames,
            playback_capacity_frames=playback_capacity_frames,
            fixed_delay=fixed_delay,
        )
        silence = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        silence.flags.writeable = False
        self._silence: NDArray[np.int16] = silence

    def _tick(self) -> None:
        self._exchange_frame(self._silence)
