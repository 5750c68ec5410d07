"""Call quality: per-second samples (levels, bytes, frames, loss, RFC 3550 jitter, RTT, MOS)
and quality warnings with hysteresis, as the Device/Call SDK reports them (pure; the media
leg feeds it).

MOS comes from a simplified E-model: eff = RTT + 2 x jitter + 10 ms;
R = 94.768 - eff/40 (eff < 160) else 94.768 - (eff - 120)/10; R = max(R - 2.5 x loss%, 6.52);
MOS = 1 + 0.035 R + 7e-6 R (R - 60)(100 - R).

Warnings (thresholds of the reference figures): ``high-rtt`` > 400 ms, ``high-jitter`` >
30 ms, ``low-mos`` < 3, ``high-packet-loss`` > 1 %, ``low-bytes-received`` /
``low-bytes-sent`` (nothing in a second), ``constant-audio-input-level`` (input level flat
for 10 s while not muted). A warning is raised when 3 of the last 5 one-second samples
cross its threshold and cleared when none of them does; none is raised in a call's first
5 seconds.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Final

SAMPLE_RATE: Final = 8000
WINDOW: Final = 5
RAISE_AT: Final = 3
GRACE_SECONDS: Final = 5.0

WARNINGS: Final = (
    "high-rtt",
    "high-jitter",
    "low-mos",
    "high-packet-loss",
    "low-bytes-received",
    "low-bytes-sent",
    "constant-audio-input-level",
)


def mos(rtt_ms: float, jitter_ms: float, loss_pct: float) -> float:
    """Mean opinion score (1..4.5) from the simplified E-model."""
    eff = rtt_ms + 2 * jitter_ms + 10.0
    r = 94.768 - eff / 40 if eff < 160 else 94.768 - (eff - 120) / 10
    r = max(r - 2.5 * loss_pct, 6.52)
    return 1 + 0.035 * r + 7e-6 * r * (r - 60) * (100 - r)


@dataclass(frozen=True, slots=True)
class CallSample:
    """One second of a call (``sample`` event)."""

    at: float  # seconds since the call became active
    codec: str
    input_level: float
    output_level: float
    bytes_sent: int  # cumulative
    bytes_received: int
    frames_sent: int
    frames_received: int
    frames_lost: int  # cumulative, from sequence numbers
    packet_loss_pct: float  # over this second
    jitter_ms: float  # RFC 3550 interarrival jitter
    rtt_ms: float | None  # media-leg ping/pong
    mos: float


class QualityMonitor:
    """Counts what the media leg sends and receives and turns it into samples and warnings."""

    def __init__(self) -> None:
        self.bytes_sent = 0
        self.bytes_received = 0
        self.frames_sent = 0
        self.frames_received = 0
        self.jitter_ms = 0.0
        self._base_seq: int | None = None
        self._max_ext = -1
        self._cycles = 0
        self._last_seq = 0
        self._transit: float | None = None
        self._prev = (0, 0, 0, 0)  # bytes sent/received, expected, received at last sample
        self._history: deque[frozenset[str]] = deque(maxlen=WINDOW)
        self.active: set[str] = set()

    # -- counting ------------------------------------------------------------------------

    def frame_sent(self, nbytes: int) -> None:
        self.frames_sent += 1
        self.bytes_sent += nbytes

    def frame_received(self, sequence: int, timestamp: int, arrival: float, nbytes: int) -> None:
        """A frame from the far end: ``arrival`` in seconds on a monotonic clock."""
        self.frames_received += 1
        self.bytes_received += nbytes
        if self._base_seq is None:
            self._base_seq = sequence
            self._last_seq = sequence
            self._max_ext = sequence
        elif sequence > self._last_seq and sequence - self._last_seq > 0x8000:
            pass  # a late frame from before the last wrap: already counted as expected
        else:
            if sequence < self._last_seq and self._last_seq - sequence > 0x8000:
                self._cycles += 0x10000  # wrapped
            self._last_seq = sequence
            self._max_ext = max(self._max_ext, self._cycles + sequence)
        # RFC 3550: D = (Rj - Ri) - (Sj - Si); J += (|D| - J) / 16, in milliseconds.
        transit = arrival * 1000.0 - timestamp * 1000.0 / SAMPLE_RATE
        if self._transit is not None:
            d = abs(transit - self._transit)
            if d < 10_000:  # ignore timestamp wraps and restarts
                self.jitter_ms += (d - self.jitter_ms) / 16
        self._transit = transit

    @property
    def expected(self) -> int:
        if self._base_seq is None:
            return 0
        return self._max_ext - self._base_seq + 1

    @property
    def lost(self) -> int:
        return max(0, self.expected - self.frames_received)

    # -- samples and warnings --------------------------------------------------------------

    def sample(
        self,
        *,
        at: float,
        codec: str,
        rtt_ms: float | None,
        input_level: float,
        output_level: float,
        input_flat: bool,
    ) -> tuple[CallSample, set[str], set[str]]:
        """Close one second: the sample, and the warnings raised and cleared by it."""
        sent0, recv0, exp0, got0 = self._prev
        expected, received = self.expected, self.frames_received
        d_expected, d_received = expected - exp0, received - got0
        loss = max(0.0, 100.0 * (d_expected - d_received) / d_expected) if d_expected > 0 else 0.0
        score = mos(rtt_ms or 0.0, self.jitter_ms, loss)
        crossing = set()
        if rtt_ms is not None and rtt_ms > 400:
            crossing.add("high-rtt")
        if self.jitter_ms > 30:
            crossing.add("high-jitter")
        if score < 3:
            crossing.add("low-mos")
        if loss > 1:
            crossing.add("high-packet-loss")
        if self.bytes_received == recv0:
            crossing.add("low-bytes-received")
        if self.bytes_sent == sent0:
            crossing.add("low-bytes-sent")
        if input_flat:
            crossing.add("constant-audio-input-level")
        self._prev = (self.bytes_sent, self.bytes_received, expected, received)
        self._history.append(frozenset(crossing))
        raised: set[str] = set()
        cleared: set[str] = set()
        if at >= GRACE_SECONDS:
            for name in WARNINGS:
                count = sum(name in h for h in self._history)
                if name not in self.active and count >= RAISE_AT:
                    raised.add(name)
                elif name in self.active and count == 0:
                    cleared.add(name)
            self.active |= raised
            self.active -= cleared
        sample = CallSample(
            at=at,
            codec=codec,
            input_level=input_level,
            output_level=output_level,
            bytes_sent=self.bytes_sent,
            bytes_received=self.bytes_received,
            frames_sent=self.frames_sent,
            frames_received=self.frames_received,
            frames_lost=self.lost,
            packet_loss_pct=loss,
            jitter_ms=self.jitter_ms,
            rtt_ms=rtt_ms,
            mos=score,
        )
        return sample, raised, cleared
