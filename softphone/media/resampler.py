"""Streaming polyphase resampler for mono ``int16`` audio (device rate <-> 8 kHz).

:class:`Resampler` converts between any two integer sample rates whose ratio reduces to
``up / down`` (``to_rate / from_rate``) with ``max(up, down) <= 65536``. It is stateful:
feed consecutive chunks of one stream to :meth:`Resampler.process`; the filter history
and the phase are kept between calls, so the concatenated outputs equal the output of one
call on the concatenated input, whatever the chunk sizes (up to float rounding, i.e. at
most one LSB on a rare sample).

Filter (designed once per reduced ratio, cached): a Kaiser-windowed sinc low-pass at the
virtual rate ``up * from_rate``, with

* cutoff ``0.475 * min(from_rate, to_rate)`` (the -6 dB point; 3.8 kHz when one side is
  8 kHz),
* Kaiser ``beta = 8.5``,
* length ``28 * max(up, down) - 1`` taps at the virtual rate, i.e. the filter spans 28
  periods of the lower rate (3.5 ms at 8 kHz): 167 taps at 48 kHz, 55 at 16 kHz, 12347 at
  3.528 MHz for 44.1 kHz (155 per phase down, 28 per phase up).

Against the 8 kHz side that gives a passband within 0.65 dB up to 3.4 kHz (-0.58 dB at
3.4 kHz for 48 kHz, -0.55 for 44.1, -0.62 for 16), at least 84 dB of attenuation from
4.6 kHz up (86 dB for 48 and 44.1 kHz; that is everything that would fold into 0..3.4 kHz
when downsampling, and every image of 0..3.4 kHz when upsampling) and 88-90 dB from 5 kHz
up. The band 4.0..4.6 kHz is the transition band: it folds onto 3.4..4.0 kHz, above the
telephone band. Group delay: 1.625 ms down to 8 kHz, 1.69-1.73 ms up from it.

Output timing: output sample ``n`` (counting from the start of the stream or the last
:meth:`Resampler.reset`) is produced as soon as the input reaching the end of its output
period has arrived, so after ``T`` input samples exactly ``floor(T * to_rate / from_rate)``
output samples have been returned in total. Every call returns what is ready: with chunks
of ``from_rate / 50`` samples (20 ms) and a whole output frame per chunk (48 kHz, 44.1 kHz,
16 kHz <-> 8 kHz...) each call returns exactly one output frame; with other chunk sizes the
count per call varies by one sample but never drifts. Input before the stream start is
taken as silence. :attr:`Resampler.delay_seconds` is the group delay: output sample ``n``
(at time ``n / to_rate``) carries the input around time ``n / to_rate - delay_seconds``.

Implementation: outputs are computed in *periods* of ``P`` outputs made from ``Q`` inputs
(``P / Q = up / down``; ``P`` is ``up`` times the largest power of two that keeps it at
most 16: a few more columns make BLAS efficient, and 20 ms chunks stay on period
boundaries). Period ``q`` reads one window of
the input starting ``q * Q`` samples in; each of its outputs is a dot product of that
window with one row of a precomputed dense polyphase matrix (the ``ceil(taps / up)``
coefficients of the output's phase, placed at its offset in the window). A call copies
the windows of the periods it needs from a strided view of a preallocated work buffer and
does one ``matmul`` into a preallocated result, so only the output samples needed are
computed, plus the rest of a partial period at a chunk edge (discarded). Ratios whose
dense matrix would exceed ~1 M coefficients (unusual pairs with a large reduced ratio,
e.g. 44056 Hz, which reduces to 5507/1000 against 8 kHz) use a per-output gather path
instead (same results, several times slower). Every buffer is allocated in ``__init__``;
a call allocates only its ``int16`` result and numpy's small temporaries, and processes
input longer than 40 ms in 40 ms blocks, so the playback side can run in an audio
callback. A 20 ms frame costs about 10 µs at 48 kHz and 14 µs at 44.1 kHz in either
direction (float64 throughout, which keeps chunked and one-shot output identical).

One instance per stream and direction; instances are not thread-safe.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray

__all__ = ["Resampler"]

FILTER_SPAN: Final = 28  # filter length in periods of the lower rate (3.5 ms at 8 kHz)
CUTOFF: Final = 0.475  # -6 dB cutoff as a fraction of the lower rate (3.8 kHz at 8 kHz)
KAISER_BETA: Final = 8.5  # ~86 dB stopband
MAX_FACTOR: Final = 1 << 16  # largest reduced up/down factor accepted
_DENSE_LIMIT: Final = 1 << 20  # coefficients of the dense polyphase matrix, else gather path
_PIECE_SECONDS: Final = 0.04  # input processed per block; longer chunks are split
_MIN_PERIOD: Final = 16  # outputs per dense period, at least (see _group)

_Float = np.float64
FloatArray = NDArray[np.float64]


@dataclass(frozen=True, slots=True, eq=False)
class _Design:
    """Polyphase tables for one reduced ratio ``up / down`` (all arrays read-only)."""

    up: int
    down: int
    prototype: FloatArray  # the low-pass at the virtual rate, DC gain ``up``
    taps: int  # K: coefficients per phase (input samples per output window)
    offset: int  # D: output n sits at virtual-rate position n * down + offset
    delay: float  # group delay in virtual-rate samples
    phases: FloatArray  # (up, taps): window coefficients per phase, oldest sample first
    # Dense path: a period is ``period_out = group * up`` outputs from ``group * down`` inputs.
    period_out: int
    period_in: int
    width: int  # input samples spanned by the windows of one period
    last_end: int  # newest input index used by the last output of period 0
    kernel: FloatArray | None  # (width, period_out), or None for the gather path


def _group(up: int) -> int:
    """Periods of ``up`` outputs merged into one dense period (BLAS is faster on ~16 columns).

    A power of two, so 20 ms chunks (``rate / 50`` samples) stay on period boundaries.
    """
    group = 1
    while group * 2 * up <= _MIN_PERIOD:
        group *= 2
    return group


@functools.lru_cache(maxsize=32)
def _design(up: int, down: int) -> _Design:
    """Design the anti-alias / anti-image filter for ``up / down`` and its polyphase tables."""
    factor = max(up, down)
    n_taps = FILTER_SPAN * factor - 1
    cutoff = CUTOFF / factor  # in cycles per virtual-rate sample
    t = np.arange(n_taps, dtype=np.float64) - (n_taps - 1) / 2
    h = 2 * cutoff * np.sinc(2 * cutoff * t) * np.kaiser(n_taps, KAISER_BETA)
    h *= up / h.sum()
    taps = -(-n_taps // up)
    padded = np.zeros(taps * up, dtype=np.float64)
    padded[:n_taps] = h
    # g[p, k] = h[p + k * up]: the coefficient of input x[e - k] for phase p. Windows are
    # read oldest first, hence the reversal.
    phases = np.ascontiguousarray(padded.reshape(taps, up).T[:, ::-1], dtype=_Float)
    offset = down - 1
    group = _group(up)
    period_out = group * up
    acc = np.arange(period_out, dtype=np.int64) * down + offset
    ends = acc // up  # newest input index of output r of period 0
    phase_of = acc % up
    first_end, last_end = int(ends[0]), int(ends[-1])
    width = last_end - first_end + taps
    kernel: FloatArray | None = None
    if period_out * width <= _DENSE_LIMIT:
        dense = np.zeros((period_out, width), dtype=_Float)
        cols = (ends - first_end)[:, None] + np.arange(taps)
        dense[np.arange(period_out)[:, None], cols] = phases[phase_of]
        kernel = np.ascontiguousarray(dense.T)
        kernel.flags.writeable = False
    for arr in (h, phases):
        arr.flags.writeable = False
    return _Design(
        up=up,
        down=down,
        prototype=h,
        taps=taps,
        offset=offset,
        delay=(n_taps - 1) / 2 - offset,
        phases=phases,
        period_out=period_out,
        period_in=group * down,
        width=width,
        last_end=last_end,
        kernel=kernel,
    )


def _check_rate(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise TypeError(
            f"{name} must be an integer number of Hz, got {type(value).__name__} {value!r}"
        )
    rate = int(value)
    if rate <= 0:
        raise ValueError(f"{name} must be a positive number of Hz, got {rate}")
    return rate


class Resampler:
    """Stateful streaming resampler of mono ``int16`` audio from ``from_rate`` to ``to_rate``.

    See the module docstring for the filter, the timing and the output length rule.
    Equal rates give a pass-through copy with zero delay.
    """

    def __init__(self, from_rate: int, to_rate: int) -> None:
        self._from_rate = _check_rate("from_rate", from_rate)
        self._to_rate = _check_rate("to_rate", to_rate)
        g = math.gcd(self._from_rate, self._to_rate)
        up, down = self._to_rate // g, self._from_rate // g
        if max(up, down) > MAX_FACTOR:
            raise ValueError(
                f"cannot resample {self._from_rate} Hz -> {self._to_rate} Hz: the ratio reduces "
                f"to {up}/{down}, above the supported {MAX_FACTOR}; use rates with a larger "
                "common divisor"
            )
        self._up = up
        self._down = down
        self._passthrough = up == down  # == 1
        self._r = 0  # next output index within the current period, in [0, period_out)
        self._in_rel = 0  # input samples received since the start of the current period
        if self._passthrough:
            self._delay_seconds = 0.0
            return
        d = _design(up, down)
        self._design = d
        self._delay_seconds = d.delay / (up * self._from_rate)
        self._dense = d.kernel is not None
        if self._dense:
            self._pout, self._pin = d.period_out, d.period_in
            # Pieces of whole periods keep 20 ms chunks on period boundaries.
            periods = max(1, round(_PIECE_SECONDS * self._from_rate / d.period_in))
            self._piece = periods * d.period_in
            self._history = d.width - 1
            buf_len = self._piece + d.width + d.last_end + 1
            max_periods = periods + 2
            self._rows = np.empty((max_periods, d.width), dtype=_Float)
            self._ybuf = np.empty(max_periods * d.period_out, dtype=_Float)
        else:
            self._pout, self._pin = up, down
            self._piece = max(1, round(_PIECE_SECONDS * self._from_rate))
            self._history = d.taps - 1
            buf_len = self._history + self._piece
            max_out = self._piece * up // down + 2
            self._windows = np.empty((max_out, d.taps), dtype=_Float)
            self._coefs = np.empty((max_out, d.taps), dtype=_Float)
            self._ybuf = np.empty(max_out, dtype=_Float)
        self._buf = np.zeros(buf_len, dtype=_Float)
        # All input windows of the work buffer (a view: sees every later write).
        self._slide = sliding_window_view(
            self._buf, d.width if self._dense else d.taps, writeable=False
        )

    # -- properties ------------------------------------------------------------------------

    @property
    def from_rate(self) -> int:
        """Input sample rate in Hz."""
        return self._from_rate

    @property
    def to_rate(self) -> int:
        """Output sample rate in Hz."""
        return self._to_rate

    @property
    def delay_seconds(self) -> float:
        """Group delay of the filter in seconds (0.0 for equal rates)."""
        return self._delay_seconds

    @property
    def ratio(self) -> tuple[int, int]:
        """``(up, down)``: ``to_rate / from_rate`` in lowest terms."""
        return self._up, self._down

    @property
    def filter_taps(self) -> int:
        """Length of the prototype low-pass at the virtual rate ``up * from_rate`` (0 if none)."""
        return 0 if self._passthrough else self._design.prototype.size

    def __repr__(self) -> str:
        return (
            f"Resampler({self._from_rate} -> {self._to_rate} Hz, "
            f"delay {self._delay_seconds * 1e3:.3f} ms)"
        )

    # -- streaming -------------------------------------------------------------------------

    def reset(self) -> None:
        """Forget the stream: clear the filter history (silence) and restart the phase."""
        self._r = 0
        self._in_rel = 0
        if not self._passthrough:
            self._buf.fill(0.0)

    def output_length(self, n_input: int) -> int:
        """How many samples the next ``process`` call returns for ``n_input`` input samples."""
        return (self._in_rel + n_input) * self._up // self._down - self._r

    def process(self, chunk: NDArray[np.int16]) -> NDArray[np.int16]:
        """Resample the next ``chunk`` of the stream (1-D ``int16``); returns a new ``int16`` array.

        The result holds every output sample that is complete once ``chunk`` is in (see the
        module docstring); values beyond the ``int16`` range saturate.
        """
        if not isinstance(chunk, np.ndarray):
            raise TypeError(
                f"Resampler.process needs a numpy int16 array, got {type(chunk).__name__}"
            )
        if chunk.dtype.kind != "i" or chunk.dtype.itemsize != 2:
            raise TypeError(f"Resampler.process needs int16 samples, got dtype {chunk.dtype}")
        if chunk.ndim != 1:
            raise ValueError(
                f"Resampler.process needs mono 1-D samples, got an array of shape {chunk.shape}"
            )
        if self._passthrough:
            return chunk.astype(np.int16, copy=True)
        n = len(chunk)
        out = np.empty(self.output_length(n), dtype=np.int16)
        run = self._run_dense if self._dense else self._run_gather
        pos_in = pos_out = 0
        piece = self._piece
        while pos_in < n:
            m = min(piece, n - pos_in)
            pos_out = run(chunk[pos_in : pos_in + m], out, pos_out)
            pos_in += m
        return out

    # -- one block of input ------------------------------------------------------------------

    def _run_dense(self, x: NDArray[np.int16], out: NDArray[np.int16], pos: int) -> int:
        d = self._design
        pout, pin, hist = self._pout, self._pin, self._history
        m = len(x)
        buf = self._buf
        buf[hist : hist + m] = x
        in_b = self._in_rel
        in_a = in_b + m
        r0 = self._r
        n1 = in_a * pout // pin  # outputs complete at the end of this block (period-relative)
        k = n1 - r0
        if k > 0:
            # Every period from 0 to the one holding output n1 - 1; the outputs before r0
            # (already returned) and from n1 on (input not there yet) are discarded.
            periods = -(-n1 // pout)
            start = d.last_end - in_b  # work-buffer index of period 0's first input sample
            rows = self._rows[:periods]
            np.copyto(rows, self._slide[start : start + (periods - 1) * pin + 1 : pin])
            kernel = d.kernel
            assert kernel is not None
            np.matmul(rows, kernel, out=self._ybuf[: periods * pout].reshape(periods, pout))
            _store(self._ybuf[r0:n1], out[pos : pos + k])
        buf[:hist] = buf[m : m + hist]
        done = n1 // pout
        self._r = n1 - done * pout
        self._in_rel = in_a - done * pin
        return pos + max(k, 0)

    def _run_gather(self, x: NDArray[np.int16], out: NDArray[np.int16], pos: int) -> int:
        d = self._design
        up, down, hist = self._up, self._down, self._history
        m = len(x)
        buf = self._buf
        buf[hist : hist + m] = x
        in_b = self._in_rel
        in_a = in_b + m
        r0 = self._r
        n1 = in_a * up // down
        k = n1 - r0
        if k > 0:
            acc = np.arange(r0, n1, dtype=np.int64) * down + d.offset
            ends = acc // up
            phase = acc - ends * up
            ends -= in_b  # work-buffer index of each window's oldest sample
            windows = self._windows[:k]
            coefs = self._coefs[:k]
            np.take(self._slide, ends, axis=0, out=windows)
            np.take(d.phases, phase, axis=0, out=coefs)
            y = self._ybuf[:k]
            np.einsum("ij,ij->i", windows, coefs, out=y)
            _store(y, out[pos : pos + k])
        buf[:hist] = buf[m : m + hist]
        done = n1 // up
        self._r = n1 - done * up
        self._in_rel = in_a - done * down
        return pos + max(k, 0)


def _store(y: FloatArray, out: NDArray[np.int16]) -> None:
    """Round ``y`` to ``int16`` into ``out``, saturating (``y`` is clobbered)."""
    np.minimum(y, 32767.0, out=y)
    np.maximum(y, -32768.0, out=y)
    np.rint(y, out=out, casting="unsafe")
