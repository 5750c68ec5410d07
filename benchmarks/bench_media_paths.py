"""Per-20 ms-frame cost of the audio paths around the device-rate resampler.

Run: .venv/bin/python benchmarks/bench_media_paths.py [--frames N]

Times, with ``time.perf_counter_ns`` around each call and a fresh input frame every time
(cycling through pre-generated speech-like frames, never re-using one buffer back to back):

* resample device rate -> 8 kHz alone, and the capture path = resample + ``encode_mulaw``;
* resample 8 kHz -> device rate alone, and the playback path = ``decode_mulaw`` + jitter
  buffer ``pop`` + resample (``softphone.media.jitter.JitterBuffer`` if that module
  exists, else ``softphone.media.buffers.PlayoutBuffer``; the output says which). The
  ``push`` of each decoded frame happens between the two, timed apart (engine side);
* the seed's ``resample_linear`` on the same frames, for comparison;

for 48 kHz and 44.1 kHz devices, then the 5 kHz alias rejection of both resamplers.
Targets: capture and playback paths <= 50 µs median per frame. Baselines: the numbers in
/work/shared/notes/reference-figures.md (stateful FIR 22-28 µs, polyphase upsampler ~25 µs,
capture path ~36 µs, playback path ~42 µs per frame).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from softphone.media import decode_mulaw, encode_mulaw, resample_linear
from softphone.media.buffers import PlayoutBuffer
from softphone.media.resampler import Resampler

TARGET_US = 50.0
BASELINE_US = {"down": 25.0, "up": 25.0, "capture": 36.0, "playback": 42.0}
WARMUP = 200


def _speechlike(n: int, rng: np.random.Generator) -> NDArray[np.int16]:
    """Noise with a slow syllable-like envelope, low-passed a little (no pure tone)."""
    x = rng.standard_normal(n + 8)
    x = np.convolve(x, np.ones(8) / 8, mode="valid")[:n]
    envelope = 0.55 + 0.45 * np.sin(np.arange(n) / (n / 3) + rng.uniform(0, 6.3))
    return np.clip(x * 9000 * envelope, -32768, 32767).astype(np.int16)


def _frames(n_frames: int, size: int, rng: np.random.Generator) -> list[NDArray[np.int16]]:
    return [_speechlike(size, rng) for _ in range(n_frames)]


def _time(fn: Callable[[Any], object], inputs: list[Any]) -> tuple[float, float]:
    """Median and p99 in µs of ``fn(item)`` over ``inputs`` (after a warm-up)."""
    for item in inputs[:WARMUP]:
        fn(item)
    samples = np.empty(len(inputs), dtype=np.float64)
    clock = time.perf_counter_ns
    for i, item in enumerate(inputs):
        t0 = clock()
        fn(item)
        samples[i] = clock() - t0
    samples /= 1000.0
    return float(np.median(samples)), float(np.percentile(samples, 99))


class _Clock:
    """Virtual arrival clock: one frame period per push (packets arriving on time)."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _jitter_buffer() -> tuple[
    Callable[[NDArray[np.int16]], None], Callable[[], NDArray[np.int16]], Callable[[], str], str
]:
    """push(pcm), pop(), a stats line, and the name of the buffer in use.

    The JitterBuffer if ``softphone.media.jitter`` exists (fed sequence numbers and
    timestamps on a virtual clock that advances 20 ms per push: steady state, no loss),
    else the PlayoutBuffer.
    """
    if importlib.util.find_spec("softphone.media.jitter") is not None:
        try:
            from softphone.media.jitter import JitterBuffer

            clock = _Clock()
            jb = JitterBuffer(clock=clock)
            seq = [0]

            def push(pcm: NDArray[np.int16]) -> None:
                clock.now += 0.020
                jb.push(pcm, sequence=seq[0] & 0xFFFF, timestamp=(seq[0] * 160) & 0xFFFFFFFF)
                seq[0] += 1

            def stats() -> str:
                st = jb.stats()
                return f"played {st.played}, concealed {st.concealed}, idle {st.idle}"

            return push, jb.pop, stats, "softphone.media.jitter.JitterBuffer"
        except Exception as exc:  # its API may still be moving: fall back, and say so
            name = f"PlayoutBuffer (JitterBuffer unusable: {type(exc).__name__}: {exc})"
    else:
        name = "PlayoutBuffer (softphone.media.jitter does not exist yet)"
    pb = PlayoutBuffer(prefill_frames=2, capacity_frames=25, frame_samples=160)

    def pb_stats() -> str:
        return f"played {pb.played}, underruns {pb.underruns}"

    return pb.push, pb.pop, pb_stats, name


def _time_playback(
    payloads: list[bytes],
    push: Callable[[NDArray[np.int16]], None],
    pop: Callable[[], NDArray[np.int16]],
    up: Resampler,
) -> tuple[tuple[float, float], tuple[float, float]]:
    """(median, p99) of decode + pop + resample, and of the push in between (not in the path).

    Per frame: decode the payload (engine thread in real life), push it (engine thread,
    timed apart), then pop one frame and resample it (device thread).
    """
    clock = time.perf_counter_ns
    path = np.empty(len(payloads), dtype=np.float64)
    pushes = np.empty(len(payloads), dtype=np.float64)
    for i, payload in enumerate(payloads):
        t0 = clock()
        pcm = decode_mulaw(payload)
        t1 = clock()
        push(pcm)
        t2 = clock()
        up.process(pop())
        t3 = clock()
        path[i] = (t1 - t0) + (t3 - t2)
        pushes[i] = t2 - t1
    path = path[WARMUP:] / 1000.0
    pushes = pushes[WARMUP:] / 1000.0
    return (
        (float(np.median(path)), float(np.percentile(path, 99))),
        (float(np.median(pushes)), float(np.percentile(pushes, 99))),
    )


def _alias_rejection(
    resample: Callable[[NDArray[np.int16]], NDArray[np.int16]], rate: int
) -> float:
    """dB between the output of a 1 kHz and a 5 kHz tone (same level), 20 ms chunks."""
    frame = rate // 50

    def level(freq: float) -> float:
        t = np.arange(rate // 2) / rate
        x = np.rint(16384 * np.sin(2 * np.pi * freq * t)).astype(np.int16)
        y = np.concatenate([resample(x[i : i + frame]) for i in range(0, len(x), frame)])
        y = y[160:].astype(np.float64)  # drop the first 20 ms (filter warm-up)
        return float(np.sqrt(np.mean(y * y)))

    alias = max(level(5000), 1e-9)
    return float(20 * np.log10(level(1000) / alias))


def _capture(down: Resampler, frame: NDArray[np.int16]) -> NDArray[np.uint8]:
    return encode_mulaw(down.process(frame))


def _linear(from_rate: int, to_rate: int, frame: NDArray[np.int16]) -> NDArray[np.int16]:
    return resample_linear(frame, from_rate, to_rate)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=3000, help="timed frames per case")
    args = parser.parse_args()
    n = max(args.frames, 2000) + WARMUP
    rng = np.random.default_rng(2024)
    push, pop, buffer_stats, buffer_name = _jitter_buffer()
    rows: list[tuple[str, float, float, str]] = []
    extra: list[str] = []
    payloads = [encode_mulaw(f).tobytes() for f in _frames(n, 160, rng)]
    frames_8k = _frames(n, 160, rng)

    for rate in (48000, 44100):
        device_frames = _frames(n, rate // 50, rng)
        khz = f"{rate / 1000:g}k"

        down = Resampler(rate, 8000)
        med, p99 = _time(down.process, device_frames)
        rows.append((f"resample {khz}->8k", med, p99, "down"))
        down.reset()
        med, p99 = _time(functools.partial(_capture, down), device_frames)
        rows.append((f"capture {khz}: resample + encode_mulaw", med, p99, "capture"))

        up = Resampler(8000, rate)
        med, p99 = _time(up.process, frames_8k)
        rows.append((f"resample 8k->{khz}", med, p99, "up"))
        up.reset()
        for payload in payloads[:3]:  # prefill: every timed pop returns a received frame
            push(decode_mulaw(payload))
        (med, p99), (push_med, _push_p99) = _time_playback(payloads, push, pop, up)
        rows.append((f"playback {khz}: decode + buffer pop + resample", med, p99, "playback"))
        extra.append(f"{khz}: buffer push (engine side, not in the path): {push_med:.1f} µs median")

        med, p99 = _time(functools.partial(_linear, rate, 8000), device_frames)
        rows.append((f"resample_linear {khz}->8k (seed)", med, p99, "down"))
        med, p99 = _time(functools.partial(_linear, 8000, rate), frames_8k)
        rows.append((f"resample_linear 8k->{khz} (seed)", med, p99, "up"))

    print(f"per 20 ms frame, {n - WARMUP} timed fresh frames each; buffer: {buffer_name}")
    header = (
        f"{'case':47} {'median µs':>10} {'p99 µs':>8} {'target':>7} {'baseline':>9} "
        f"{'med/base':>9}  ok"
    )
    print(header)
    print("-" * len(header))
    for label, med, p99, kind in rows:
        base = BASELINE_US[kind]
        ok = "yes" if med <= TARGET_US else "NO"
        print(
            f"{label:47} {med:10.1f} {p99:8.1f} {TARGET_US:7.0f} {base:9.0f} "
            f"{med / base:8.2f}x  {ok}"
        )

    for line in extra:
        print(line)
    print(f"buffer after the run: {buffer_stats()}")
    print()
    print("5 kHz tone at -6 dBFS to 8 kHz (folds onto 3 kHz): rejection vs a 1 kHz tone")
    print(f"{'rate':>8} {'resample_linear':>16} {'Resampler':>10} {'required':>9} {'note':>6}")
    for rate in (48000, 44100):
        lin = _alias_rejection(functools.partial(_linear, rate, 8000), rate)
        rs = Resampler(rate, 8000)
        poly = _alias_rejection(rs.process, rate)
        print(f"{rate:>8} {lin:13.1f} dB {poly:7.1f} dB {60:6d} dB {77:3d} dB")
    for rate in (48000, 44100):
        rs = Resampler(rate, 8000)
        print(
            f"{rate} <-> 8000: delay {rs.delay_seconds * 1e3:.3f} ms down, "
            f"{Resampler(8000, rate).delay_seconds * 1e3:.3f} ms up, "
            f"filter {rs.filter_taps} taps at {rs.ratio[0] * rate} Hz"
        )


if __name__ == "__main__":
    main()
