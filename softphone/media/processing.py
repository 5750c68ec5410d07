"""Echo cancellation, noise suppression and automatic gain control of the captured audio.

The counterpart of the browser seed's ``audioConstraints`` (``echoCancellation``,
``noiseSuppression``, ``autoGainControl``): three switches, each changeable at run time.
The DSP is WebRTC's, through the ``pywebrtc-audio`` package (Apache-2.0 bindings of the
BSD-licensed WebRTC audio processing module; self-contained wheels for Linux x86_64 and
aarch64, macOS and Windows, CPython 3.10-3.14):

* echo cancellation: AEC3 (adaptive filter, delay estimator and echo suppressor) with its
  high-pass filter, ``pywebrtc_audio.EchoCanceller``;
* noise suppression: WebRTC NS, ``pywebrtc_audio.NoiseSuppressor`` (``ns_level`` 0-3 =
  6/12/18/21 dB of suppression; default 1, WebRTC's "moderate");
* automatic gain control: AGC2 adaptive digital gain with limiter and its own RNN voice
  activity detector, ``pywebrtc_audio.GainController`` (up to +50 dB, 5 dB headroom,
  at most 6 dB/s of gain change, starting at +15 dB).

They run in this order (as in WebRTC's APM) on 10 ms blocks at 16 kHz. The call is 8 kHz,
so each captured frame is upsampled to 16 kHz with :class:`~softphone.media.resampler.Resampler`
(and so is the far-end reference for the echo canceller), processed, and downsampled back;
the resampling pair adds 3.3 ms of delay, the noise suppressor about 6 ms and AEC3 about
8 ms more (measured end to end: AGC only 3.3 ms, NS 9.4 ms, AEC 11.3 ms, all 17.3 ms). The
components are used separately rather than through ``pywebrtc_audio.AudioProcessor`` so
that each switch is independent (turning noise suppression off does not reset the echo
canceller's state) and because that combined processor feeds AGC2 the noise
suppressor's speech probability, which with NS on left the gain stuck at its +15 dB
starting value in our measurements; with its own VAD, AGC2 adapts as intended.

Threading: this runs on the engine side (the asyncio loop, or a worker thread it
delegates to), never in the PortAudio callback. The library releases the GIL while it
processes. One :class:`AudioProcessor` per call; its methods may be called from several
threads (an internal lock serialises them), but they are meant for the engine's one.

If the library cannot be loaded, :class:`AudioProcessor` is still usable: ``available`` is
False, ``unavailable_reason`` says why, and every frame passes through unchanged.
"""

from __future__ import annotations

import importlib
import threading
import time
from collections import deque
from dataclasses import dataclass
from types import ModuleType
from typing import Final, Protocol

import numpy as np
from numpy.typing import NDArray

from softphone.media.resampler import Resampler

__all__ = [
    "PROCESSING_RATE",
    "AudioProcessingUnavailable",
    "AudioProcessor",
    "ProcessorStats",
    "load_backend",
]

PROCESSING_RATE: Final = 16000  # WebRTC's rate for 8 and 16 kHz calls
SUPPORTED_RATES: Final = (8000, 16000, 32000, 48000)
DEPENDENCY: Final = "pywebrtc-audio>=0.2,<0.3"
COST_WINDOW: Final = 500  # processed frames kept for the cost percentiles (10 s)

Frame = NDArray[np.int16]


# The parts of pywebrtc_audio used here. The package ships type stubs, but it is imported
# by name at run time (it may be missing), so its types are restated here.
class _EchoCanceller(Protocol):
    stream_delay_ms: int

    def process(self, near: Frame, far: Frame) -> Frame: ...


class _NoiseSuppressor(Protocol):
    @property
    def speech_probability(self) -> float: ...

    def process(self, audio: Frame) -> Frame: ...


class _GainController(Protocol):
    @property
    def gain_db(self) -> float: ...

    @property
    def speech_probability(self) -> float: ...

    def process(self, audio: Frame) -> Frame: ...


class AudioProcessingUnavailable(RuntimeError):
    """The echo canceller / noise suppressor / AGC library could not be loaded.

    ``reason`` is a one-line explanation for logs and the settings screen.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Backend:
    """The outcome of loading the library, cached for the life of the process."""

    lock = threading.Lock()
    module: ModuleType | None = None
    error: AudioProcessingUnavailable | None = None


def load_backend() -> ModuleType:
    """Import ``pywebrtc_audio`` once and check it works; raises AudioProcessingUnavailable.

    The result (module or failure) is cached for the life of the process.
    """
    with _Backend.lock:
        if _Backend.module is not None:
            return _Backend.module
        if _Backend.error is not None:
            raise _Backend.error
        try:
            pywebrtc_audio = importlib.import_module("pywebrtc_audio")
            # A smoke test: a broken native build fails here, not in the middle of a call.
            pywebrtc_audio.NoiseSuppressor(PROCESSING_RATE).process(
                np.zeros(PROCESSING_RATE // 100, dtype=np.int16)
            )
        except ImportError as exc:
            _Backend.error = AudioProcessingUnavailable(
                f"echo cancellation, noise suppression and AGC are off: the "
                f"'pywebrtc-audio' package is not installed ({exc}); "
                f"install {DEPENDENCY!r}"
            )
            raise _Backend.error from exc
        except Exception as exc:
            _Backend.error = AudioProcessingUnavailable(
                f"echo cancellation, noise suppression and AGC are off: 'pywebrtc-audio' "
                f"failed to load ({type(exc).__name__}: {exc})"
            )
            raise _Backend.error from exc
        _Backend.module = pywebrtc_audio
        return pywebrtc_audio


@dataclass(frozen=True, slots=True)
class ProcessorStats:
    """Counters and cost of one :class:`AudioProcessor` (cumulative since creation).

    Costs are wall-clock microseconds per captured frame that went through the DSP
    (resampling included), percentiles over the last 500 such frames (10 s). On a loaded
    machine wall time includes preemption; see benchmarks/bench_processing.py for CPU time.
    """

    capture_frames: int  # process_capture calls
    processed_frames: int  # of which went through the DSP (the rest passed through)
    render_frames: int  # render frames queued for the echo canceller
    render_dropped: int  # render frames discarded: more than max_render_backlog waiting
    render_missing: int  # captured frames echo-cancelled against silence (no render queued)
    cost_total_us: float
    cost_p50_us: float
    cost_p99_us: float
    cost_max_us: float


def _check_frame(frame: Frame, block: int, what: str) -> None:
    if not isinstance(frame, np.ndarray) or frame.dtype != np.int16 or frame.ndim != 1:
        got = f"{frame.dtype} {frame.shape}" if isinstance(frame, np.ndarray) else type(frame)
        raise ValueError(f"{what} needs a 1-D int16 frame, got {got}")
    if frame.size == 0 or frame.size % block:
        raise ValueError(
            f"{what} needs a whole number of 10 ms blocks ({block} samples), "
            f"got {frame.size} samples"
        )


class AudioProcessor:
    """Echo cancellation, noise suppression and AGC on the captured frames of one call.

    ``process_capture(frame)`` returns the processed captured frame (same length);
    ``process_render(frame)`` hands over each frame sent to the speaker, the echo
    canceller's reference. Frames are mono ``int16`` of 20 ms (any whole number of 10 ms
    blocks works) at ``rate`` (8000, 16000, 32000 or 48000 Hz).

    Render/capture pairing: render frames wait in a FIFO; each captured frame is
    processed together with the oldest waiting render frame (or silence if none is
    waiting: the far end sent nothing, so nothing was played). Call ``process_render``
    with the frames in the order they go to the playout buffer, one per frame; the delay
    between a frame's ``process_render`` and its echo in the capture (playout buffer,
    device latency, acoustics) is found by AEC3's delay estimator; ``stream_delay_ms`` is
    a hint for it. At most ``max_render_backlog`` frames wait (the oldest are dropped).

    Switches: setting ``echo_cancellation``, ``noise_suppression`` or ``auto_gain`` takes
    effect on the next frame. A component turned on starts fresh (the echo canceller
    re-converges within about a second; AGC starts again at +15 dB); the others keep
    their state. With all three off, or the library unavailable, frames pass through
    untouched (the very object is returned) at no cost.
    """

    def __init__(
        self,
        echo_cancellation: bool = True,
        noise_suppression: bool = True,
        auto_gain: bool = True,
        rate: int = 8000,
        *,
        ns_level: int = 1,
        stream_delay_ms: int = 0,
        max_render_backlog: int = 10,
    ) -> None:
        if rate not in SUPPORTED_RATES:
            raise ValueError(f"rate must be one of {SUPPORTED_RATES} Hz, got {rate!r}")
        if not 0 <= ns_level <= 3:
            raise ValueError(f"ns_level must be 0-3 (6/12/18/21 dB), got {ns_level}")
        if stream_delay_ms < 0:
            raise ValueError(f"stream_delay_ms must be >= 0, got {stream_delay_ms}")
        if max_render_backlog < 1:
            raise ValueError(f"max_render_backlog must be >= 1, got {max_render_backlog}")
        self.rate = rate
        self.ns_level = ns_level
        self.max_render_backlog = max_render_backlog
        self._proc_rate = PROCESSING_RATE if rate <= PROCESSING_RATE else rate
        self._block = rate // 100
        self._stream_delay_ms = stream_delay_ms
        self._lock = threading.Lock()
        self._want_aec = bool(echo_cancellation)
        self._want_ns = bool(noise_suppression)
        self._want_agc = bool(auto_gain)
        self._aec: _EchoCanceller | None = None
        self._ns: _NoiseSuppressor | None = None
        self._agc: _GainController | None = None
        self._up: Resampler | None = None
        self._render_up: Resampler | None = None
        self._down: Resampler | None = None
        self._render: deque[Frame] = deque()
        self._active = False  # the DSP path ran on the previous frame
        self._capture_frames = 0
        self._processed = 0
        self._render_frames = 0
        self._render_dropped = 0
        self._render_missing = 0
        self._cost_total_ns = 0
        self._costs = np.zeros(COST_WINDOW, dtype=np.float64)
        self._lib: ModuleType | None
        self.unavailable_reason: str | None
        try:
            self._lib = load_backend()
            self.unavailable_reason = None
        except AudioProcessingUnavailable as exc:
            self._lib = None
            self.unavailable_reason = exc.reason
        with self._lock:
            self._configure()

    # -- switches -------------------------------------------------------------------------

    @property
    def available(self) -> bool:
        """True when the DSP library works; False: pass-through, see ``unavailable_reason``."""
        return self._lib is not None

    @property
    def echo_cancellation(self) -> bool:
        return self._want_aec

    @echo_cancellation.setter
    def echo_cancellation(self, on: bool) -> None:
        with self._lock:
            self._want_aec = bool(on)
            self._configure()

    @property
    def noise_suppression(self) -> bool:
        return self._want_ns

    @noise_suppression.setter
    def noise_suppression(self, on: bool) -> None:
        with self._lock:
            self._want_ns = bool(on)
            self._configure()

    @property
    def auto_gain(self) -> bool:
        return self._want_agc

    @auto_gain.setter
    def auto_gain(self, on: bool) -> None:
        with self._lock:
            self._want_agc = bool(on)
            self._configure()

    @property
    def stream_delay_ms(self) -> int:
        """Hint for AEC3: delay from ``process_render`` to the echo in the capture (0 = unknown)."""
        return self._stream_delay_ms

    @stream_delay_ms.setter
    def stream_delay_ms(self, value: int) -> None:
        if value < 0:
            raise ValueError(f"stream_delay_ms must be >= 0, got {value}")
        with self._lock:
            self._stream_delay_ms = int(value)
            if self._aec is not None:
                self._aec.stream_delay_ms = self._stream_delay_ms

    @property
    def active(self) -> bool:
        """True when frames go through the DSP: library available and a switch on."""
        return self._lib is not None and (self._want_aec or self._want_ns or self._want_agc)

    @property
    def agc_gain_db(self) -> float | None:
        """Gain the AGC applied to the last frame, in dB (None when AGC is off)."""
        agc = self._agc
        return None if agc is None else float(agc.gain_db)

    @property
    def speech_probability(self) -> float | None:
        """Speech probability (0..1) of the last frame, from NS or AGC (None if both off)."""
        if self._ns is not None:
            return float(self._ns.speech_probability)
        if self._agc is not None:
            return float(self._agc.speech_probability)
        return None

    def _configure(self) -> None:
        """Create / drop components to match the switches. Call with ``_lock`` held."""
        lib = self._lib
        if lib is None:
            return
        rate = self._proc_rate
        if self._want_aec and self._aec is None:
            self._aec = lib.EchoCanceller(rate, stream_delay_ms=self._stream_delay_ms)
            self._render.clear()
            self._render_up = self._resampler(self.rate, rate)
        elif not self._want_aec and self._aec is not None:
            self._aec = None
            self._render.clear()
            self._render_up = None
        if self._want_ns and self._ns is None:
            self._ns = lib.NoiseSuppressor(rate, level=self.ns_level)
        elif not self._want_ns:
            self._ns = None
        if self._want_agc and self._agc is None:
            self._agc = lib.GainController(rate)
        elif not self._want_agc:
            self._agc = None

    @staticmethod
    def _resampler(from_rate: int, to_rate: int) -> Resampler | None:
        return None if from_rate == to_rate else Resampler(from_rate, to_rate)

    # -- audio ----------------------------------------------------------------------------

    def process_render(self, frame: Frame) -> None:
        """Queue a frame sent to the speaker as the echo reference (copied). No-op unless
        echo cancellation is on and available."""
        if not self._want_aec or self._lib is None:
            return
        _check_frame(frame, self._block, "process_render")
        copy = frame.copy()
        with self._lock:
            if self._aec is None:  # switched off (or failed) meanwhile
                return
            self._render.append(copy)
            self._render_frames += 1
            while len(self._render) > self.max_render_backlog:
                self._render.popleft()
                self._render_dropped += 1

    def process_capture(self, frame: Frame) -> Frame:
        """Process one captured frame; returns the processed frame (a new array), or
        ``frame`` itself when nothing is switched on or the library is unavailable."""
        self._capture_frames += 1
        if not self.active:
            self._active = False
            return frame
        _check_frame(frame, self._block, "process_capture")
        start = time.perf_counter_ns()
        with self._lock:
            if not self._active:
                # Resume (or start) the DSP path: resampler histories from before are stale.
                self._up = self._resampler(self.rate, self._proc_rate)
                self._down = self._resampler(self._proc_rate, self.rate)
                if self._render_up is not None:
                    self._render_up = self._resampler(self.rate, self._proc_rate)
                self._active = True
            try:
                out = self._run(frame)
            except Exception as exc:  # keep the call's audio going whatever the library does
                self._fail(f"{type(exc).__name__}: {exc}")
                return frame
            self._processed += 1
            cost = time.perf_counter_ns() - start
            self._cost_total_ns += cost
            self._costs[(self._processed - 1) % COST_WINDOW] = cost / 1000.0
        return out

    def _run(self, frame: Frame) -> Frame:
        x = frame if self._up is None else self._up.process(frame)
        aec = self._aec
        if aec is not None:
            if self._render:
                far = self._render.popleft()
            else:
                far = np.zeros(frame.size, dtype=np.int16)
                self._render_missing += 1
            if far.size != frame.size:  # a render frame of another length: use silence
                far = np.zeros(frame.size, dtype=np.int16)
            if self._render_up is not None:
                far = self._render_up.process(far)
            x = aec.process(x, far)
        if self._ns is not None:
            x = self._ns.process(x)
        if self._agc is not None:
            x = self._agc.process(x)
        return x if self._down is None else self._down.process(x)

    def _fail(self, what: str) -> None:
        """The library failed mid-call: switch to pass-through for good. ``_lock`` held."""
        self.unavailable_reason = (
            f"echo cancellation, noise suppression and AGC are off: the library failed "
            f"while processing ({what})"
        )
        self._lib = None
        self._aec = self._ns = self._agc = None
        self._render.clear()
        self._active = False

    def reset(self) -> None:
        """Start every enabled component afresh (e.g. after the audio device changed)."""
        with self._lock:
            self._aec = self._ns = self._agc = None
            self._render.clear()
            self._active = False
            self._configure()

    @property
    def stats(self) -> ProcessorStats:
        with self._lock:
            n = min(self._processed, COST_WINDOW)
            costs = self._costs[:n].copy()
            snapshot = (
                self._capture_frames,
                self._processed,
                self._render_frames,
                self._render_dropped,
                self._render_missing,
                self._cost_total_ns / 1000.0,
            )
        if n:
            p50, p99 = (float(v) for v in np.percentile(costs, [50, 99]))
            cmax = float(costs.max())
        else:
            p50 = p99 = cmax = 0.0
        return ProcessorStats(*snapshot, cost_p50_us=p50, cost_p99_us=p99, cost_max_us=cmax)

    def __repr__(self) -> str:
        state = (
            f"aec={self._want_aec}, ns={self._want_ns}, agc={self._want_agc}"
            if self.available
            else f"unavailable: {self.unavailable_reason}"
        )
        return f"AudioProcessor({self.rate} Hz, {state})"
