"""Call quality samples and warnings: the E-model, RFC 3550 jitter, loss from sequence
numbers, 3-of-5 hysteresis, and samples from a real call."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from softphone.engine.quality import QualityMonitor, mos
from softphone.server import CoreServer

from .conftest import sandbox_operator, wait_until


def test_mos_matches_the_reference_formula() -> None:
    r = 94.768 - 10 / 40  # no delay at all: eff = 10 ms
    assert mos(0, 0, 0) == pytest.approx(1 + 0.035 * r + 7e-6 * r * (r - 60) * (100 - r))
    assert mos(0, 0, 0) == pytest.approx(4.43, abs=0.01)
    assert mos(300, 20, 0) < mos(100, 20, 0) < mos(20, 5, 0)
    assert mos(20, 5, 5) < mos(20, 5, 0)
    assert mos(1000, 200, 50) == pytest.approx(1 + 0.035 * 6.52 + 7e-6 * 6.52 * -53.48 * 93.48)


@given(st.floats(0, 5000), st.floats(0, 1000), st.floats(0, 100))
def test_mos_stays_in_range(rtt: float, jitter: float, loss: float) -> None:
    assert 1.0 <= mos(rtt, jitter, loss) <= 4.5


def feed(q: QualityMonitor, seqs: list[int], *, start: float = 0.0, jitter: float = 0.0) -> None:
    for i, seq in enumerate(seqs):
        arrival = start + i * 0.02 + (jitter if i % 2 else 0.0)
        q.frame_received(seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF, arrival, 168)


def test_loss_counts_sequence_gaps_across_a_wrap() -> None:
    q = QualityMonitor()
    seqs = [s for s in range(65530, 65546) if s not in (65534, 65537)]
    feed(q, seqs)
    assert q.expected == 16
    assert q.lost == 2


def test_late_frame_from_before_a_wrap_is_not_a_huge_gap() -> None:
    q = QualityMonitor()
    feed(q, [65534, 0, 1, 65535])  # 65535 arrives late
    assert q.expected == 4
    assert q.lost == 0


def test_rfc3550_jitter_converges_to_the_arrival_variation() -> None:
    steady, jumpy = QualityMonitor(), QualityMonitor()
    feed(steady, list(range(500)))
    feed(jumpy, list(range(500)), jitter=0.030)  # every other frame 30 ms late
    assert steady.jitter_ms == pytest.approx(0.0, abs=1e-6)
    assert 25 < jumpy.jitter_ms < 35


def run_seconds(q: QualityMonitor, n: int, *, lossy: set[int], start: int = 0) -> list[set[str]]:
    """n one-second samples; in the seconds listed in ``lossy`` 5 of 50 frames go missing."""
    changes = []
    seq = start * 50
    for second in range(start, start + n):
        for k in range(50):
            if not (second in lossy and k % 10 == 0):
                q.frame_received(seq & 0xFFFF, seq * 160, seq * 0.02, 168)
            seq += 1
            q.frame_sent(168)
        _, raised, cleared = q.sample(
            at=float(second + 1),
            codec="PCMU",
            rtt_ms=20.0,
            input_level=0.5,
            output_level=0.5,
            input_flat=False,
        )
        changes.append({f"+{w}" for w in raised} | {f"-{w}" for w in cleared})
    return changes


def test_warnings_need_3_of_5_and_clear_when_none_cross() -> None:
    q = QualityMonitor()
    # 10 % loss in seconds 7, 9 and 10 (not 8): raised at the 3rd crossing, not before.
    changes = run_seconds(q, 16, lossy={7, 9, 10})
    raised_at = [i for i, c in enumerate(changes) if "+high-packet-loss" in c]
    cleared_at = [i for i, c in enumerate(changes) if "-high-packet-loss" in c]
    assert raised_at == [10]
    assert cleared_at == [15]  # five clean seconds later
    assert not any("+low-mos" in c for c in changes)


def test_no_warning_in_the_first_five_seconds() -> None:
    q = QualityMonitor()
    changes = run_seconds(q, 4, lossy={0, 1, 2, 3})
    assert changes == [set(), set(), set(), set()]


async def test_samples_of_a_real_call(core: CoreServer) -> None:
    operator = sandbox_operator(core.url)
    samples = []
    try:
        call = await operator.dial("+15550100")
        call.on("sample", samples.append)
        assert await call.wait_started(10)
        await wait_until(lambda: len(samples) >= 3, timeout=10)
        warnings = set(call.warnings)
        await call.hangup()
    finally:
        await operator.close()
    last = samples[-1]
    assert [round(s.at) for s in samples[:3]] == [1, 2, 3]
    assert last.codec == "PCMU"
    assert last.frames_lost == 0
    assert last.packet_loss_pct == 0
    assert last.frames_received > 100
    assert last.bytes_sent == last.frames_sent * 168
    assert last.rtt_ms is not None
    assert last.rtt_ms < 50
    assert last.jitter_ms < 20
    assert last.mos > 4.3
    assert not warnings
