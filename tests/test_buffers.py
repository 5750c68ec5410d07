"""FrameQueue and PlayoutBuffer: drop policy, counters, prefill/underrun, threads."""

from __future__ import annotations

import itertools
import threading
from collections import deque

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from softphone.media import FRAME_SAMPLES, FrameQueue, PlayoutBuffer


def frame(n: int) -> np.ndarray:
    """A recognisable frame: every sample is ``n``."""
    return np.full(FRAME_SAMPLES, n, dtype=np.int16)


def ident(f: np.ndarray | None) -> int | None:
    return None if f is None else int(f[0])


# -- FrameQueue ---------------------------------------------------------------------------


def test_frame_queue_is_fifo() -> None:
    q = FrameQueue(4)
    assert q.pop() is None
    for i in range(3):
        q.push(frame(i))
    assert len(q) == 3
    assert [ident(q.pop()) for _ in range(4)] == [0, 1, 2, None]
    assert (q.pushed, q.popped, q.dropped) == (3, 3, 0)


def test_frame_queue_drops_oldest_when_full() -> None:
    q = FrameQueue(3)
    for i in range(5):
        q.push(frame(i))
    assert len(q) == 3
    assert (q.pushed, q.dropped) == (5, 2)
    assert [ident(q.pop()) for _ in range(3)] == [2, 3, 4]
    assert q.popped == 3


def test_frame_queue_stores_the_pushed_array_itself() -> None:
    q = FrameQueue(2)
    f = frame(1)
    q.push(f)
    assert q.pop() is f


def test_frame_queue_clear() -> None:
    q = FrameQueue(3)
    q.push(frame(1))
    q.push(frame(2))
    q.clear()
    assert len(q) == 0
    assert q.pop() is None
    assert (q.pushed, q.popped, q.dropped) == (2, 0, 0)


def test_frame_queue_rejects_zero_capacity() -> None:
    with pytest.raises(ValueError, match="capacity"):
        FrameQueue(0)


@given(st.integers(1, 6), st.lists(st.booleans(), max_size=60))
def test_frame_queue_matches_a_bounded_deque_model(capacity: int, ops: list[bool]) -> None:
    q = FrameQueue(capacity)
    model: deque[int] = deque(maxlen=capacity)
    dropped = 0
    for i, is_push in enumerate(ops):
        if is_push:
            dropped += len(model) == capacity
            model.append(i)
            q.push(frame(i))
        else:
            assert ident(q.pop()) == (model.popleft() if model else None)
        assert len(q) == len(model)
    assert q.dropped == dropped
    assert q.pushed == q.popped + q.dropped + len(q)


def test_frame_queue_no_loss_when_the_consumer_keeps_up() -> None:
    total, capacity = 20000, 8
    q = FrameQueue(capacity)
    space = threading.Semaphore(capacity)  # the producer never overfills the queue
    items = threading.Semaphore(0)  # the consumer pops only what was pushed
    received: list[int] = []
    failures: list[str] = []

    def produce() -> None:
        for i in range(total):
            if not space.acquire(timeout=5):
                failures.append(f"producer starved at {i}")
                return
            q.push(np.full(FRAME_SAMPLES, i % 30000, dtype=np.int16))
            items.release()

    def consume() -> None:
        for i in range(total):
            if not items.acquire(timeout=5):
                failures.append(f"consumer starved at {i}")
                return
            f = q.pop()
            if f is None:
                failures.append(f"pop {i} returned None although a frame was pushed")
                return
            received.append(int(f[0]))
            space.release()

    threads = [threading.Thread(target=produce), threading.Thread(target=consume)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert not any(t.is_alive() for t in threads)
    assert failures == []
    assert received == [i % 30000 for i in range(total)]
    assert (q.pushed, q.popped, q.dropped, len(q)) == (total, total, 0, 0)


def test_frame_queue_concurrent_overflow_keeps_order_and_exact_counters() -> None:
    total = 20000  # < 32768: frame values are the indices
    q = FrameQueue(4)
    done = threading.Event()
    received: list[int] = []

    def produce() -> None:
        for i in range(total):
            q.push(np.full(FRAME_SAMPLES, i, dtype=np.int16))
        done.set()

    def consume() -> None:
        while True:
            f = q.pop()
            if f is not None:
                received.append(int(f[0]))
            elif done.is_set() and len(q) == 0:
                return

    threads = [threading.Thread(target=produce), threading.Thread(target=consume)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert not any(t.is_alive() for t in threads)
    # Drop-oldest never reorders: whatever got through is strictly increasing.
    assert all(a < b for a, b in itertools.pairwise(received))
    assert q.pushed == total
    assert q.popped == len(received)
    assert q.pushed == q.popped + q.dropped + len(q)


# -- PlayoutBuffer ------------------------------------------------------------------------


def test_playout_silence_before_prefill_counts_nothing() -> None:
    b = PlayoutBuffer(prefill_frames=3)
    silence = b.pop()
    assert silence.shape == (FRAME_SAMPLES,)
    assert silence.dtype == np.int16
    assert not silence.any()
    b.push(frame(1))
    b.push(frame(2))
    assert b.pop() is silence  # 2 of 3 prefill frames: still waiting, same preallocated frame
    assert (b.played, b.underruns, b.depth) == (0, 0, 2)
    assert not b.playing
    b.push(frame(3))
    assert [ident(b.pop()) for _ in range(3)] == [1, 2, 3]
    assert b.played == 3
    assert b.underruns == 0


def test_playout_silence_frame_is_preallocated_and_read_only() -> None:
    b = PlayoutBuffer()
    first = b.pop()
    assert b.pop() is first
    with pytest.raises(ValueError, match="read-only"):
        first[0] = 1


def test_playout_underrun_rearms_prefill() -> None:
    b = PlayoutBuffer(prefill_frames=2)
    b.push(frame(1))
    b.push(frame(2))
    assert ident(b.pop()) == 1
    assert ident(b.pop()) == 2
    playing_before = b.playing
    assert not b.pop().any()  # ran dry after starting: one underrun
    assert b.underruns == 1
    assert (playing_before, b.playing) == (True, False)
    assert not b.pop().any()  # still dry, but the same gap: no second underrun
    assert b.underruns == 1
    b.push(frame(3))
    assert not b.pop().any()  # re-armed: one frame is not enough to resume
    assert b.underruns == 1
    assert b.depth == 1
    b.push(frame(4))
    assert [ident(b.pop()) for _ in range(2)] == [3, 4]
    b.pop()
    assert b.underruns == 2
    assert b.pushed == 4
    assert b.played == 4


def test_playout_capacity_drops_oldest() -> None:
    b = PlayoutBuffer(prefill_frames=2, capacity_frames=5)
    for i in range(8):
        b.push(frame(i))
    assert (b.depth, b.dropped, b.pushed) == (5, 3, 8)
    assert [ident(b.pop()) for _ in range(5)] == [3, 4, 5, 6, 7]


def test_playout_reset_clears_and_rearms_but_keeps_counters() -> None:
    b = PlayoutBuffer(prefill_frames=2)
    for i in range(3):
        b.push(frame(i))
    assert ident(b.pop()) == 0
    b.reset()
    assert b.depth == 0
    assert not b.playing
    assert not b.pop().any()
    assert (b.pushed, b.played, b.underruns, b.dropped) == (3, 1, 0, 0)
    b.push(frame(9))
    assert not b.pop().any()  # prefill re-armed


def test_playout_prefill_zero_plays_the_first_frame_at_once() -> None:
    b = PlayoutBuffer(prefill_frames=0)
    assert not b.pop().any()
    assert b.underruns == 0
    b.push(frame(5))
    assert ident(b.pop()) == 5


def test_playout_validates_frames_and_parameters() -> None:
    b = PlayoutBuffer()
    with pytest.raises(ValueError, match="shape"):
        b.push(np.zeros(80, dtype=np.int16))
    with pytest.raises(ValueError, match="int16"):
        b.push(np.zeros(FRAME_SAMPLES, dtype=np.float32))
    with pytest.raises(ValueError, match="capacity_frames"):
        PlayoutBuffer(capacity_frames=0)
    with pytest.raises(ValueError, match="prefill_frames"):
        PlayoutBuffer(prefill_frames=30, capacity_frames=25)


@given(st.integers(1, 4), st.integers(4, 8), st.lists(st.booleans(), max_size=80))
def test_playout_counter_invariants(prefill: int, capacity: int, ops: list[bool]) -> None:
    b = PlayoutBuffer(prefill_frames=prefill, capacity_frames=capacity)
    last_played = 0
    empty_pops_while_playing = 0
    for i, is_push in enumerate(ops, start=1):
        if is_push:
            b.push(frame(i))  # never 0, so silence is recognisable
            continue
        was_playing, depth = b.playing, b.depth
        out = b.pop()
        if was_playing and depth == 0:
            empty_pops_while_playing += 1
        if not was_playing and depth < prefill:
            assert not out.any()
        if out.any():
            assert int(out[0]) > last_played  # FIFO: never back in time
            last_played = int(out[0])
        assert b.depth <= capacity
    assert b.underruns == empty_pops_while_playing
    assert b.pushed == b.played + b.dropped + b.depth
