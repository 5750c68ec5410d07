"""A sound card device through PortAudio (PyAudio), in callback mode.

:class:`PyAudioDevice` opens two PortAudio streams, one for the microphone and one for the
speaker, so input and output may be different devices (a USB headset's microphone with the
laptop speakers), each at its device's own default rate (8, 16, 44.1, 48 kHz...) with
``rate * frame_ms / 1000`` samples per buffer, 16-bit, mono when the device allows it.

The callbacks run on PortAudio's threads and take the GIL, so they only move data:

* input: bytes -> ``int16`` view -> downmix to mono -> ``Resampler(device rate -> 8000)`` ->
  cut into 160-sample frames (a 20 ms buffer at 44.1 kHz is 882 samples, which becomes
  exactly 160; a small preallocated accumulator covers other sizes) -> level ->
  ``capture.push``.
* output: for each 20 ms needed: ``playback.pop()`` -> ``mixer.mix`` -> level ->
  ``Resampler(8000 -> device rate)`` -> copy to every channel -> bytes.

No logging, no blocking, no I/O, no allocation beyond the few-kilobyte arrays of one
buffer (the 160-sample frames handed to ``capture``, the resampler's output, the bytes
returned to PortAudio): an exception is caught, recorded with ``_fail``
(``AUDIO_DEVICE_FAILED``) and ends the stream (``paComplete``). PortAudio's status flags
(input overflow, output underflow...), callback errors and callback durations are counted
(:meth:`PyAudioDevice.realtime_stats`).

:meth:`PyAudioDevice.switch_input` / :meth:`PyAudioDevice.switch_output` change a device
during a call: the new stream is opened and started first (its callbacks idle until it
delivers, or for an output until its priming burst is over), then the data path is swapped
in one step, then the old stream is closed, so the other direction never stops, capture
continues with a gap of about one buffer and playout resumes exactly where it was.

PortAudio, ALSA and JACK diagnostics never reach fd 2: stream opening and closing run in
:func:`~softphone.media.devices.quiet_stderr`, and alsa-lib's runtime messages (xrun
recoveries) go to a counting handler (:func:`~softphone.media.devices.alsa_message_count`).
"""

from __future__ import annotations

import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Final, Literal

import numpy as np
from numpy.typing import NDArray

from softphone.media.device import (
    FRAME_MS,
    FRAME_SAMPLES,
    SAMPLE_RATE,
    AudioDevice,
    AudioDeviceError,
    AudioErrorCode,
)
from softphone.media.devices import (
    MICROPHONE_UNAVAILABLE,
    OUTPUT_UNAVAILABLE,
    AudioSystem,
    DeviceInfo,
    DeviceSpec,
    load_pyaudio,
    pa_error_text,
    quiet_stderr,
    server_converts_rate,
)
from softphone.media.levels import LevelSlot, frame_level
from softphone.media.resampler import Resampler
from softphone.media.tones import SoundMixer

__all__ = ["PyAudioDevice", "RealtimeStats"]

ALSA_CARD_RATE: Final = 48000
"""The rate ``rate="auto"`` opens an ALSA sound card at when it takes it (see ``rate``)."""
SOUND_CARD_MIN_DELAY_FRAMES: Final = 2
"""Floor of the playout delay on a sound card (40 ms; see PyAudioDevice(min_delay_frames))."""
GIL_SWITCH_INTERVAL: Final = 0.001  # seconds; see PyAudioDevice(switch_interval=...)
SWITCH_START_TIMEOUT: Final = 2.0  # seconds a new stream may take to deliver its first callback
TIMING_WINDOW: Final = 4096  # callback durations kept per direction for the percentiles

Frame = NDArray[np.int16]
Direction = Literal["input", "output"]


class _SwitchInterval:
    """Lowers ``sys.setswitchinterval`` while any device runs; restores it after the last.

    Why: a callback waiting for the GIL behind a CPU-bound Python thread waits up to one
    switch interval, and it gives the GIL up inside every numpy call on more than a few
    hundred samples. With Python's 5 ms default, a callback under load measured p99 16 ms
    and max 50-120 ms (20 ms buffers: output underflows); with 1 ms, p99 4 ms, max 9 ms,
    no underflow (benchmarks/bench_audio_realtime.py).
    """

    lock = threading.Lock()
    users = 0
    saved: float | None = None
    value = 0.0

    @classmethod
    def acquire(cls, target: float) -> None:
        with cls.lock:
            if cls.users == 0:
                current = sys.getswitchinterval()
                cls.saved = current if current > target else None
                if cls.saved is not None:
                    sys.setswitchinterval(target)
                cls.value = sys.getswitchinterval()
            cls.users += 1

    @classmethod
    def release(cls) -> None:
        with cls.lock:
            cls.users = max(0, cls.users - 1)
            if cls.users == 0 and cls.saved is not None:
                if sys.getswitchinterval() == cls.value:  # nobody else changed it meanwhile
                    sys.setswitchinterval(cls.saved)
                cls.saved = None


@dataclass(frozen=True, slots=True)
class RealtimeStats:
    """PortAudio-side health of a :class:`PyAudioDevice` (cumulative since creation)."""

    pa_input_overflows: int  # paInputOverflow: captured audio lost before the callback ran
    pa_input_underflows: int  # paInputUnderflow
    pa_output_underflows: int  # paOutputUnderflow: the card played a gap (callback too late)
    pa_output_overflows: int  # paOutputOverflow
    callback_errors: int  # exceptions caught in a callback (each ends its stream)
    max_callback_us: float  # longest callback since creation
    p99_callback_us: float  # 99th percentile over the last callbacks of both directions
    input_callbacks: int
    output_callbacks: int
    input_rate: int  # current device rates (0 before start)
    output_rate: int
    input_switches: int
    output_switches: int
    duplex: bool = False  # both directions run in one full-duplex stream now


class _Path:
    """One PortAudio stream with its conversion state. Replaced whole by a switch."""

    def __init__(
        self, device: PyAudioDevice, info: DeviceInfo, rate: int, channels: int, frame_ms: int
    ) -> None:
        self.device = device
        self.info = info
        self.rate = rate
        self.channels = channels
        self.frames_per_buffer = max(1, rate * frame_ms // 1000)
        self.stream: Any = None
        self.partner: _Path | None = None  # the other direction of a full-duplex stream
        self.active = False  # False: warm-up (new stream) or retired (old stream)
        self.started = threading.Event()  # set by the first callback
        self.paced = threading.Event()  # set once callbacks come at the stream's pace
        self.last_idle_ns = 0  # perf_counter_ns of the previous callback while inactive
        self.half_period_ns = frame_ms * 500_000
        self.timings = np.zeros(TIMING_WINDOW, dtype=np.float64)  # durations, µs
        self.starts = np.zeros(TIMING_WINDOW, dtype=np.int64)  # perf_counter_ns at entry
        self.timing_count = 0

    def callback(self, in_data: bytes | None, frame_count: int, time_info: Any, status: int) -> Any:
        """PortAudio's stream callback (runs on PortAudio's thread)."""
        raise NotImplementedError

    def _timed(self, t0: int) -> float:
        us = (time.perf_counter_ns() - t0) / 1000.0
        slot = self.timing_count % TIMING_WINDOW
        self.timings[slot] = us
        self.starts[slot] = t0
        self.timing_count += 1
        dev = self.device
        dev.max_callback_us = max(dev.max_callback_us, us)
        return us


class _InputPath(_Path):
    def __init__(
        self, device: PyAudioDevice, info: DeviceInfo, rate: int, channels: int, frame_ms: int
    ) -> None:
        super().__init__(device, info, rate, channels, frame_ms)
        self.resampler = Resampler(rate, SAMPLE_RATE)
        self.acc = np.zeros(FRAME_SAMPLES, dtype=np.int16)
        self.fill = 0
        self.mix = np.zeros(self.frames_per_buffer, dtype=np.int32) if channels > 1 else None

    def callback(self, in_data: bytes | None, frame_count: int, time_info: Any, status: int) -> Any:
        t0 = time.perf_counter_ns()
        dev = self.device
        result = dev.pa_continue
        try:
            if status:
                dev._count_status(status)
            if not self.started.is_set():
                self.started.set()
            if self.active and in_data:
                self._convert(in_data)
        except Exception as exc:
            dev._callback_failed("input", exc)
            result = dev.pa_complete
        dev.input_callbacks += 1
        self._timed(t0)
        return (None, result)

    def _convert(self, in_data: bytes) -> None:
        samples = np.frombuffer(in_data, dtype=np.int16)
        channels = self.channels
        if channels > 1:
            n = samples.size // channels
            acc32 = self.mix
            if acc32 is None or acc32.size < n:
                acc32 = self.mix = np.zeros(n, dtype=np.int32)
            frames = samples[: n * channels].reshape(n, channels)
            total = acc32[:n]
            np.sum(frames, axis=1, dtype=np.int32, out=total)
            samples = (total // channels).astype(np.int16)
        converted = self.resampler.process(samples)
        n = converted.size
        acc = self.acc
        fill = self.fill
        pos = 0
        while pos < n:
            take = min(FRAME_SAMPLES - fill, n - pos)
            acc[fill : fill + take] = converted[pos : pos + take]
            fill += take
            pos += take
            if fill == FRAME_SAMPLES:
                self.device._deliver(acc.copy())
                fill = 0
        self.fill = fill


class _OutputPath(_Path):
    def __init__(
        self, device: PyAudioDevice, info: DeviceInfo, rate: int, channels: int, frame_ms: int
    ) -> None:
        super().__init__(device, info, rate, channels, frame_ms)
        self.resampler = Resampler(SAMPLE_RATE, rate)
        # Device samples per 8 kHz frame, rounded up (882 at 44.1 kHz, 960 at 48 kHz).
        self.per_frame = -(-FRAME_SAMPLES * rate // SAMPLE_RATE)
        # One buffer, plus carry-over and resampler burst slack.
        self.buf = np.zeros(self.frames_per_buffer + 4 * self.per_frame + 64, dtype=np.int16)
        self.fill = 0
        self.silence = bytes(2 * channels * self.frames_per_buffer)

    def callback(self, in_data: bytes | None, frame_count: int, time_info: Any, status: int) -> Any:
        t0 = time.perf_counter_ns()
        dev = self.device
        result = dev.pa_continue
        try:
            if status:
                dev._count_status(status)
            if not self.started.is_set():
                self.started.set()
            if self.active:
                data = self._render(frame_count)
            else:
                # A new stream first primes the device buffer with a burst of callbacks;
                # taking over during the burst would drain the jitter buffer at once.
                if self.last_idle_ns and t0 - self.last_idle_ns >= self.half_period_ns:
                    self.paced.set()
                self.last_idle_ns = t0
                data = self._silence(frame_count)
        except Exception as exc:
            dev._callback_failed("output", exc)
            result = dev.pa_complete
            data = self._silence(frame_count)
        dev.output_callbacks += 1
        self._timed(t0)
        return (data, result)

    def _silence(self, frame_count: int) -> bytes:
        size = 2 * self.channels * frame_count
        return self.silence if size == len(self.silence) else bytes(size)

    def _render(self, need: int) -> bytes:
        dev = self.device
        buf = self.buf
        if buf.size < need + 4 * self.per_frame:  # PortAudio asked for more than planned
            grown = np.zeros(2 * need + buf.size, dtype=np.int16)
            grown[: self.fill] = buf[: self.fill]
            buf = self.buf = grown
        fill = self.fill
        pops = 0
        max_pops = need // self.per_frame + 4  # bound: a resampler withholding output
        while fill < need and pops < max_pops:
            frame = dev._next_playback_frame()
            out = self.resampler.process(frame)
            k = min(out.size, buf.size - fill)
            buf[fill : fill + k] = out[:k]
            fill += k
            pops += 1
        if fill < need:  # only if the resampler withheld output: pad, never block
            buf[fill:need] = 0
            fill = need
        block = buf[:need]
        channels = self.channels
        data = block.tobytes() if channels == 1 else np.repeat(block, channels).tobytes()
        rest = fill - need
        if rest:
            buf[:rest] = buf[need:fill]
        self.fill = rest
        return data


class _Duplex:
    """The callback of one full-duplex PortAudio stream serving both paths.

    Each half does what its simplex callback does; a half whose path was retired (its
    direction switched to another device) is skipped: the input is ignored, silence is
    played. Timings go to both paths (same callback).

    PortAudio starts a duplex stream's output empty (a simplex output stream is primed
    first), so the very first callback may carry ``paOutputUnderflow`` although nothing
    has been played yet: that one is counted in ``start_underflows``, not as a gap."""

    def __init__(self, inp: _InputPath, out: _OutputPath) -> None:
        self.inp = inp
        self.out = out
        self.first = True

    def callback(self, in_data: bytes | None, frame_count: int, time_info: Any, status: int) -> Any:
        inp, out = self.inp, self.out
        t0 = time.perf_counter_ns()
        dev = inp.device
        result = dev.pa_continue
        try:
            if self.first:
                self.first = False
                if status & dev._flags[2]:  # paOutputUnderflow before anything was played
                    status &= ~dev._flags[2]
                    dev.start_underflows += 1
            if status:
                dev._count_status(status)
            if not inp.started.is_set():
                inp.started.set()
                out.started.set()
            if inp.active and in_data:
                inp._convert(in_data)
            data = out._render(frame_count) if out.active else out._silence(frame_count)
        except Exception as exc:
            dev._callback_failed("input and output", exc)
            result = dev.pa_complete
            data = out._silence(frame_count)
        dev.input_callbacks += 1
        dev.output_callbacks += 1
        inp._timed(t0)
        out._timed(t0)
        return (data, result)


class PyAudioDevice(AudioDevice):
    """Full-duplex 8 kHz device on real sound cards through PortAudio callbacks.

    * ``system``: the process's :class:`AudioSystem`.
    * ``input`` / ``output``: which devices (``None`` = system default, index, exact name
      or unique part of a name). Resolved here: ``NO_MICROPHONE``, ``NO_OUTPUT_DEVICE``,
      ``DEVICE_NOT_FOUND``, ``DEVICE_AMBIGUOUS`` are raised by the constructor;
      ``MICROPHONE_UNAVAILABLE`` / ``OUTPUT_UNAVAILABLE`` (busy device, unsupported rate,
      with PortAudio's text) by :meth:`start` when the streams are opened.
    * ``frame_ms``: PortAudio buffer length (20 ms: shorter buffers overrun when another
      Python thread is busy, see the reference figures).
    * ``rate``: ``None``: each device at its default rate; a number: both streams at this
      rate (for example 48000 where a PulseAudio device reports 44100; 8000 to skip
      resampling); ``"auto"``: 8000 on a sound server's device, where the server converts
      anyway (:func:`~softphone.media.devices.server_converts_rate`); 48000 on another
      ALSA device that takes it (``ALSA_CARD_RATE``): PortAudio reports 44100 for any ALSA
      device that accepts it (it tries 44100 first), not the hardware's own rate, while
      48 kHz is the rate of nearly every current codec and USB headset (some take nothing
      else, and ALSA's ``plug`` would convert linearly) and six times the call's 8 kHz, so
      the callbacks' resampler works from tables 20 times smaller (35 KiB against
      737 KiB at 44.1 kHz: 128 against 166 µs per frame from cold caches, measured);
      else (other host APIs, which report the device's real rate; a server or card
      refusing the rate) the device's default rate.
    * ``mixer`` / ``levels``: replace the device's own ``SoundMixer`` / ``LevelSlot`` (see
      :class:`AudioDevice`): the mixer's ``mix`` runs on every frame about to be played;
      the slot gets the level of every captured frame (before any mute, which the engine
      applies) and of every played frame (after mixing).
    * ``prefill_frames``, ``playback_capacity_frames``, ``fixed_delay``: the jitter
      buffer's start delay, maximum delay and "no adaptation below the start delay"
      (see :class:`AudioDevice`).
    * ``switch_interval``: while the streams run, the interpreter's GIL switch interval is
      lowered to this (1 ms; Python's default is 5 ms) and restored after the last device
      stops, so callbacks do not wait behind CPU-bound Python threads. ``None``: leave it.
    * ``duplex``: when the microphone and the speaker are one device (one clock) opened at
      one rate, run them as a single full-duplex PortAudio stream: one callback per period
      does both directions, so the process wakes once per period for its audio instead of
      twice at unrelated instants (measured: 0.7-1.5 % of a core less in a call; see
      docs/performance.md). If the device refuses a duplex stream, two streams are opened
      as for two devices. A direction switched later gets its own stream; the duplex
      stream keeps serving the other one until it is switched or the device stops.
    """

    def __init__(
        self,
        system: AudioSystem,
        input: DeviceSpec = None,
        output: DeviceSpec = None,
        *,
        frame_ms: int = FRAME_MS,
        rate: int | Literal["auto"] | None = None,
        mixer: SoundMixer | None = None,
        levels: LevelSlot | None = None,
        prefill_frames: int = 2,
        playback_capacity_frames: int = 25,
        fixed_delay: bool = False,
        min_delay_frames: int = SOUND_CARD_MIN_DELAY_FRAMES,
        switch_interval: float | None = GIL_SWITCH_INTERVAL,
        duplex: bool = True,
    ) -> None:
        if not 5 <= frame_ms <= 200:
            raise ValueError(f"frame_ms must be between 5 and 200, got {frame_ms}")
        if isinstance(rate, str) and rate != "auto":
            raise ValueError(f"rate must be a number of Hz, 'auto' or None, got {rate!r}")
        if isinstance(rate, int) and rate < SAMPLE_RATE:
            raise ValueError(f"rate must be at least {SAMPLE_RATE} Hz, got {rate}")
        super().__init__(
            prefill_frames=prefill_frames,
            playback_capacity_frames=playback_capacity_frames,
            fixed_delay=fixed_delay,
            min_delay_frames=min_delay_frames,
        )
        module = load_pyaudio()
        self.system = system
        self.frame_ms = frame_ms
        self.rate = rate
        if mixer is not None:
            self.mixer = mixer
        if levels is not None:
            self.levels = levels
        self.switch_interval = switch_interval
        self.duplex = duplex
        self.duplex_refused: str | None = None
        """Why the device refused a full-duplex stream (two streams run instead), if it did."""
        self.pa_continue: int = int(module.paContinue)
        self.pa_complete: int = int(module.paComplete)
        self._flags = (
            int(module.paInputOverflow),
            int(module.paInputUnderflow),
            int(module.paOutputUnderflow),
            int(module.paOutputOverflow),
        )
        self._pa_int16: int = int(module.paInt16)
        self.input_info: DeviceInfo = system.find_input(input)
        self.output_info: DeviceInfo = system.find_output(output)
        self._input: _InputPath | None = None
        self._output: _OutputPath | None = None
        self._io_lock = threading.Lock()  # start/stop/switch, never taken by callbacks
        self._io_open = False
        self.pa_input_underflows = 0
        self.pa_output_overflows = 0
        self.start_underflows = 0  # see _Duplex
        self.callback_errors = 0
        self.max_callback_us = 0.0
        self.input_callbacks = 0
        self.output_callbacks = 0
        self.input_switches = 0
        self.output_switches = 0

    # -- engine / UI side ----------------------------------------------------------------

    @property
    def input_name(self) -> str:
        return self.input_info.name

    @property
    def output_name(self) -> str:
        return self.output_info.name

    @property
    def active_names(self) -> tuple[str, str]:
        """Names of the devices in use, for ``AudioSystem.rescan(active=...)``."""
        return (self.input_info.name, self.output_info.name)

    @property
    def input_rate(self) -> int:
        path = self._input
        return path.rate if path is not None else 0

    @property
    def output_rate(self) -> int:
        path = self._output
        return path.rate if path is not None else 0

    def callback_log(self, direction: Direction) -> tuple[NDArray[np.int64], int, int]:
        """Diagnostics of the current stream of ``direction``: the ``time.perf_counter_ns()``
        at the start of each of its first callbacks (up to 4096; callback ``n`` carries
        samples ``n * frames_per_buffer`` onwards), its ``frames_per_buffer`` and its rate.
        Benchmarks use it to put capture and playback on one timeline."""
        path = self._input if direction == "input" else self._output
        if path is None:
            return np.zeros(0, dtype=np.int64), 0, 0
        count = min(path.timing_count, TIMING_WINDOW)
        return path.starts[:count].copy(), path.frames_per_buffer, path.rate

    def latency(self) -> tuple[float, float]:
        """PortAudio's reported (input, output) stream latency in seconds (0 when closed)."""
        result = []
        for path, getter in (
            (self._input, "get_input_latency"),
            (self._output, "get_output_latency"),
        ):
            stream = path.stream if path is not None else None
            try:
                result.append(float(getattr(stream, getter)()) if stream is not None else 0.0)
            except (OSError, AttributeError):
                result.append(0.0)
        return (result[0], result[1])

    def realtime_stats(self) -> RealtimeStats:
        timings = [
            p.timings[: min(p.timing_count, TIMING_WINDOW)]
            for p in (self._input, self._output)
            if p is not None
        ]
        joined = np.concatenate(timings) if timings else np.zeros(0)
        p99 = float(np.percentile(joined, 99)) if joined.size else 0.0
        return RealtimeStats(
            pa_input_overflows=self.input_overflows,
            pa_input_underflows=self.pa_input_underflows,
            pa_output_underflows=self.output_underflows,
            pa_output_overflows=self.pa_output_overflows,
            callback_errors=self.callback_errors,
            max_callback_us=self.max_callback_us,
            p99_callback_us=p99,
            input_callbacks=self.input_callbacks,
            output_callbacks=self.output_callbacks,
            input_rate=self.input_rate,
            output_rate=self.output_rate,
            input_switches=self.input_switches,
            output_switches=self.output_switches,
            duplex=self.running_duplex,
        )

    @property
    def running_duplex(self) -> bool:
        """True while both directions run in one full-duplex PortAudio stream."""
        inp, out = self._input, self._output
        return inp is not None and out is not None and inp.partner is out and inp.stream is not None

    def switch_input(self, spec: DeviceSpec) -> DeviceInfo:
        """Use another microphone from now on, without interrupting the call.

        Blocking (opens a stream, waits for its first callback): call it from a worker
        thread. On error (``DEVICE_NOT_FOUND``, ``MICROPHONE_UNAVAILABLE``...) the current
        microphone stays in use. Before ``start`` it only changes what ``start`` opens.
        """
        return self._switch("input", spec)

    def switch_output(self, spec: DeviceSpec) -> DeviceInfo:
        """Use another speaker/headset from now on, without interrupting the call.

        Same rules as :meth:`switch_input`; errors are ``OUTPUT_UNAVAILABLE`` and friends.
        Playback resumes on the new device where it stopped on the old one (the playout
        buffer is kept); at most a fraction of a frame already resampled is lost.
        """
        return self._switch("output", spec)

    def _switch(self, direction: Direction, spec: DeviceSpec) -> DeviceInfo:
        """Open the new stream, make it the active one, then close the old one."""
        find = self.system.find_input if direction == "input" else self.system.find_output
        info = find(spec)
        with self._io_lock:
            if not self._io_open:
                if direction == "input":
                    self.input_info = info
                else:
                    self.output_info = info
                return info
            new: _Path
            if direction == "input":
                new = self._open_input(info)
                self._activate(new, direction)
                old: _Path | None = self._input
                self._input = new
                self.input_info = info
                self.input_switches += 1
            else:
                new = self._open_output(info)
                self._activate(new, direction)
                old = self._output
                self._output = new
                self.output_info = info
                self.output_switches += 1
            if old is not None:
                old.active = False
            new.active = True
            self._close_path(old)
        return info

    # -- AudioDevice backend ---------------------------------------------------------------

    def _start_io(self) -> None:
        with self._io_lock:
            if not self._start_duplex():
                self._start_simplex()
            self._io_open = True
            if self.switch_interval is not None:
                _SwitchInterval.acquire(self.switch_interval)

    def _start_simplex(self) -> None:
        """Open and start one stream per direction. Called with ``_io_lock`` held."""
        inp = self._open_input(self.input_info)
        try:
            out = self._open_output(self.output_info)
        except BaseException:
            self._close_path(inp)
            raise
        inp.active = out.active = True
        self._input, self._output = inp, out
        try:
            self._start_stream(out, "output")
            self._start_stream(inp, "input")
        except BaseException:
            self._input = self._output = None
            self._close_path(inp)
            self._close_path(out)
            raise

    def _start_duplex(self) -> bool:
        """Open and start one full-duplex stream if the device allows; False: use two.
        Called with ``_io_lock`` held."""
        if not self.duplex or self.input_info.index != self.output_info.index:
            return False
        in_rate, in_channels = self._format_for(self.input_info, "input")
        out_rate, out_channels = self._format_for(self.output_info, "output")
        if in_rate != out_rate or in_channels != out_channels:  # PyAudio takes one of each
            return False
        inp = _InputPath(self, self.input_info, in_rate, in_channels, self.frame_ms)
        out = _OutputPath(self, self.output_info, out_rate, out_channels, self.frame_ms)
        inp.partner, out.partner = out, inp
        pa = self.system.pyaudio
        try:
            with quiet_stderr():
                stream = pa.open(
                    rate=in_rate,
                    format=self._pa_int16,
                    channels=in_channels,
                    input=True,
                    output=True,
                    input_device_index=self.input_info.index,
                    output_device_index=self.output_info.index,
                    frames_per_buffer=inp.frames_per_buffer,
                    stream_callback=_Duplex(inp, out).callback,
                    start=False,
                )
        except (OSError, ValueError) as exc:
            self.duplex_refused = pa_error_text(exc)  # two streams instead
            return False
        self.system.stream_opened()
        inp.stream = out.stream = stream
        inp.active = out.active = True
        try:
            self._start_stream(inp, "input")
        except AudioDeviceError as exc:
            inp.active = out.active = False
            self._close_path(inp)
            self._close_path(out)
            self.duplex_refused = exc.message  # two streams instead
            return False
        self._input, self._output = inp, out
        return True

    def _stop_io(self) -> None:
        with self._io_lock:
            if self._io_open and self.switch_interval is not None:
                _SwitchInterval.release()
            self._io_open = False
            paths = (self._input, self._output)
            for path in paths:
                if path is not None:
                    path.active = False
            for path in paths:
                self._close_path(path)

    # -- stream handling ---------------------------------------------------------------------

    def _open_input(self, info: DeviceInfo) -> _InputPath:
        rate, channels = self._format_for(info, "input")
        path = _InputPath(self, info, rate, channels, self.frame_ms)
        self._open_stream(path, "input")
        return path

    def _open_output(self, info: DeviceInfo) -> _OutputPath:
        rate, channels = self._format_for(info, "output")
        path = _OutputPath(self, info, rate, channels, self.frame_ms)
        self._open_stream(path, "output")
        return path

    def _format_for(self, info: DeviceInfo, direction: Direction) -> tuple[int, int]:
        """The rate and channel count to open ``info`` with (see ``rate``)."""
        native = round(info.default_sample_rate)
        if isinstance(self.rate, int):
            return self.rate, self._channels_for(info, self.rate, direction)
        if self.rate == "auto":
            if server_converts_rate(info):
                wanted = SAMPLE_RATE  # the server converts: nothing to resample here
            elif info.host_api == "ALSA":
                wanted = ALSA_CARD_RATE  # what the card most likely runs at
            else:
                wanted = native
            if wanted != native:
                try:
                    return wanted, self._channels_for(info, wanted, direction)
                except AudioDeviceError:
                    pass  # refused: convert here from the device's own rate
        return native, self._channels_for(info, native, direction)

    def _unavailable(
        self, direction: Direction, info: DeviceInfo, rate: int, why: str
    ) -> AudioDeviceError:
        if direction == "input":
            return AudioDeviceError(
                MICROPHONE_UNAVAILABLE,
                f"the microphone {info.name!r} cannot be used at {rate} Hz: {why}. Close other "
                "programs that may hold it, check that it is still connected, or pick "
                "another input device",
            )
        return AudioDeviceError(
            OUTPUT_UNAVAILABLE,
            f"the output device {info.name!r} cannot be used at {rate} Hz: {why}. Close other "
            "programs that may hold it, check that it is still connected, or pick another "
            "output device",
        )

    def _channels_for(self, info: DeviceInfo, rate: int, direction: Direction) -> int:
        """Mono if the device takes it, else 2, else all its channels."""
        pa = self.system.pyaudio
        max_channels = info.max_input_channels if direction == "input" else info.max_output_channels
        last = "no channels"
        for channels in dict.fromkeys((1, 2, max_channels)):
            if not 1 <= channels <= max_channels:
                continue
            if direction == "input":
                kwargs = {
                    "input_device": info.index,
                    "input_channels": channels,
                    "input_format": self._pa_int16,
                }
            else:
                kwargs = {
                    "output_device": info.index,
                    "output_channels": channels,
                    "output_format": self._pa_int16,
                }
            try:
                with quiet_stderr():
                    if pa.is_format_supported(rate, **kwargs):
                        return channels
            except (ValueError, OSError) as exc:
                last = pa_error_text(exc)
        raise self._unavailable(direction, info, rate, last)

    def _open_stream(self, path: _Path, direction: Direction) -> None:
        pa = self.system.pyaudio
        kwargs: dict[str, Any] = {
            "rate": path.rate,
            "channels": path.channels,
            "format": self._pa_int16,
            "frames_per_buffer": path.frames_per_buffer,
            "stream_callback": path.callback,
            "start": False,
        }
        if direction == "input":
            kwargs.update(input=True, input_device_index=path.info.index)
        else:
            kwargs.update(output=True, output_device_index=path.info.index)
        try:
            with quiet_stderr():
                path.stream = pa.open(**kwargs)
        except (OSError, ValueError) as exc:
            raise self._unavailable(direction, path.info, path.rate, pa_error_text(exc)) from exc
        self.system.stream_opened()

    def _start_stream(self, path: _Path, direction: Direction) -> None:
        try:
            with quiet_stderr():
                path.stream.start_stream()
        except (OSError, ValueError) as exc:
            raise self._unavailable(direction, path.info, path.rate, pa_error_text(exc)) from exc

    def _activate(self, path: _Path, direction: Direction) -> None:
        """Start a switch's new stream and wait until it can take over (it idles meanwhile):
        an input after its first callback, an output once its priming burst is over (two
        callbacks at least half a buffer apart; at worst after ``SWITCH_START_TIMEOUT``)."""
        try:
            self._start_stream(path, direction)
            if not path.started.wait(SWITCH_START_TIMEOUT):
                raise self._unavailable(
                    direction,
                    path.info,
                    path.rate,
                    f"the stream started but delivered nothing within {SWITCH_START_TIMEOUT:g} s",
                )
            if direction == "output":
                path.paced.wait(SWITCH_START_TIMEOUT)
        except BaseException:
            self._close_path(path)
            raise

    def _close_path(self, path: _Path | None) -> None:
        if path is None or path.stream is None:
            return
        stream, path.stream = path.stream, None
        partner = path.partner
        if partner is not None and partner.stream is stream:
            return  # the other direction still runs on this stream: closed with it
        try:
            with quiet_stderr():
                try:
                    if not stream.is_stopped():
                        stream.stop_stream()
                finally:
                    stream.close()
        except (OSError, ValueError):
            pass  # the device vanished: nothing left to release
        finally:
            self.system.stream_closed()

    # -- called from the callbacks (PortAudio threads) -------------------------------------

    def _count_status(self, status: int) -> None:
        in_over, in_under, out_under, out_over = self._flags
        if status & in_over:
            self.input_overflows += 1
        if status & in_under:
            self.pa_input_underflows += 1
        if status & out_under:
            self.output_underflows += 1
        if status & out_over:
            self.pa_output_overflows += 1

    def _deliver(self, frame: Frame) -> None:
        self.levels.write_input(frame_level(frame))
        self.capture.push(frame)

    def _next_playback_frame(self) -> Frame:
        frame = self.mixer.mix(self.playback.pop())
        self.levels.write_output(frame_level(frame))
        return frame

    def _callback_failed(self, direction: str, exc: Exception) -> None:
        self.callback_errors += 1
        self._fail(
            f"the {direction} audio callback failed: {type(exc).__name__}: {exc}",
            AudioErrorCode.AUDIO_DEVICE_FAILED,
        )

    def __repr__(self) -> str:
        return (
            f"PyAudioDevice(input={self.input_info.name!r}@{self.input_rate}, "
            f"output={self.output_info.name!r}@{self.output_rate}, running={self.running})"
        )
