"""Locally generated sounds: DTMF, call-progress tones, the speaker test, and their mixer.

Everything is 8000 Hz mono ``int16`` unless a ``rate`` says otherwise. Levels are in dBFS
of a sine: a sine at ``level_dbfs`` has the peak amplitude ``32767 * 10 ** (level_dbfs / 20)``
(0 dBFS is a full-scale sine; its RMS is 3.01 dB lower). Tone bursts start and end with a
raised-cosine ramp of :data:`RAMP_MS` so they do not click.

DTMF (ITU-T Q.23): rows 697/770/852/941 Hz, columns 1209/1336/1477/1633 Hz; ``A``-``D``
are the fourth column. :func:`dtmf_sequence` follows the Device/Call SDK: 160 ms tones,
70 ms gaps, ``w`` = 500 ms pause (Q.24 needs >= 40 ms on / >= 40 ms off; >= 50 / 45 ms is
safe everywhere).

Call-progress sounds are :class:`Sound` patterns (one period of the cadence, ``loop``
set when it repeats) played on the operator's speaker by :class:`SoundMixer`:

* :func:`ringback`: 440 + 480 Hz, 2 s on / 4 s off, -19 dBFS per frequency, looping;
* :func:`ringtone`: a 1000 / 1250 Hz warble (switching every 50 ms), 1 s on / 2 s off,
  -14 dBFS, looping;
* :func:`busy_tone`: 480 + 620 Hz, 0.5 s on / 0.5 s off, -24 dBFS per frequency, looping;
* :func:`test_tone`: 1000 Hz (default) for 2 s at -12 dBFS, once.

(ringback and busy follow the North American precise tone plan, -19 / -24 dBm0 per
frequency, read as dBFS.)

:class:`SoundMixer` adds the playing sounds into the frame the device is about to play.
The engine side calls ``play`` / ``stop`` / ``stop_all`` / ``enabled``; the device thread
calls ``mix`` once per 20 ms tick. ``mix`` takes no lock in the common case and never
allocates audio buffers (see the class docstring for the details).
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Final

import numpy as np
from numpy.typing import NDArray

from softphone.media.constants import FRAME_SAMPLES, SAMPLE_RATE

__all__ = [
    "DTMF_DIGITS",
    "DTMF_FREQUENCIES",
    "RAMP_MS",
    "Sound",
    "SoundMixer",
    "busy_tone",
    "dtmf_sequence",
    "dtmf_sound",
    "dtmf_tone",
    "ringback",
    "ringtone",
    "test_tone",
]

RATE: Final = SAMPLE_RATE
RAMP_MS: Final = 5.0  # raised-cosine ramp at both ends of every tone burst
FADE_OUT_MS: Final = 5.0  # ramp applied by SoundMixer when a sound is stopped mid-way

_ROWS: Final = (697, 770, 852, 941)
_COLUMNS: Final = (1209, 1336, 1477, 1633)
_KEYPAD: Final = ("123A", "456B", "789C", "*0#D")

#: Q.23 frequency pair (row Hz, column Hz) of every DTMF digit.
DTMF_FREQUENCIES: Final[dict[str, tuple[int, int]]] = {
    key: (_ROWS[r], _COLUMNS[c]) for r, keys in enumerate(_KEYPAD) for c, key in enumerate(keys)
}
#: Every valid DTMF digit, in RFC 4733 event-code order (0-9 = 0-9, * = 10, # = 11, A-D = 12-15).
DTMF_DIGITS: Final = "0123456789*#ABCD"
PAUSE_CHAR: Final = "w"

_MAX_PAIR_LEVEL_DBFS: Final = -20 * math.log10(2)  # two equal sines can only sum to 2x a peak


def _check_rate(rate: int) -> None:
    if not isinstance(rate, int) or isinstance(rate, bool) or rate <= 0:
        raise ValueError(f"rate must be a positive integer number of Hz, got {rate!r}")


def _samples(duration_ms: float, rate: int) -> int:
    if duration_ms < 0 or not math.isfinite(duration_ms):
        raise ValueError(f"durations must be finite and >= 0 ms, got {duration_ms!r}")
    return round(duration_ms * rate / 1000)


def _amplitude(level_dbfs: float) -> float:
    if not math.isfinite(level_dbfs) or level_dbfs > 0:
        raise ValueError(f"level_dbfs must be a finite number <= 0, got {level_dbfs!r}")
    return 32767.0 * math.pow(10.0, level_dbfs / 20.0)


def _ramp(n: int, rate: int) -> NDArray[np.float64]:
    """Envelope of ``n`` samples: raised-cosine ramps of RAMP_MS (shorter if ``n`` is short)."""
    env = np.ones(n, dtype=np.float64)
    r = min(round(RAMP_MS * rate / 1000), n // 2)
    if r > 0:
        rise = 0.5 - 0.5 * np.cos(np.pi * (np.arange(r) + 0.5) / r)
        env[:r] = rise
        env[n - r :] = rise[::-1]
    return env


def _burst(freqs: tuple[float, ...], n: int, rate: int, amplitude: float) -> NDArray[np.float64]:
    """Sum of sines (each of peak ``amplitude``), ramped at both ends, as float samples."""
    t = np.arange(n, dtype=np.float64) / rate
    x = np.zeros(n, dtype=np.float64)
    for f in freqs:
        x += np.sin(2 * np.pi * f * t)
    return x * amplitude * _ramp(n, rate)


def _to_int16(x: NDArray[np.float64]) -> NDArray[np.int16]:
    return np.clip(np.rint(x), -32768, 32767).astype(np.int16)


def _normalise_digit(digit: str, position: int | None = None) -> str:
    where = "" if position is None else f" at position {position}"
    if not isinstance(digit, str) or len(digit) != 1:
        raise ValueError(f"a DTMF digit is one character of {DTMF_DIGITS}, got {digit!r}")
    key = digit.upper()
    if key not in DTMF_FREQUENCIES:
        raise ValueError(
            f"invalid DTMF digit {digit!r}{where}: use 0-9, *, #, A-D"
            + (f" or {PAUSE_CHAR!r} for a pause" if position is not None else "")
        )
    return key


def dtmf_tone(
    digit: str, duration_ms: int = 160, rate: int = RATE, level_dbfs: float = -10
) -> NDArray[np.int16]:
    """One DTMF tone: the Q.23 pair of ``digit`` (0-9, ``*``, ``#``, A-D, case-insensitive).

    ``level_dbfs`` is the level of *each* of the two sines (so the pair peaks 6 dB higher);
    it must be <= -6.02 dBFS so the sum cannot clip. The tone starts and ends with a
    raised-cosine ramp of :data:`RAMP_MS`. Raises ``ValueError`` for anything else.
    """
    key = _normalise_digit(digit)
    _check_rate(rate)
    if level_dbfs > _MAX_PAIR_LEVEL_DBFS:
        raise ValueError(
            f"level_dbfs must be <= {_MAX_PAIR_LEVEL_DBFS:.2f} dBFS (each of the two tones) "
            f"so their sum cannot clip, got {level_dbfs}"
        )
    n = _samples(duration_ms, rate)
    if n == 0:
        raise ValueError(f"duration_ms must be positive, got {duration_ms}")
    return _to_int16(_burst(DTMF_FREQUENCIES[key], n, rate, _amplitude(level_dbfs)))


def dtmf_sequence(
    digits: str,
    tone_ms: int = 160,
    gap_ms: int = 70,
    pause_ms: int = 500,
    rate: int = RATE,
    *,
    level_dbfs: float = -10,
) -> NDArray[np.int16]:
    """Samples that dial ``digits``: every digit is a tone of ``tone_ms`` followed by
    ``gap_ms`` of silence; every ``w`` (or ``W``) is ``pause_ms`` of silence.

    So ``"12"`` lasts ``2 * (tone_ms + gap_ms)`` and ``"1w2"`` ``pause_ms`` more. The whole
    string is checked before anything is generated: an invalid character raises
    ``ValueError`` naming it and its position. An empty string gives an empty array.
    """
    if not isinstance(digits, str):
        raise ValueError(f"digits must be a string, got {type(digits).__name__}")
    keys = [
        PAUSE_CHAR if ch in "wW" else _normalise_digit(ch, position=i)
        for i, ch in enumerate(digits)
    ]
    _check_rate(rate)
    gap = np.zeros(_samples(gap_ms, rate), dtype=np.int16)
    pause = np.zeros(_samples(pause_ms, rate), dtype=np.int16)
    tones = {
        key: dtmf_tone(key, tone_ms, rate, level_dbfs) for key in set(keys) if key != PAUSE_CHAR
    }
    parts: list[NDArray[np.int16]] = []
    for key in keys:
        if key == PAUSE_CHAR:
            parts.append(pause)
        else:
            parts.extend((tones[key], gap))
    if not parts:
        return np.zeros(0, dtype=np.int16)
    return np.concatenate(parts)


# -- sounds ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, eq=False)
class Sound:
    """A local sound: ``samples`` (8 kHz mono ``int16``, read-only) and whether it ``loop``s.

    For a looping sound ``samples`` is one period of its cadence (on-time then off-time).
    ``name`` identifies it in :class:`SoundMixer` (playing a sound replaces the one of the
    same name). The samples are copied into a read-only array on construction.
    """

    name: str
    samples: NDArray[np.int16] = field(repr=False)
    loop: bool = False

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("a Sound needs a non-empty name")
        arr = np.asarray(self.samples)
        if arr.dtype != np.int16 or arr.ndim != 1 or arr.size == 0:
            raise ValueError(
                f"Sound samples must be a non-empty 1-D int16 array, got {arr.dtype} {arr.shape}"
            )
        arr = arr.copy()
        arr.flags.writeable = False
        object.__setattr__(self, "samples", arr)

    @property
    def duration_s(self) -> float:
        """Length of ``samples`` (one period for a looping sound) in seconds at 8 kHz."""
        return self.samples.size / RATE

    def __repr__(self) -> str:
        return f"Sound({self.name!r}, {self.duration_s:.3f} s, loop={self.loop})"


def _cadence(burst: NDArray[np.float64], off_ms: float) -> NDArray[np.int16]:
    return np.concatenate([_to_int16(burst), np.zeros(_samples(off_ms, RATE), dtype=np.int16)])


def ringback() -> Sound:
    """Outbound call ringing (far end alerting): 440 + 480 Hz, 2 s on / 4 s off, looping."""
    burst = _burst((440.0, 480.0), _samples(2000, RATE), RATE, _amplitude(-19))
    return Sound("ringback", _cadence(burst, 4000), loop=True)


def ringtone() -> Sound:
    """Incoming call on the operator's speaker: a 1000 / 1250 Hz warble, 1 s on / 2 s off.

    The frequency alternates every 50 ms with a continuous phase (no clicks at the
    switches), so it is clearly distinct from the steady dual-tone ringback and busy tones.
    """
    n = _samples(1000, RATE)
    step = _samples(50, RATE)
    freq = np.where((np.arange(n) // step) % 2 == 0, 1000.0, 1250.0)
    phase = 2 * np.pi * np.cumsum(freq) / RATE
    burst = np.sin(phase) * _amplitude(-14) * _ramp(n, RATE)
    return Sound("ringtone", _cadence(burst, 2000), loop=True)


def busy_tone() -> Sound:
    """Busy: 480 + 620 Hz, 0.5 s on / 0.5 s off, looping."""
    burst = _burst((480.0, 620.0), _samples(500, RATE), RATE, _amplitude(-24))
    return Sound("busy", _cadence(burst, 500), loop=True)


# PT028: this is the speaker-test sound, not a pytest test (see ``__test__`` below).
def test_tone(
    seconds: float = 2.0,  # noqa: PT028
    freq: float = 1000,  # noqa: PT028
    level_dbfs: float = -12,  # noqa: PT028
) -> Sound:
    """Speaker test: one sine of ``freq`` Hz for ``seconds``, ramped, not looping."""
    if not 0 < freq < RATE / 2:
        raise ValueError(f"freq must be between 0 and {RATE // 2} Hz, got {freq}")
    n = _samples(seconds * 1000, RATE)
    if n == 0:
        raise ValueError(f"seconds must be positive, got {seconds}")
    return Sound("test_tone", _to_int16(_burst((float(freq),), n, RATE, _amplitude(level_dbfs))))


test_tone.__test__ = False  # type: ignore[attr-defined]  # pytest: not a test function


def dtmf_sound(
    digits: str,
    tone_ms: int = 160,
    gap_ms: int = 70,
    pause_ms: int = 500,
    level_dbfs: float = -10,
) -> Sound:
    """Local feedback for dialled digits: :func:`dtmf_sequence` as a non-looping Sound
    named ``"dtmf"``."""
    samples = dtmf_sequence(digits, tone_ms, gap_ms, pause_ms, RATE, level_dbfs=level_dbfs)
    if samples.size == 0:
        raise ValueError("dtmf_sound needs at least one digit or pause")
    return Sound("dtmf", samples)


# -- mixer ----------------------------------------------------------------------------------


class _Voice:
    """One playing sound. ``pos`` and ``done`` belong to the device thread; the engine only
    ever sets ``fading`` (a single attribute store)."""

    __slots__ = ("done", "fading", "pos", "sound")

    def __init__(self, sound: Sound) -> None:
        self.sound = sound
        self.pos = 0
        self.fading = False
        self.done = False


class SoundMixer:
    """Thread-safe player of local sounds, mixed into the frames the device plays.

    Engine side (any thread): :meth:`play`, :meth:`stop`, :meth:`stop_all`, :attr:`enabled`,
    :attr:`playing`. Device side (the device thread, once per 20 ms tick): :meth:`mix`.

    Concurrency design: the set of voices is an immutable tuple that is *replaced* (never
    modified) under ``_lock``; ``mix`` reads the current tuple with one attribute load and
    takes no lock, except to publish a new tuple when a voice has ended (once per sound).
    A voice's read position is only touched by the device thread. Stopping a voice only
    sets its ``fading`` flag: the next ``mix`` plays one more frame of it under a
    :data:`FADE_OUT_MS` ramp-down (no click) and then drops it. The engine's lock holders
    run a handful of bytecodes (no I/O, no waiting), so the rare lock in ``mix`` is short.

    ``mix`` works in preallocated buffers: it allocates no audio buffers per call.
    """

    def __init__(self, frame_samples: int = FRAME_SAMPLES) -> None:
        if frame_samples <= 0:
            raise ValueError(f"frame_samples must be positive, got {frame_samples}")
        self.frame_samples = frame_samples
        self._lock = threading.Lock()
        self._voices: tuple[_Voice, ...] = ()
        self._enabled = True
        self._acc = np.zeros(frame_samples, dtype=np.float64)
        self._tmp = np.zeros(frame_samples, dtype=np.float64)
        self._out = np.zeros(frame_samples, dtype=np.int16)
        fade = min(round(FADE_OUT_MS * RATE / 1000), frame_samples)
        ramp = np.zeros(frame_samples, dtype=np.float64)
        ramp[:fade] = 0.5 + 0.5 * np.cos(np.pi * (np.arange(fade) + 0.5) / fade)
        ramp.flags.writeable = False
        self._fade = ramp
        self.frames_mixed = 0  # mix() calls that had at least one sound to add

    # -- engine side ---------------------------------------------------------------------

    @property
    def enabled(self) -> bool:
        """Sounds on/off. Turning it off stops every sound and makes :meth:`play` a no-op."""
        return self._enabled

    @enabled.setter
    def enabled(self, value: bool) -> None:
        with self._lock:
            self._enabled = bool(value)
            if not self._enabled:
                for voice in self._voices:
                    voice.fading = True

    def play(self, sound: Sound) -> None:
        """Start ``sound`` from its beginning, replacing a playing sound of the same name.

        A looping sound plays until stopped; any other sound removes itself at its end.
        No-op while :attr:`enabled` is off.
        """
        if not isinstance(sound, Sound):
            raise TypeError(f"play() needs a Sound, got {type(sound).__name__}")
        with self._lock:
            if not self._enabled:
                return
            for voice in self._voices:
                if voice.sound.name == sound.name:
                    voice.fading = True
            self._voices = (*self._voices, _Voice(sound))

    def stop(self, name: str) -> None:
        """Stop the sound called ``name`` (a short fade-out); no-op if it is not playing."""
        with self._lock:
            for voice in self._voices:
                if voice.sound.name == name:
                    voice.fading = True

    def stop_all(self) -> None:
        """Stop every sound (each with a short fade-out)."""
        with self._lock:
            for voice in self._voices:
                voice.fading = True

    @property
    def playing(self) -> set[str]:
        """Names of the sounds playing now (stopped or finished ones excluded)."""
        return {v.sound.name for v in self._voices if not (v.fading or v.done)}

    # -- device side ---------------------------------------------------------------------

    def mix(self, frame: NDArray[np.int16]) -> NDArray[np.int16]:
        """Add the next ``frame_samples`` of every playing sound to ``frame`` (saturating).

        Returns ``frame`` itself when nothing plays (no copy), otherwise the mixer's own
        output buffer, which is overwritten by the next call: play or copy it before then.
        ``frame`` is never modified. Call from the device thread only, once per tick.
        """
        voices = self._voices
        if not voices:
            return frame
        n = self.frame_samples
        if frame.shape != (n,):
            raise ValueError(f"mix() needs frames of {n} samples, got shape {frame.shape}")
        acc = self._acc
        tmp = self._tmp
        acc[:] = frame
        ended = False
        for voice in voices:
            if voice.done:
                ended = True
                continue
            fading = voice.fading  # read once: the engine may set it meanwhile
            samples = voice.sound.samples
            total = samples.size
            pos = voice.pos
            filled = 0
            while filled < n:
                take = min(n - filled, total - pos)
                tmp[filled : filled + take] = samples[pos : pos + take]
                filled += take
                pos += take
                if pos >= total:
                    if not voice.sound.loop:
                        break
                    pos = 0
            if fading:
                np.multiply(tmp[:filled], self._fade[:filled], out=tmp[:filled])
            acc[:filled] += tmp[:filled]
            voice.pos = pos
            if fading or (pos >= total and not voice.sound.loop):
                voice.done = True
                ended = True
        if ended:
            with self._lock:
                self._voices = tuple(v for v in self._voices if not v.done)
        self.frames_mixed += 1
        np.rint(acc, out=acc)
        np.clip(acc, -32768.0, 32767.0, out=acc)
        out = self._out
        out[:] = acc
        return out

    def __repr__(self) -> str:
        return f"SoundMixer(playing={sorted(self.playing)}, enabled={self._enabled})"
